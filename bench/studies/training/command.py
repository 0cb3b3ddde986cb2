"""`python -m bench train`: does a deeper plain network train worse, and a deeper residual one better (He et al.
2015, section 4.2), when trained by the backends' own training steps on real data?

Each engine trains every network (plain and residual CIFAR nets of each depth) for every seed in a worker process
of its own (bench/studies/training/worker.py, started through the task entry bench/execute/tasks.py); the report
(report.py) puts the curves, the time to stated accuracies, the engines' agreement and a final table beside
the paper's figures.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.backends.recipe import describe
from bench.store.atomic import write_json

ENGINES = ("torch", "keras-tensorflow", "keras-jax")
KINDS = ("plain", "resnet")
DEFAULT_EPOCHS = {"digits": 3, "cifar10": 30}
DEFAULT_TARGETS = {"train": (0.90, 0.95), "held": (0.90, 0.95)}


@dataclass(frozen=True)
class TrainRequest:
    engines: tuple[str, ...] = ("torch", "keras-tensorflow")
    depths: tuple[int, ...] = (20, 56)
    kinds: tuple[str, ...] = KINDS
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = DEFAULT_EPOCHS["digits"]
    batch_size: int = 16
    cifar10: str | None = None
    held_out: int = 500  # digits only: the held-out images of the fixed split
    train_images: int | None = None  # only the first this many training images of the split (None: all)
    eval_train: int = 500  # training images whose error is measured after each epoch
    train_targets: tuple[float, ...] = DEFAULT_TARGETS["train"]
    held_targets: tuple[float, ...] = DEFAULT_TARGETS["held"]
    synthetic_windows: int = 6  # the harness's timed windows per network (0: no synthetic measurement)
    synthetic_window_s: float = 0.3
    float64_reference: bool = False  # PyTorch also trains the first seed in float64: float32 rounding's own effect
    threads: int = 1  # per engine; 0: all cores
    parallel: bool = True  # the engines' workers side by side (a CPU with a core per engine), else in turn
    device: str = "cpu"
    timeout_s: float = 7200.0  # per engine

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(f"{kind}{depth}_cifar" for depth in self.depths for kind in self.kinds)

    @property
    def dataset(self) -> str:
        return "cifar10" if self.cifar10 else "digits"

    def to_dict(self) -> dict:
        return {**asdict(self), "models": list(self.models), "dataset": self.dataset, "recipe": describe()}


def run_study(request: TrainRequest, out: Path, say=print) -> Path:
    """Train in every engine of `request` into `out` (side by side when `request.parallel`, else one after
    another); returns the report's path."""
    from bench.execute import tasks
    from bench.store.records import host_env
    from bench.studies.training.report import write_training_report

    out.mkdir(parents=True, exist_ok=True)
    started, load_start, env = time.monotonic(), os.getloadavg()[0], host_env()  # the commit that runs
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        groups = [request.engines] if request.parallel else [(engine,) for engine in request.engines]
        for group in groups:
            say(f"training {len(request.models)} networks x {len(request.seeds)} seeds for {request.epochs} epochs "
                f"in {', '.join(group)}{' side by side' if len(group) > 1 else ''} ...")  # fmt: skip
            running = [
                tasks.start(engine, "train", request.to_dict(), out / f"worker-{engine}.log", Path(scratch))
                for engine in group
            ]
            deadline = time.monotonic() + request.timeout_s
            for each in running:
                result = tasks.finish(each, deadline, request.timeout_s, empty={"runs": []})
                if "error" in result:
                    say(f"  {each.engine}: {result['error']}")
                results.append(result)
    data = {"request": request.to_dict(), "env": env, "wall_s": time.monotonic() - started,
            "load_average": {"start": load_start, "end": os.getloadavg()[0]}, "results": results}  # fmt: skip
    write_json(out / "training.json", data, indent=1)  # whole or not at all: the study's only copy
    return write_training_report(data, out)


# --- the command line ----------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--frameworks", default="torch,keras-tensorflow",
                        help="comma list of engines: torch, keras-tensorflow, keras-jax (default torch,keras-tensorflow)")  # fmt: skip
    parser.add_argument("--depths", default="20,56", help="comma list of CIFAR depths 6n+2 (default 20,56; 110 too)")
    parser.add_argument("--kinds", default="plain,resnet", help="plain and/or resnet (default both)")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds, at least 2 (default 0,1,2)")
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default {DEFAULT_EPOCHS['digits']} on digits, "
                        f"{DEFAULT_EPOCHS['cifar10']} on CIFAR-10)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--cifar10", metavar="PATH", help="train on CIFAR-10 from cifar-10-python.tar.gz "
                        "(default: scikit-learn's digits)")  # fmt: skip
    parser.add_argument("--train-images", type=int, help="train on only the first N training images (default all)")
    parser.add_argument(
        "--eval-train",
        type=int,
        default=500,
        help="training images whose error is measured after each epoch (default 500)",
    )
    parser.add_argument("--train-targets", default="0.90,0.95", help="training accuracies to time (default 0.90,0.95)")
    parser.add_argument("--held-targets", default="0.90,0.95", help="held-out accuracies to time (default 0.90,0.95)")
    parser.add_argument(
        "--synthetic-windows",
        type=int,
        default=6,
        help="the harness's timed windows per network on synthetic inputs, 0 or 6-100 (default 6)",
    )
    parser.add_argument("--float64-reference", action="store_true", help="PyTorch also trains the first seed in "
                        "float64: how far float32 rounding alone moves a run, beside the engines' differences")  # fmt: skip
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads per engine, 0 for all cores (default: 1 on a CPU "
        "with a core per engine, whose workers then train side by side; else all cores, in turn)",
    )
    parser.add_argument("--in-turn", action="store_true", help="one engine after another, never side by side")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed per engine (default 7200)")
    parser.add_argument("--out", help="the folder to write (default: results/training/TIME-DATA)")


