"""Command line: `python -m bench models | run | report | compare | profile | gradient-flow | train`. Bad input exits 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .config import (
    DEVICES,
    LAYOUTS,
    MAX_BATCH_SIZE,
    MAX_IMAGE_SIZE,
    MODES,
    OPTIONS,
    PRECISIONS,
    PRESETS,
    TORCH_COMPILE_MODES,
    Plan,
    UsageError,
    build_plan,
    check_output_dir,
    default_preset_name,
    load_preset,
)

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "runs"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors exit 2 too, with our wording
        raise UsageError(message)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list every model with parameters and GFLOPs, or one model by stage")
    models.add_argument("name", nargs="?", help="one model: its parameters, MACs and activations per stage")
    models.add_argument("--image-size", type=int, default=None, help="input side in px (default 224; CIFAR family 32)")
    models.add_argument("--json", action="store_true", help="print JSON records instead of a table")

    run = commands.add_parser("run", help="measure a sweep (default: the preset for the detected hardware)")
    run.add_argument("--preset", help=f"named sweep ({', '.join(PRESETS)}) or a .toml file (default: by hardware)")
    run.add_argument("--profile", help=argparse.SUPPRESS)  # the old name of --preset, still accepted
    run.add_argument(
        "--frameworks", help="comma list of engines: torch, keras-tensorflow, keras-jax (default: the preset's)"
    )
    run.add_argument("--models", help="comma list of names or globs such as 'resnet*', 'vgg1?_bn'")
    run.add_argument("--batch-sizes", help=f"comma list of integers from 1 to {MAX_BATCH_SIZE}")
    run.add_argument("--modes", help=f"comma list of {', '.join(MODES)} (default: both)")
    run.add_argument("--precision", dest="precisions", help=f"comma list of {', '.join(PRECISIONS)} (default fp32)")
    run.add_argument("--compile", help="off (PyTorch eager, TF tf.function), on (torch.compile, XLA); default off")
    run.add_argument("--torch-compile-mode", help=f"{', '.join(TORCH_COMPILE_MODES)} (default 'default')")
    run.add_argument("--image-size", help=f"input side in px, up to {MAX_IMAGE_SIZE} (default: the preset's)")
    run.add_argument(
        "--layout",
        dest="layouts",
        help=f"PyTorch memory format: {', '.join(LAYOUTS)} (default auto: both timed after warm-up, the faster "
        "measured; the Keras engines are always NHWC)",
    )
    run.add_argument("--device", help=f"{', '.join(DEVICES)} (auto: cuda if an NVIDIA GPU is found; default auto)")
    run.add_argument("--threads", help="CPU threads for each framework, at most the cores (default 0: all cores)")
    run.add_argument("--warmup-steps", help="untimed steps after the first, 0-10000 (default: the preset's, 3 if none)")
    run.add_argument(
        "--windows", help="timed windows per engine, 6-1000 (six: the fewest with a 95%% interval; default 6)"
    )
    run.add_argument("--min-window-s", help="minimum seconds per timed window, 0-3600 (default: the preset's)")
    run.add_argument("--max-window-steps", help="cap on steps per window (default 1000)")
    run.add_argument("--timeout", dest="timeout_s", help="seconds allowed per configuration, 1-86400 (default 600)")
    run.add_argument("--seed", help="seed of the synthetic inputs and the weights (default 0)")
    run.add_argument(
        "--no-tf32",
        dest="tf32",
        action="store_false",
        default=None,
        help="disable TF32 in both frameworks (default: TF32 on in both)",
    )
    run.add_argument(
        "--max-batch",
        action="store_true",
        default=None,
        help="also find the largest batch that fits per model/mode/precision",
    )
    run.add_argument("--max-batch-limit", help="largest batch tried by --max-batch (default 4096)")
    run.add_argument("--out", help="run directory (default: a new folder under results/runs/)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run: measure only what is missing")
    run.add_argument(
        "--retry-errors",
        action="store_true",
        help="with --resume: measure error and timeout records again (the old records stay in results.jsonl)",
    )
    run.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    run.add_argument("--shard", help="I/N: measure only shard I of N (every N-th cell); merge with `bench merge`")

    report = commands.add_parser("report", help="render report.md, summary.csv and plots from a run")
    report.add_argument("source", help="a run directory, its results.jsonl, or a pytest-benchmark JSON file")
    report.add_argument("--out", help="where to write (default: the run directory, or beside the JSON file)")

    compare = commands.add_parser("compare", help="relative changes between two runs")
    compare.add_argument("run_a", help="baseline run (directory, results.jsonl or pytest-benchmark JSON)")
    compare.add_argument("run_b", help="candidate run")
    compare.add_argument(
        "--fail-on-regression",
        type=float,
        metavar="PCT",
        help="exit 1 if any throughput falls by more than PCT percent beyond the spread",
    )
    compare.add_argument("--out", help="write the comparison as Markdown to this file (default: RUN_B/compare.md)")

    scale = commands.add_parser("scale", help="data-parallel scaling: img/s and efficiency at 1..N replicas")
    scale.add_argument("--models", default="resnet20_cifar", help="comma list of models (default resnet20_cifar)")
    scale.add_argument("--frameworks", default="torch,keras-tensorflow", help="torch and/or keras-tensorflow")
    scale.add_argument("--replicas", default="1,2", help="comma list of replica counts; 1 is added (the baseline)")
    scale.add_argument("--nodes", type=int, default=1, help="workers (TensorFlow multi-worker on localhost ports)")
    scale.add_argument("--batch-size", type=int, default=8, help="batch per replica (default 8)")
    scale.add_argument("--image-size", type=int, default=None, help="input side in px (default: the model's)")
    scale.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    scale.add_argument("--windows", type=int, default=6, help="timed windows, 6-100 (default 6)")
    scale.add_argument("--min-window-s", type=float, default=0.2, help="seconds per window (default 0.2)")
    scale.add_argument("--timeout", type=float, default=600, help="seconds before a job is stopped (default 600)")
    scale.add_argument("--kill-rank", type=int, help=argparse.SUPPRESS)  # fault injection for the tests
    scale.add_argument("--hang-rank", type=int, help=argparse.SUPPRESS)
    scale.add_argument("--out", help="the folder to write (default: results/scaling/TIME)")

    merge = commands.add_parser("merge", help="merge the run folders of a sweep's shards into one run")
    merge.add_argument("out", help="the new run folder to write")
    merge.add_argument("shards", nargs="+", help="the shards' run folders (`run --shard I/N`)")
    merge.add_argument("--force", action="store_true", help="merge shards made on different hardware (reported)")

    profile = commands.add_parser("profile", help="where one model's step time goes: stages, step split, operators")
    profile.add_argument("model", help="a model name (see `python -m bench models`)")
    profile.add_argument("--frameworks", default="torch,keras-tensorflow", help="comma list of engines to profile")
    profile.add_argument("--batch-size", type=int, default=None, help="default: 8 on a CPU, 64 on a GPU")
    profile.add_argument("--mode", default="train", help=f"one of {', '.join(MODES)} (default train)")
    profile.add_argument("--image-size", type=int, default=None, help="input side in px (default: the model's)")
    profile.add_argument("--precision", default="fp32", help="fp32 or bf16 (default fp32)")
    profile.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (default auto)")
    profile.add_argument("--stages", action="store_true", help="per-stage times and the step split")
    profile.add_argument("--ops", action="store_true", help="operator categories from the frameworks' profilers")
    profile.add_argument("--trace", action="store_true", help="save each framework's trace")
    profile.add_argument("--windows", type=int, default=7, help="timed windows per function, 6-100 (default 7)")
    profile.add_argument("--min-window-s", type=float, default=0.1, help="seconds per window, 0-60 (default 0.1)")
    profile.add_argument("--out", help="the folder to write (default: results/profiles/TIME-MODEL-MODE)")

    flow = commands.add_parser("gradient-flow", help="gradient norm per layer: plain vs residual, with and without BN")
    flow.add_argument("--depths", default="20,56,110", help="comma list of CIFAR depths 6n+2 (default 20,56,110)")
    flow.add_argument("--frameworks", default="torch,keras-tensorflow",
                      help="comma list of engines: torch, keras-tensorflow, keras-jax (opt-in: slow on a CPU)")  # fmt: skip
    flow.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    flow.add_argument("--steps", type=int, default=5, help="SGD steps after initialisation, 0-100 (default 5)")
    flow.add_argument("--out", help="the folder to write (default: results/gradient-flow/TIME)")

    from .studies.train import add_arguments as add_train_arguments

    add_train_arguments(commands.add_parser("train", help="train plain and residual nets of each depth on real data"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = make_parser().parse_args(argv)
        commands = {"models": cmd_models, "run": cmd_run, "report": cmd_report, "compare": cmd_compare,
                    "profile": cmd_profile, "gradient-flow": cmd_gradient_flow, "merge": cmd_merge,
                    "scale": cmd_scale, "train": cmd_train}  # fmt: skip
        return commands[args.command](args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_models(args) -> int:
    from tabulate import tabulate

    from implementations import get_spec, list_models
    from implementations.lowering import flops_per_image, params_count
    from implementations.specs import ModelNotFoundError, check_image_size

    if args.name is not None:
        try:
            spec = get_spec(args.name)
        except ModelNotFoundError as error:
            raise UsageError(str(error)) from None
        return _model_stages(spec, args)
    rows = []
    for name in list_models():
        spec = get_spec(name)
        size = spec.default_image_size if args.image_size is None or spec.family.endswith("_cifar") else args.image_size
        try:
            check_image_size(spec, size)
        except ValueError as error:
            raise UsageError(str(error)) from None
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "depth": spec.depth,
                "params": params_count(spec),
                "image_size": size,
                "flops_per_image": flops_per_image(spec, size),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [r["name"], r["family"], r["depth"], f"{r['params']:,}", r["image_size"], f"{r['flops_per_image'] / 1e9:.3g}"]
        for r in rows
    ]
    print(
        tabulate(
            table,
            headers=["model", "family", "depth", "parameters", "px", "GFLOPs/img"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    return 0


def _model_stages(spec, args) -> int:
    """One model's lowered layers summed per stage: where its parameters, MACs and activations are."""
    from dataclasses import asdict

    from tabulate import tabulate

    from implementations.lowering import lower, stage_costs

    size = spec.default_image_size if args.image_size is None else args.image_size
    try:
        layers = lower(spec, size)
    except ValueError as error:
        raise UsageError(str(error)) from None
    stages = stage_costs(layers)
    if args.json:
        print(json.dumps({"model": spec.name, "image_size": size, "stages": [asdict(s) for s in stages]}, indent=2))
        return 0
    params, macs = sum(s.params for s in stages), sum(s.macs for s in stages)
    rows = [
        [
            s.stage,
            s.layers,
            f"{s.params:,}",
            f"{s.params / params:.1%}",
            f"{2 * s.macs / 1e9:.4g}",
            f"{s.macs / macs:.1%}",
            f"{s.activations * 4 / 2**20:.3g}",
        ]  # fmt: skip
        for s in stages
    ]
    rows.append(["total", len(layers), f"{params:,}", "100%", f"{2 * macs / 1e9:.4g}", "100%",
                 f"{sum(s.activations for s in stages) * 4 / 2**20:.3g}"])  # fmt: skip
    print(f"{spec.name} at {size} px, per image (activations: every layer's output in float32)")
    print(
        tabulate(
            rows,
            headers=["stage", "layers", "parameters", "share", "GFLOPs", "share", "activations MiB"],
            tablefmt="github",
            disable_numparse=True,
        )
    )
    return 0


