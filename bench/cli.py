"""Command line: `python -m bench models | run | report | compare`. Bad input exits with status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import (
    DEVICES,
    LAYOUTS,
    MODES,
    PRECISIONS,
    PROFILES,
    TORCH_COMPILE_MODES,
    Plan,
    UsageError,
    build_plan,
    check_output_dir,
    default_profile_name,
    load_profile,
)

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "runs"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors exit 2 too, with our wording
        raise UsageError(message)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list every model with parameters and GFLOPs")
    models.add_argument("--image-size", type=int, default=None, help="input side in px (default 224; CIFAR family 32)")
    models.add_argument("--json", action="store_true", help="print JSON records instead of a table")

    run = commands.add_parser("run", help="measure a sweep (default: the profile for the detected hardware)")
    run.add_argument("--profile", help=f"named sweep ({', '.join(PROFILES)}) or a .toml file (default: by hardware)")
    run.add_argument("--frameworks", type=_csv, help="comma list: torch, tensorflow (default: both)")
    run.add_argument("--models", type=_csv, help="comma list of names or globs such as 'resnet*', 'vgg1?_bn'")
    run.add_argument("--batch-sizes", type=_csv, help="comma list of positive integers")
    run.add_argument("--modes", type=_csv, help=f"comma list of {', '.join(MODES)} (default: both)")
    run.add_argument(
        "--precision", dest="precisions", type=_csv, help=f"comma list of {', '.join(PRECISIONS)} (default fp32)"
    )
    run.add_argument(
        "--compile", type=_csv, help="off (PyTorch eager, TF tf.function), on (torch.compile, XLA); default off"
    )
    run.add_argument(
        "--torch-compile-mode", choices=TORCH_COMPILE_MODES, help="mode for torch.compile (default 'default')"
    )
    run.add_argument("--image-size", help="input side in px (default: the profile's)")
    run.add_argument(
        "--layout",
        dest="layouts",
        type=_csv,
        help=f"PyTorch memory format: {', '.join(LAYOUTS)} (default channels_last, the faster one measured on CPU and GPU; TensorFlow is always NHWC)",
    )
    run.add_argument(
        "--device", choices=DEVICES, help="auto (cuda if an NVIDIA GPU is found), cpu or cuda (default auto)"
    )
    run.add_argument("--threads", help="CPU threads for each framework (default 0: all cores)")
    run.add_argument("--warmup-steps", help="untimed steps after the first (default: the profile's, 3 if none)")
    run.add_argument("--windows", help="timed windows, at least 5 (default 5)")
    run.add_argument("--min-window-s", help="minimum seconds per timed window (default: the profile's)")
    run.add_argument("--max-window-steps", help="cap on steps per window (default 1000)")
    run.add_argument("--timeout", dest="timeout_s", help="seconds allowed per configuration (default 600)")
    run.add_argument(
        "--no-tf32",
        dest="tf32",
        action="store_false",
        default=None,
        help="disable TF32 in both frameworks (default: TF32 on in both)",
    )
    run.add_argument(
        "--max-batch", action="store_true", help="also find the largest batch that fits per model/mode/precision"
    )
    run.add_argument("--max-batch-limit", help="largest batch tried by --max-batch (default 4096)")
    run.add_argument("--out", help="run directory (default: a new folder under results/runs/)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run: measure only what is missing")
    run.add_argument("--no-report", action="store_true", help="do not render the report at the end")

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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = make_parser().parse_args(argv)
        return {"models": cmd_models, "run": cmd_run, "report": cmd_report, "compare": cmd_compare}[args.command](args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_models(args) -> int:
    from tabulate import tabulate

    from implementations import get_spec, list_models
    from implementations.specs import check_image_size, flops_per_image, params_count

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


def _options_from_args(args) -> tuple[str, dict]:
    profile_name = args.profile or default_profile_name()
    profile_name, options = load_profile(profile_name)
    options = dict(options)
    overrides = {
        "frameworks": args.frameworks,
        "models": args.models,
        "batch_sizes": args.batch_sizes,
        "modes": args.modes,
        "precisions": args.precisions,
        "compile": args.compile,
        "layouts": args.layouts,
        "image_size": args.image_size,
        "device": args.device,
        "threads": args.threads,
        "warmup_steps": args.warmup_steps,
        "windows": args.windows,
        "min_window_s": args.min_window_s,
        "max_window_steps": args.max_window_steps,
        "timeout_s": args.timeout_s,
        "tf32": args.tf32,
        "torch_compile_mode": args.torch_compile_mode,
        "max_batch_limit": args.max_batch_limit,
    }
    options.update({k: v for k, v in overrides.items() if v is not None})
    options["max_batch"] = args.max_batch or options.get("max_batch", False)
    for key in ("frameworks", "models", "batch_sizes", "modes", "precisions"):
        if key not in options:
            raise UsageError(f"the profile {profile_name!r} does not set {key} and the command line gave none")
    return profile_name, options


def cmd_run(args) -> int:
    from .records import RunStore, host_env
    from .report import write_report
    from .runner import Runner

    if args.resume:
        store = RunStore(Path(args.resume))
        if not (store.path / "plan.json").exists():
            raise UsageError(f"{args.resume} is not a run directory (no plan.json)")
        plan = Plan.from_dict(store.read_json("plan.json"))
    else:
        profile_name, options = _options_from_args(args)
        plan = build_plan(options, profile=profile_name)
        if args.out:
            path = Path(args.out)
            check_output_dir(path)
            path.mkdir(parents=True, exist_ok=True)
            store = RunStore(path)
        else:
            check_output_dir(RESULTS_DIR)
            store = RunStore.create(RESULTS_DIR, f"{plan.configs[0].device}-{profile_name}")
        store.write_json("plan.json", plan.to_dict())
    env = host_env()
    if not (store.path / "env.json").exists():
        store.write_json("env.json", env)
    _print_plan(plan, store)
    runner = Runner(plan, store, env)
    try:
        runner.run()
        if plan.max_batch:
            runner.find_max_batches()
    except KeyboardInterrupt:
        runner.close_workers()
        kept = len(store.records())
        print(
            f"\ninterrupted: {kept} records kept in {store.path}; continue with --resume {store.path}", file=sys.stderr
        )
        return 130
    if not args.no_report:
        report = write_report(store.path)
        print(report.console_summary)
        print(f"report: {store.path / 'report.md'}")
    return 0


def _print_plan(plan: Plan, store) -> None:
    from implementations import is_installed

    configs = plan.configs
    frameworks = list(dict.fromkeys(c.framework for c in configs))
    lines = [
        f"run directory: {store.path}",
        f"profile: {plan.profile}; {len(configs)} configurations on {configs[0].device if configs else '-'}",
        f"models: {', '.join(dict.fromkeys(c.model for c in configs))}",
        f"batch sizes: {', '.join(str(b) for b in sorted({c.batch_size for c in configs}))}; "
        f"image size {configs[0].image_size} px; modes {', '.join(dict.fromkeys(c.mode for c in configs))}; "
        f"precision {', '.join(dict.fromkeys(c.precision for c in configs))}",
        f"layout: PyTorch {', '.join(sorted({c.layout for c in configs if c.framework == 'torch'})) or '-'} "
        "(channels_last is the default: measured faster than NCHW on CPU and GPU); TensorFlow NHWC",
        f"threads per framework: {plan.settings.resolved_threads()}; windows {plan.settings.windows} of at least "
        f"{plan.settings.min_window_s:g} s; warm-up {plan.settings.warmup_steps} steps; timeout {plan.settings.timeout_s:g} s",
    ]
    for framework in frameworks:
        state = (
            "installed" if is_installed(framework) else "NOT INSTALLED: its configurations will be recorded as skipped"
        )
        lines.append(f"{framework}: {state}")
    lines += [f"note: {note}" for note in plan.notes]
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_report(args) -> int:
    from .report import write_report

    source = Path(args.source)
    if not source.exists():
        raise UsageError(f"{args.source} does not exist")
    report = write_report(source, Path(args.out) if args.out else None)
    print(report.console_summary)
    print(f"report: {report.path}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_runs, render_comparison
    from .report import load_source

    for source in (args.run_a, args.run_b):
        if not Path(source).exists():
            raise UsageError(f"{source} does not exist")
    if args.fail_on_regression is not None and args.fail_on_regression < 0:
        raise UsageError(f"--fail-on-regression must be a non-negative percentage, got {args.fail_on_regression}")
    rows = compare_runs(load_source(Path(args.run_a))[0], load_source(Path(args.run_b))[0])
    text = render_comparison(rows, args.run_a, args.run_b)
    print(text)
    out = (
        Path(args.out)
        if args.out
        else (Path(args.run_b) if Path(args.run_b).is_dir() else Path(args.run_b).parent) / "compare.md"
    )
    out.write_text(text + "\n")
    if args.fail_on_regression is not None:
        threshold = args.fail_on_regression / 100.0
        failing = [r for r in rows if r.verdict == "regression" and -r.change > threshold]
        if failing:
            print(f"{len(failing)} regression(s) beyond {args.fail_on_regression:g}%", file=sys.stderr)
            return 1
    return 0