def _numbers(text: str, kind, what: str) -> tuple:
    try:
        values = tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values:
        raise ValueError(f"{what} takes a comma list of numbers, got {text!r}")
    return tuple(dict.fromkeys(values))


def request_from_args(args) -> TrainRequest:
    """The study's request, checked; ValueError names what is wrong and the valid choices."""
    from implementations.frameworks import canonical_framework
    from implementations.specs import cifar_spec

    engines = []
    for item in args.frameworks.split(","):
        engine = canonical_framework(item.strip())
        if engine not in ENGINES:
            raise ValueError(f"{engine} cannot train here; valid engines: {', '.join(ENGINES)}")
        engines.append(engine)
    depths = _numbers(args.depths, int, "--depths")
    for depth in depths:
        try:
            cifar_spec(depth)
        except ValueError as error:
            raise ValueError(f"--depths: {error}") from None
    kinds = tuple(dict.fromkeys(k.strip() for k in args.kinds.split(",") if k.strip()))
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"--kinds takes plain and/or resnet, got {args.kinds!r}")
    seeds = _numbers(args.seeds, int, "--seeds")
    if len(seeds) < 2 or min(seeds) < 0:
        raise ValueError(f"--seeds needs at least 2 non-negative seeds (a spread across seeds), got {args.seeds!r}")
    dataset = "cifar10" if args.cifar10 else "digits"
    epochs = DEFAULT_EPOCHS[dataset] if args.epochs is None else args.epochs
    if not 1 <= epochs <= 1000:
        raise ValueError(f"--epochs must be 1-1000, got {epochs}")
    if not 2 <= args.batch_size <= 4096:
        raise ValueError(f"--batch-size must be 2-4096 (BatchNorm needs 2), got {args.batch_size}")
    if args.train_images is not None and args.train_images < args.batch_size:
        raise ValueError(f"--train-images must be at least the batch size ({args.batch_size}), got {args.train_images}")
    if args.eval_train < 1:
        raise ValueError(f"--eval-train must be positive, got {args.eval_train}")
    targets = {}
    for name in ("train_targets", "held_targets"):
        values = _numbers(getattr(args, name), float, "--" + name.replace("_", "-"))
        if any(not 0 < v < 1 for v in values):
            raise ValueError(f"--{name.replace('_', '-')} are accuracies between 0 and 1, got {getattr(args, name)!r}")
        targets[name] = tuple(sorted(values))
    if args.synthetic_windows != 0 and not 6 <= args.synthetic_windows <= 100:
        raise ValueError(f"--synthetic-windows must be 0 or 6-100, got {args.synthetic_windows}")
    if args.device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {args.device!r}")
    if (args.threads is not None and args.threads < 0) or args.timeout <= 0:
        raise ValueError("--threads must be 0 or more and --timeout positive")
    cores = os.cpu_count() or 1
    parallel = args.device == "cpu" and not args.in_turn and len(engines) > 1 and len(set(engines)) <= cores
    parallel = parallel and (args.threads is None or 0 < args.threads * len(set(engines)) <= cores)
    threads = args.threads if args.threads is not None else (1 if parallel else 0)
    if args.cifar10 and not Path(args.cifar10).is_file():
        raise ValueError(f"--cifar10: {args.cifar10} is not a file (give the path of cifar-10-python.tar.gz)")
    return TrainRequest(
        engines=tuple(dict.fromkeys(engines)), depths=depths, kinds=kinds, seeds=seeds, epochs=epochs,
        batch_size=args.batch_size, cifar10=str(Path(args.cifar10).resolve()) if args.cifar10 else None,
        train_images=args.train_images, eval_train=args.eval_train, synthetic_windows=args.synthetic_windows, threads=threads, parallel=parallel,
        float64_reference=args.float64_reference,
        device=args.device, timeout_s=args.timeout, **targets,
    )  # fmt: skip


def command(args, new_folder) -> int:
    """The `train` subcommand; `new_folder(label)` gives the output folder (the CLI's rule for studies)."""
    from bench.config import UsageError

    try:
        request = request_from_args(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = new_folder(request.dataset)
    path = run_study(request, out, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(path.read_text())
    print(f"training: {path}")
    return 0
