"""Command line: `python -m bench models | run | report | compare | profile | gradient-flow | train`. Bad input exits 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.config import (
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
from bench.config.options import MAX_CIFAR_DEPTH, check_command, require_cuda, span
from bench.store.atomic import WriteError

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "runs"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors exit 2 too, with our wording
        raise UsageError(message)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list every model with parameters and GFLOPs, or one model by stage")
    models.add_argument("name", nargs="?", help="one model: its parameters, MACs and activations per stage")
    models.add_argument("--image-size", help=f"input side in px, {span('models', 'image_size')} (default 224; CIFAR "
                        "family 32)")  # fmt: skip
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
    run.add_argument("--warmup-steps", help=f"untimed steps after the first, {span('run', 'warmup_steps')} (default: the "
                     "preset's, 3 if none)")  # fmt: skip
    run.add_argument(
        "--windows",
        help=f"timed windows per engine, {span('run', 'windows')} (six: the fewest with a 95%% interval; default 6)",
    )
    run.add_argument("--min-window-s", help=f"minimum seconds per timed window, {span('run', 'min_window_s')} (default: "
                     "the preset's)")  # fmt: skip
    run.add_argument("--max-window-steps", help=f"cap on steps per window, {span('run', 'max_window_steps')} (default "
                     "1000)")  # fmt: skip
    run.add_argument(
        "--timeout",
        dest="timeout_s",
        help=f"seconds allowed per configuration, {span('run', 'timeout_s')}: its preparation, timed windows and finish "
        "together, past which it is recorded as a timeout (default 600; a worker's start-up is allowed as long again)",
    )
    run.add_argument("--seed", help="seed of the synthetic inputs and the weights (default 0)")
    run.add_argument(
        "--no-tf32",
        dest="tf32",
        action="store_false",
        default=None,
        help="disable TF32 in both frameworks (default: TF32 on in both)",
    )
    run.add_argument(
        "--explain",
        type=_on_off,
        metavar="{on,off}",
        default=None,
        help="after each cell's windows, an untimed profiled pass gives each record its operator categories, which "
        "the findings use to say what makes a gap (default on; off skips it)",
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
    compare.add_argument(
        "--allow-other-hardware",
        action="store_true",
        help="let the gate judge runs whose CPU, cores, GPUs or framework versions differ (the output says which)",
    )
    compare.add_argument("--out", help="write the comparison as Markdown to this file (default: RUN_B/compare.md)")
    compare.add_argument("--html", action="store_true", help="also write the comparison as a page (compare.html)")

    index = commands.add_parser("index", help="write results/index.html: every committed run and study")
    index.add_argument("--root", default="results", help="the results folder (default results)")

    scale = commands.add_parser("scale", help="data-parallel scaling: img/s and efficiency at 1..N replicas")
    scale.add_argument("--models", default="resnet20_cifar", help="comma list of models (default resnet20_cifar)")
    scale.add_argument("--frameworks", default="torch,keras-tensorflow", help="torch and/or keras-tensorflow")
    scale.add_argument("--replicas", default="1,2", help="comma list of replica counts, at most the cores on a CPU "
                       "(the GPUs on cuda); 1 is added (the baseline)")  # fmt: skip
    scale.add_argument("--nodes", default="1", help="workers (TensorFlow multi-worker on localhost ports)")
    scale.add_argument(
        "--batch-size", default="8", help=f"batch per replica, {span('scale', 'batch_size')} (default 8)"
    )
    scale.add_argument("--image-size", help=f"input side in px, {span('scale', 'image_size')} (default: the model's)")
    scale.add_argument("--device", default="cpu", help=f"{span('scale', 'device')} (default cpu)")
    scale.add_argument("--windows", default="6", help=f"timed windows, {span('scale', 'windows')} (default 6)")
    scale.add_argument("--min-window-s", default="0.2",
                       help=f"seconds per window, {span('scale', 'min_window_s')} (default 0.2)")  # fmt: skip
    scale.add_argument("--timeout", dest="timeout_s", default="600",
                       help=f"seconds allowed per job (one engine, model and replica count), "
                       f"{span('scale', 'timeout_s')} (default 600)")  # fmt: skip
    scale.add_argument("--kill-rank", help=argparse.SUPPRESS)  # fault injection for the tests
    scale.add_argument("--hang-rank", help=argparse.SUPPRESS)
    scale.add_argument("--out", help="the folder to write (default: results/scaling/TIME)")

    merge = commands.add_parser("merge", help="merge the run folders of a sweep's shards into one run")
    merge.add_argument("out", help="the new run folder to write")
    merge.add_argument("shards", nargs="+", help="the shards' run folders (`run --shard I/N`)")
    merge.add_argument("--force", action="store_true", help="merge shards made on different hardware (reported)")

    profile = commands.add_parser("profile", help="where one model's step time goes: stages, step split, operators")
    profile.add_argument("model", help="a model name (see `python -m bench models`)")
    profile.add_argument("--frameworks", default="torch,keras-tensorflow", help="comma list of engines to profile")
    profile.add_argument("--batch-size", help=f"{span('profile', 'batch_size')} (default: 8 on a CPU, 64 on a GPU)")
    profile.add_argument("--mode", default="train", help=f"one of {span('profile', 'mode')} (default train)")
    profile.add_argument("--image-size", help=f"input side in px, {span('profile', 'image_size')} (default: the "
                         "model's)")  # fmt: skip
    profile.add_argument("--precision", default="fp32", help=f"{span('profile', 'precision')} (default fp32)")
    profile.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (default auto; cuda only "
                         "where an NVIDIA GPU is found)")  # fmt: skip
    profile.add_argument("--stages", action="store_true", help="per-stage times and the step split")
    profile.add_argument("--ops", action="store_true", help="operator categories from the frameworks' profilers")
    profile.add_argument("--trace", action="store_true", help="save each framework's trace")
    profile.add_argument("--windows", default="7",
                         help=f"timed windows per function, {span('profile', 'windows')} (default 7)")  # fmt: skip
    profile.add_argument("--min-window-s", default="0.1",
                         help=f"seconds per window, {span('profile', 'min_window_s')} (default 0.1)")  # fmt: skip
    profile.add_argument("--out", help="the folder to write (default: results/profiles/TIME-MODEL-MODE)")

    flow = commands.add_parser("gradient-flow", help="gradient norm per layer: plain vs residual, with and without BN")
    flow.add_argument("--depths", default="20,56,110", help="comma list of CIFAR depths 6n+2, at most "
                      f"{MAX_CIFAR_DEPTH} (default 20,56,110)")  # fmt: skip
    flow.add_argument("--frameworks", default="torch,keras-tensorflow",
                      help="comma list of engines: torch, keras-tensorflow, keras-jax (opt-in: slow on a CPU)")  # fmt: skip
    flow.add_argument("--batch-size", default="32",
                      help=f"images per step, {span('gradient-flow', 'batch_size')} (default 32)")  # fmt: skip
    flow.add_argument("--steps", default="5",
                      help=f"SGD steps after initialisation, {span('gradient-flow', 'steps')} (default 5)")  # fmt: skip
    flow.add_argument("--out", help="the folder to write (default: results/gradient-flow/TIME)")

    docs = commands.add_parser("docs", help="regenerate the figures README.md quotes from the committed results")
    docs.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each figure that is stale")
    docs.add_argument(
        "--root", help="the checkout whose README.md, docs/*.md and results/ are read (default: this one)"
    )

    from bench.studies.training.command import add_arguments as add_train_arguments

    add_train_arguments(commands.add_parser("train", help="train plain and residual nets of each depth on real data"))
    # Parsed by bench.commands.submit (its own options, then `--` and the sweep's `run` options): listed here.
    commands.add_parser(
        "submit", help="a sweep's shards as Slurm (or local) jobs, waited for and merged", add_help=False
    )
    return parser


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from on, off)")
    return text == "on"


def cmd_index(args) -> int:
    from bench.report.html import index_page
    from bench.store.atomic import write_text

    root = Path(args.root)
    if not (root / "runs").is_dir():
        raise UsageError(f"--root {root} holds no runs/ folder")
    path = write_text(root / "index.html", index_page(root))
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from bench.execute.launch import Interrupted, stop_signals
    from bench.store import folders

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["submit"]:  # its own parser, signals and locks (bench.commands.submit)
        from bench.commands.submit import main as submit

        return submit(argv[1:])
    held_before = folders.held_now()
    _STOP_NOTE.clear()
    try:
        # SIGTERM and SIGHUP stop any command as Ctrl-C does: its children ended, one line said, 128 + N.
        with stop_signals():
            args = make_parser().parse_args(argv)
            commands = {"models": cmd_models, "run": cmd_run, "report": cmd_report, "compare": cmd_compare,
                        "profile": cmd_profile, "gradient-flow": cmd_gradient_flow, "merge": cmd_merge,
                        "scale": cmd_scale, "docs": cmd_docs, "index": cmd_index,
                        "train": cmd_train}  # fmt: skip
            return commands[args.command](args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file that could not be written (WriteError) or read: a message, never a traceback
        print(f"error: {_os_message(error)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted) as stop:
        return interrupted(stop)
    finally:
        folders.release_all(keep=held_before)


_STOP_NOTE: list = []  # what an interruption of the running command leaves, said after the signal's name


def _on_stop(note) -> None:
    """Set what `interrupted` says the command leaves (a function, called when the signal comes)."""
    _STOP_NOTE[:] = [note]


def interrupted(stop: BaseException, note: str | None = None) -> int:
    """After Ctrl-C, SIGTERM or SIGHUP: end every child with its tree, say what is kept (`note`, else what
    the command set with _on_stop); 128 + the signal's number, as a shell reports a process it killed."""
    from bench.execute.launch import reap_all, signal_name, signals_ignored

    with signals_ignored():  # a second Ctrl-C during the clean-up is not a traceback
        reap_all()
        name, signum = signal_name(stop)
        if note is None:
            note = _STOP_NOTE[0]() if _STOP_NOTE else "nothing was written"
        print(f"\ninterrupted by {name}: {note}", file=sys.stderr, flush=True)
    return 128 + signum