# `run` options that shape the plan: refused with --resume, which continues the plan in plan.json.
PLAN_ARGUMENTS = (*OPTIONS, "preset", "profile", "out", "shard")


def _given(args) -> dict:
    """The plan options given on the command line (argparse leaves the others None)."""
    return {name: getattr(args, name) for name in PLAN_ARGUMENTS if getattr(args, name, None) is not None}


def _options_from_args(args) -> tuple[str, dict]:
    if args.profile is not None:
        if args.preset is not None:
            raise UsageError("--profile is the old name of --preset: give one of them")
        print("note: --profile is now --preset; --profile will be removed in a later release", file=sys.stderr)
    preset_name, options = load_preset(args.preset or args.profile or default_preset_name())
    options = dict(options)
    for name, value in _given(args).items():
        if name in OPTIONS:
            options[name] = value if isinstance(value, bool) else OPTIONS[name].parse(value)
    for key in ("frameworks", "models", "batch_sizes", "modes", "precisions", "image_size"):
        if key not in options:
            raise UsageError(f"the preset {preset_name!r} does not set {key} and the command line gave none")
    return preset_name, options


def _load_plan(store) -> Plan:
    path = store.path / "plan.json"
    if not path.exists():
        raise UsageError(f"{store.path} is not a run directory (no plan.json)")
    return Plan.read(path)