def _os_message(error: OSError) -> str:
    if isinstance(error, WriteError) or not error.filename:
        return str(error)
    return f"{error.filename}: {error.strerror or error}"


def cmd_docs(args) -> int:
    from bench.commands.docs import ROOT, run_docs

    root = Path(args.root) if args.root else ROOT
    if not (root / "README.md").exists():
        raise UsageError(f"--root {root} holds no README.md")
    return run_docs(root, check=args.check)


def cmd_models(args) -> int:
    from bench.report.render import markdown_table
    from implementations import get_spec, list_models
    from implementations.lowering import flops_per_image, params_count

    o = check_command("models", vars(args))
    if args.name is not None:
        return _model_stages(get_spec(args.name), o["image_size"], args.json)
    rows = []
    for name in list_models():
        spec = get_spec(name)
        size = spec.default_image_size if o["image_size"] is None or spec.family.endswith("_cifar") else o["image_size"]
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
        markdown_table(
            table,
            ["model", "family", "depth", "parameters", "px", "GFLOPs/img"],
        )
    )
    return 0


def _model_stages(spec, size: int, as_json: bool) -> int:
    """One model's lowered layers summed per stage: where its parameters, MACs and activations are."""
    from dataclasses import asdict

    from bench.report.render import markdown_table
    from implementations.lowering import lower, stage_costs

    try:
        layers = lower(spec, size)
    except ValueError as error:
        raise UsageError(str(error)) from None
    stages = stage_costs(layers)
    if as_json:
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
        markdown_table(
            rows,
            ["stage", "layers", "parameters", "share", "GFLOPs", "share", "activations MiB"],
        )
    )
    return 0