def cmd_run(args) -> int:
    from .records import RunStore, host_env
    from .report import write_report
    from .runner import Interrupted, Runner, RunWriteError

    if args.resume:
        refused = sorted(_given(args))
        if refused:
            flags = ", ".join("--" + name.replace("_", "-") for name in refused)
            raise UsageError(
                f"--resume continues the run as planned in its plan.json; it cannot change {flags}. "
                "Start a new run for another plan (--retry-errors and --no-report may be given with --resume)"
            )
        store = RunStore(Path(args.resume))
        plan = _load_plan(store)
    else:
        if args.retry_errors:
            raise UsageError("--retry-errors applies to --resume RUN_DIR only")
        preset_name, options = _options_from_args(args)
        plan = build_plan(options, preset=preset_name)
        if args.shard is not None:
            from .scaleout.shards import parse_shard, shard_plan

            plan = shard_plan(plan, *parse_shard(args.shard))
            if not plan.configs:
                raise UsageError(f"shard {args.shard} of this plan has no configurations (fewer cells than shards)")
            preset_name = f"{preset_name}-shard{plan.shard['index']}of{plan.shard['count']}"
        if args.out:
            path = Path(args.out)
            check_output_dir(path)
            path.mkdir(parents=True, exist_ok=True)
            store = RunStore(path)
        else:
            check_output_dir(RESULTS_DIR)
            store = RunStore.create(RESULTS_DIR, f"{plan.configs[0].device}-{preset_name}")
        store.write_json("plan.json", plan.to_dict())
    env = host_env()
    if not (store.path / "env.json").exists():
        store.write_json("env.json", env)
    _print_plan(plan, store)
    runner = Runner(plan, store, env)
    # SIGTERM and SIGHUP stop the run as Ctrl-C does; a signal already ignored (nohup) stays ignored.
    previous = {
        sig: signal.signal(sig, _raise_interrupted)
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        runner.run(retry_errors=args.retry_errors)
        if plan.max_batch:
            runner.find_max_batches()
    except (KeyboardInterrupt, Interrupted) as stop:
        runner.close_workers(kill=True)
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        kept = len(store.records())
        print(
            f"\ninterrupted by {signal.Signals(signum).name}: {kept} records kept in {store.path}; "
            f"continue with: python -m bench run --resume {store.path}",
            file=sys.stderr,
        )
        return 128 + signum
    except RunWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not args.no_report:
        report = write_report(store.path)
        print(report.console_summary)
        print(f"report: {store.path / 'report.md'}")
    return 0


def _raise_interrupted(signum, frame):
    from .runner import Interrupted

    raise Interrupted(signum)


def _estimate_line(plan: Plan, store) -> str:
    """The run's expected duration from earlier records on this device (configurations already recorded in
    a resumed run and engines not installed cost nothing)."""
    from dataclasses import replace

    from implementations import is_installed

    from .config import detect_gpu
    from .estimate import estimate, load_history, this_device_key

    done = {r.config for r in store.records()}
    todo = tuple(c for c in plan.configs if c not in done and is_installed(c.framework))
    if not todo:
        return "estimate: nothing left to measure"
    device = todo[0].device
    key = this_device_key(device, detect_gpu() if device == "cuda" else None)
    return estimate(replace(plan, configs=todo), load_history(RESULTS_DIR), key).line()


def _print_plan(plan: Plan, store) -> None:
    from implementations import is_installed

    configs = plan.configs
    frameworks = list(dict.fromkeys(c.framework for c in configs))
    lines = [
        f"run directory: {store.path}",
        f"preset: {plan.preset}; {len(configs)} configurations on {configs[0].device if configs else '-'}",
        f"models: {', '.join(dict.fromkeys(c.model for c in configs))}",
        f"batch sizes: {', '.join(str(b) for b in sorted({c.batch_size for c in configs}))}; "
        f"image size {configs[0].image_size} px; modes {', '.join(dict.fromkeys(c.mode for c in configs))}; "
        f"precision {', '.join(dict.fromkeys(c.precision for c in configs))}",
        f"layout: PyTorch {', '.join(sorted({c.layout for c in configs if c.framework == 'torch'})) or '-'} "
        "(auto: both memory formats timed after warm-up, the faster measured); Keras engines NHWC",
        f"threads per framework: {plan.settings.resolved_threads()}; windows {plan.settings.windows} of at least "
        f"{plan.settings.min_window_s:g} s; warm-up {plan.settings.warmup_steps} steps; timeout {plan.settings.timeout_s:g} s",
    ]
    for framework in frameworks:
        state = (
            "installed" if is_installed(framework) else "NOT INSTALLED: its configurations will be recorded as skipped"
        )
        lines.append(f"{framework}: {state}")
    lines += [f"note: {note}" for note in plan.notes]
    lines.append(_estimate_line(plan, store))
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_report(args) -> int:
    from .report import write_report

    report = write_report(Path(args.source), Path(args.out) if args.out else None)
    print(report.console_summary)
    print(f"report: {report.path}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_runs, gate_failures, ratio_consistency, render_comparison, render_consistency
    from .report import load_source

    if args.fail_on_regression is not None and not 0 <= args.fail_on_regression < float("inf"):
        raise UsageError(f"--fail-on-regression must be a non-negative percentage, got {args.fail_on_regression}")
    baseline = load_source(Path(args.run_a)).records
    candidate = load_source(Path(args.run_b)).records
    rows = compare_runs(baseline, candidate)
    text = render_comparison(rows, args.run_a, args.run_b)
    text += "\n\n" + render_consistency(ratio_consistency(baseline, candidate))
    print(text)
    out = (
        Path(args.out)
        if args.out
        else (Path(args.run_b) if Path(args.run_b).is_dir() else Path(args.run_b).parent) / "compare.md"
    )
    out.write_text(text + "\n")
    if args.fail_on_regression is not None:
        reasons = gate_failures(baseline, candidate, rows, args.fail_on_regression)
        if reasons:
            print("regression gate FAILED:\n- " + "\n- ".join(reasons), file=sys.stderr)
            return 1
        print(f"regression gate passed: {len(rows)} configuration(s) compared", file=sys.stderr)
    return 0


def _engines(text: str, supported: tuple[str, ...]) -> tuple[str, ...]:
    from implementations.frameworks import canonical_framework

    engines = []
    for item in text.split(","):
        try:
            engine = canonical_framework(item.strip())
        except ValueError as error:
            raise UsageError(str(error)) from None
        if engine not in supported:
            raise UsageError(f"{engine} cannot be profiled yet; valid engines here: {', '.join(supported)}")
        if engine not in engines:
            engines.append(engine)
    return tuple(engines)


def _new_folder(given: str | None, marker: str, what: str, kind: str, label: str) -> Path:
    """The folder a study writes: --out, refused if it already holds one (its `marker` file) or cannot be
    written; else a new time-stamped folder under results/KIND/."""
    from .records import RunStore

    if given is None:
        return RunStore.create(RESULTS_DIR.parent / kind, label).path
    out = Path(given)
    if (out / marker).exists():
        raise UsageError(f"{out} already holds {what}; give another --out")
    check_output_dir(out)
    return out


def cmd_profile(args) -> int:
    from implementations import get_spec
    from implementations.specs import ModelNotFoundError, check_image_size

    from .config.options import resolve_device
    from .profiling.run import PROFILED_ENGINES, ProfileRequest, profile

    try:
        spec = get_spec(args.model)
    except ModelNotFoundError as error:
        raise UsageError(str(error)) from None
    device = resolve_device(args.device)
    size = spec.default_image_size if args.image_size is None else args.image_size
    try:
        check_image_size(spec, size)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r}; valid modes: {', '.join(MODES)}")
    if args.precision not in ("fp32", "bf16"):
        raise UsageError(f"profile precision must be fp32 or bf16, got {args.precision!r}")
    batch = args.batch_size if args.batch_size is not None else (64 if device == "cuda" else 8)
    if not 1 <= batch <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be 1-{MAX_BATCH_SIZE}, got {batch}")
    if not 6 <= args.windows <= 100:
        raise UsageError(f"--windows must be 6-100 (an interval for each median needs six), got {args.windows}")
    if not 0 <= args.min_window_s <= 60:
        raise UsageError(f"--min-window-s must be 0-60, got {args.min_window_s}")
    everything = not (args.stages or args.ops or args.trace)
    request = ProfileRequest(
        model=spec.name, engines=_engines(args.frameworks, PROFILED_ENGINES), batch_size=batch, mode=args.mode,
        image_size=size, precision=args.precision, device=device, stages=True, ops=everything or args.ops,
        trace=everything or args.trace, windows=args.windows, min_window_s=args.min_window_s,
    )  # fmt: skip
    out = _new_folder(args.out, "profile.json", "a profile", "profiles", f"{spec.name}-{args.mode}-{size}px")
    path = profile(request, out, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(path.read_text())
    print(f"profile: {path}")
    return 0


def cmd_gradient_flow(args) -> int:
    from implementations.specs import cifar_spec

    from .profiling.run import GRADIENT_FLOW_ENGINES, GradientFlowRequest, gradient_flow, study_models

    try:
        depths = tuple(int(d) for d in args.depths.split(","))
        for depth in depths:
            cifar_spec(depth)
    except ValueError as error:
        raise UsageError(f"--depths: {error}") from None
    if not 1 <= args.batch_size <= 4096:
        raise UsageError(f"--batch-size must be 1-4096, got {args.batch_size}")
    if not 0 <= args.steps <= 100:
        raise UsageError(f"--steps must be 0-100, got {args.steps}")
    request = GradientFlowRequest(
        models=study_models(depths), engines=_engines(args.frameworks, GRADIENT_FLOW_ENGINES),
        batch_size=args.batch_size, steps=args.steps,
    )  # fmt: skip
    out = _new_folder(args.out, "gradient_flow.json", "a gradient-flow study", "gradient-flow", "cifar")
    path = gradient_flow(request, out, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(path.read_text())
    print(f"gradient flow: {path}")
    return 0


def cmd_train(args) -> int:
    from .studies.train import command

    return command(args, lambda label: _new_folder(args.out, "training.json", "a training study", "training", label))


def cmd_merge(args) -> int:
    from .report import write_report
    from .scaleout.shards import merge

    plan, records, warnings = merge(Path(args.out), [Path(p) for p in args.shards], force=args.force)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"merged {len(args.shards)} shard(s): {len(records)} records of {len(plan.configs)} configurations "
          f"into {args.out}", file=sys.stderr)  # fmt: skip
    report = write_report(Path(args.out))
    print(report.console_summary)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_scale(args) -> int:
    from implementations import get_spec
    from implementations.specs import ModelNotFoundError, check_image_size

    from .records import host_env
    from .scaleout.scaling import STRATEGIES, ScaleRequest, run_scaling
    from .scaleout.scaling_report import write_scaling_report

    try:
        models = tuple(get_spec(name.strip()).name for name in args.models.split(","))
    except ModelNotFoundError as error:
        raise UsageError(str(error)) from None
    try:
        replicas = tuple(sorted({1, *(int(n) for n in args.replicas.split(","))}))
    except ValueError:
        raise UsageError(f"--replicas takes a comma list of positive integers, got {args.replicas!r}") from None
    if replicas[0] < 1:
        raise UsageError(f"--replicas must be positive, got {args.replicas!r}")
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.nodes < 1 or (args.nodes > 1 and any(n not in (1, args.nodes) for n in replicas)):
        raise UsageError("--nodes N runs one replica per worker: give --replicas N (1 is the baseline)")
    if not 6 <= args.windows <= 100:
        raise UsageError(f"--windows must be 6-100, got {args.windows}")
    size = args.image_size
    for name in models:
        try:
            check_image_size(get_spec(name), size or get_spec(name).default_image_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    request = ScaleRequest(
        engines=_engines(args.frameworks, tuple(STRATEGIES)), models=models, replicas=replicas, nodes=args.nodes,
        batch_per_replica=args.batch_size, image_size=size or get_spec(models[0]).default_image_size,
        device=args.device, windows=args.windows, min_window_s=args.min_window_s, timeout_s=args.timeout,
        kill_rank=args.kill_rank, hang_rank=args.hang_rank,
    )  # fmt: skip
    out = _new_folder(args.out, "scaling.jsonl", "a scaling run", "scaling", args.device)
    out.mkdir(parents=True, exist_ok=True)
    env = host_env()
    (out / "env.json").write_text(json.dumps(env, indent=2))
    run_scaling(request, out, say=lambda text: print(text, file=sys.stderr, flush=True))
    path = write_scaling_report(out, env)
    print(path.read_text())
    print(f"scaling: {path}")
    return 0