# `run` options that shape the plan: refused with --resume, which continues the plan in plan.json.
PLAN_ARGUMENTS = (*OPTIONS, "preset", "profile", "out", "shard")


def _given(args) -> dict:
    """The plan options given on the command line (argparse leaves the others None)."""
    return {name: getattr(args, name) for name in PLAN_ARGUMENTS if getattr(args, name, None) is not None}


def _options_from_args(args, local: bool = True) -> tuple[str, dict]:
    """The preset's options overridden by the command line, checked; `local`: the run is on this machine."""
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
    if options.get("device") == "cuda" and local:
        require_cuda()
    return preset_name, options


def _load_plan(store) -> Plan:
    path = store.path / "plan.json"
    if not path.exists():
        raise UsageError(f"{store.path} is not a run directory (no plan.json)")
    return Plan.read(path)


def cmd_run(args) -> int:
    from bench.store.folders import hold
    from bench.store.provenance import timed
    from bench.store.records import RunStore, host_env

    if args.resume:
        refused = sorted(_given(args))
        if refused:
            flags = ", ".join("--" + name.replace("_", "-") for name in refused)
            raise UsageError(
                f"--resume continues the run as planned in its plan.json; it cannot change {flags}. "
                "Start a new run for another plan (--retry-errors and --no-report may be given with --resume)"
            )
        store = RunStore(Path(args.resume))
        if not store.path.is_dir():
            raise UsageError(f"{store.path} is not a run directory (no such folder)")
        hold(store.path)
        plan = _load_plan(store)
        if store.results.exists() and not store.results.is_file():
            raise WriteError(f"cannot write to {store.results}: it is not a file; the run's records go there")
    else:
        if args.retry_errors:
            raise UsageError("--retry-errors applies to --resume RUN_DIR only")
        preset_name, options = _options_from_args(args)
        plan = build_plan(options, preset=preset_name)
        if args.shard is not None:
            from bench.execute.shards import parse_shard, shard_plan

            plan = shard_plan(plan, *parse_shard(args.shard))
            if not plan.configs:
                raise UsageError(f"shard {args.shard} of this plan has no configurations (fewer cells than shards)")
            preset_name = f"{preset_name}-shard{plan.shard['index']}of{plan.shard['count']}"
        if args.out:
            path = Path(args.out)
            hold(path)  # creates it; a second writer of the same folder stops here with exit status 2
            check_output_dir(path)
            store = RunStore(path)
        else:
            check_output_dir(RESULTS_DIR)
            store = RunStore.create(RESULTS_DIR, f"{plan.configs[0].device}-{preset_name}")
            hold(store.path, created=True)
        store.write_json("plan.json", plan.to_dict())
    env = host_env()
    return timed(store.path / "env.json", env, lambda: _measure(args, plan, store, env))


def _measure(args, plan: Plan, store, env: dict) -> int:
    """The run proper, from the printed plan to the report: its exit status."""
    from bench.execute.runner import Interrupted, Runner, RunWriteError
    from bench.report.run import write_report

    _print_plan(plan, store)
    runner = Runner(plan, store, env)
    _on_stop(lambda: f"{len(store.records())} records kept in {store.path}; "
                     f"continue with: python -m bench run --resume {store.path}")  # fmt: skip
    try:
        runner.run(retry_errors=args.retry_errors)
        if plan.max_batch:
            runner.find_max_batches()
    except (KeyboardInterrupt, Interrupted) as stop:  # here, so env.json records the exit status it gives
        return interrupted(stop)
    except RunWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not args.no_report:
        report = write_report(store.path)
        print(report.console_summary)
        print(f"report: {store.path / 'report.md'}")
    return 0


def _estimate_line(plan: Plan, store) -> str:
    """The run's expected duration from earlier records on this device (configurations already recorded in
    a resumed run and engines not installed cost nothing)."""
    from dataclasses import replace

    from bench.config import detect_gpu
    from bench.execute.estimate import estimate, load_history, this_device_key
    from implementations import is_installed

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
    from bench.report.run import write_report

    report = write_report(Path(args.source), Path(args.out) if args.out else None)
    print(report.console_summary)
    print(f"report: {report.path}")
    return 0


def cmd_compare(args) -> int:
    from bench.report.compare import compare_command

    if args.fail_on_regression is not None and not 0 <= args.fail_on_regression < float("inf"):
        raise UsageError(f"--fail-on-regression must be a non-negative percentage, got {args.fail_on_regression}")
    return compare_command(
        args.run_a, args.run_b, args.fail_on_regression, args.allow_other_hardware, args.out, args.html
    )


def _new_folder(given: str | None, marker: str, what: str, kind: str, label: str) -> Path:
    """The folder a study writes, locked for this process: --out, refused if it already holds one (its
    `marker` file, written last), cannot be written or is being written by another process; else a new
    time-stamped folder under results/KIND/."""
    from bench.store.folders import hold
    from bench.store.records import RunStore

    if given is None:
        path = RunStore.create(RESULTS_DIR.parent / kind, label).path
        hold(path, created=True)
        return path
    out = Path(given)
    hold(out)  # first: a folder being written is refused as such, whatever it holds yet
    check_output_dir(out)
    if (out / marker).exists():
        raise UsageError(f"{out} already holds {what}; give another --out")
    return out


def _build_whole(out: Path, marker: str, build) -> Path:
    """Run `build(folder)` in a staging folder and rename it onto `out` when it has returned; the path
    it returned, moved to `out`. Interrupted, `out` is left as it was (the staging folder is removed)."""
    from bench.store.folders import Staged

    staged = Staged(out, marker)
    _on_stop(lambda: f"nothing written to {out} (it is written whole when every engine has run)")
    try:
        path = build(staged.path)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return out / Path(path).relative_to(staged.path)


def cmd_profile(args) -> int:
    from bench.studies.profiling.run import ProfileRequest, profile

    o = check_command("profile", vars(args))
    everything = not (args.stages or args.ops or args.trace)
    request = ProfileRequest(
        model=o["model"], engines=o["engines"], batch_size=o["batch_size"], mode=o["mode"],
        image_size=o["image_size"], precision=o["precision"], device=o["device"], stages=True,
        ops=everything or args.ops, trace=everything or args.trace, windows=o["windows"],
        min_window_s=o["min_window_s"],
    )  # fmt: skip
    out = _new_folder(args.out, "profile.md", "a profile", "profiles", f"{o['model']}-{o['mode']}-{o['image_size']}px")
    say = lambda text: print(text, file=sys.stderr, flush=True)
    path = _build_whole(out, "profile.md", lambda folder: profile(request, folder, say=say))
    print(path.read_text())
    print(f"profile: {path}")
    return 0


def cmd_gradient_flow(args) -> int:
    from bench.studies.profiling.run import GradientFlowRequest, gradient_flow, study_models

    o = check_command("gradient-flow", vars(args))
    request = GradientFlowRequest(
        models=study_models(o["depths"]), engines=o["engines"], batch_size=o["batch_size"], steps=o["steps"]
    )
    out = _new_folder(args.out, "gradient_flow.md", "a gradient-flow study", "gradient-flow", "cifar")
    say = lambda text: print(text, file=sys.stderr, flush=True)
    path = _build_whole(out, "gradient_flow.md", lambda folder: gradient_flow(request, folder, say=say))
    print(path.read_text())
    print(f"gradient flow: {path}")
    return 0


def cmd_train(args) -> int:
    from bench.studies.training.command import command

    return command(args, lambda label: _new_folder(args.out, "training.json", "a training study", "training", label))


def cmd_merge(args) -> int:
    """Merge into a staging folder, render the report there, and rename it onto OUT when complete: an
    interrupted merge leaves no OUT that looks like a run, and the same merge can simply be run again."""
    from bench.execute.shards import merge
    from bench.report.run import write_report
    from bench.store.atomic import ensure_dir
    from bench.store.folders import Staged, hold

    check_command("merge", vars(args))
    out = Path(args.out)
    created = not out.exists()
    ensure_dir(out)  # a file there: WriteError, exit 1, the file left as it is
    hold(out, created=created)  # a second merge into OUT stops here; a failed one leaves no empty OUT
    if (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run; give a new folder")
    staged = Staged(out, "results.jsonl")
    _on_stop(lambda: f"{out} was not written (a merge is renamed into place only when complete); "
                     "run the same merge again")  # fmt: skip
    try:
        plan, records, warnings = merge(staged.path, [Path(p) for p in args.shards], force=args.force)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        report = write_report(staged.path)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    print(f"merged {len(args.shards)} shard(s): {len(records)} records of {len(plan.configs)} configurations "
          f"into {args.out}", file=sys.stderr)  # fmt: skip
    print(report.console_summary)
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_scale(args) -> int:

    from bench.store.atomic import ensure_dir
    from bench.store.provenance import timed
    from bench.store.records import host_env
    from bench.studies.scaling.scaling import ScaleRequest, run_scaling
    from bench.studies.scaling.scaling_report import write_scaling_report

    o = check_command("scale", vars(args))
    request = ScaleRequest(
        engines=o["engines"], models=o["models"], replicas=o["replicas"], nodes=o["nodes"],
        batch_per_replica=o["batch_size"], image_size=o["image_size"], device=o["device"], windows=o["windows"],
        min_window_s=o["min_window_s"], timeout_s=o["timeout_s"], kill_rank=o["kill_rank"],
        hang_rank=o["hang_rank"],
    )  # fmt: skip
    out = ensure_dir(_new_folder(args.out, "scaling.jsonl", "a scaling run", "scaling", o["device"]))
    _on_stop(lambda: f"{_lines(out / 'scaling.jsonl')} scaling record(s) kept in {out}; the job under way was "
                     "stopped and every rank with it")  # fmt: skip
    env = host_env()

    def measure() -> int:
        run_scaling(request, out, say=lambda text: print(text, file=sys.stderr, flush=True))
        return 0

    timed(out / "env.json", env, measure)
    path = write_scaling_report(out, env)
    print(path.read_text())
    print(f"scaling: {path}")
    return 0


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
