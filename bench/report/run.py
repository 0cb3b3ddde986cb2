"""Writes a run's report.md, summary.csv and plots from its records (or a pytest-benchmark JSON)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.config import Config, Plan, UsageError
from bench.report import findings, tables
from bench.report.render import markdown_table
from bench.report.tables import MIB, sig3
from bench.store import atomic, provenance
from bench.store.atomic import ensure_dir, write_text
from bench.store.records import RECORD_FIELDS, Record, RecordError, current_records, read_results

# A p99 from n steps lies between the two largest of them when n < 100: below P99_MARKED steps it is marked
# as little more than the slowest step, below P99_WITHHELD it is withheld (the slowest of a handful of steps).
P99_MARKED = 100
P99_WITHHELD = 20


@dataclass(frozen=True)
class Report:
    path: Path
    console_summary: str


@dataclass(frozen=True)
class Source:
    """A run's records after every check, with what the plan asked for and what is missing."""

    records: list[Record]  # one per configuration (the latest attempt)
    env: dict
    out: Path
    plan: Plan | None = None
    missing: tuple[Config, ...] = ()  # planned configurations with no record
    superseded: int = 0  # earlier attempts replaced by --retry-errors (still in results.jsonl)
    warnings: tuple[str, ...] = ()


def load_source(source: Path) -> Source:
    """Records, environment, plan and default output directory of a run dir, a results.jsonl or a
    pytest-benchmark JSON file (whose benchmarks carry their records in extra_info).

    Everything is read and checked here, before anything is written: an unusable line, a record of
    another plan or an unreadable plan.json raises UsageError (exit status 2) naming what is wrong."""
    source = Path(source)
    if not source.exists():
        raise UsageError(f"{source} does not exist")
    if source.is_dir():
        check_run_folder(source)
    if source.is_dir() or source.suffix == ".jsonl":
        folder = source if source.is_dir() else source.parent
        results = read_results(folder / "results.jsonl" if source.is_dir() else source)
        plan = Plan.read(folder / "plan.json") if (folder / "plan.json").exists() else None
        results.check(plan)
        current = current_records(results.records)
        missing: tuple[Config, ...] = ()
        if plan is not None:
            recorded = {r.config.key() for r in current}
            missing = tuple(c for c in plan.configs if c.key() not in recorded)
        warnings = tuple(w for w in (results.torn_warning(),) if w)
        env = _read_json(folder / "env.json") or {}
        return Source(current, env, folder, plan, missing, len(results.records) - len(current), warnings)
    data = _read_json(source)
    records = benchmark_records(data, source)
    machine = data.get("machine_info") or {}
    recorded = next((r.env for r in records if r.env.get("cpu_cores")), {})
    env = {
        "host": machine.get("node"),
        "cpu_model": (machine.get("cpu") or {}).get("brand_raw") or recorded.get("cpu_model"),
        "cpu_cores": (machine.get("cpu") or {}).get("count") or recorded.get("cpu_cores"),
        "python": machine.get("python_version"),
        "git_commit": (data.get("commit_info") or {}).get("id"),
        "time": data.get("datetime"),
        "command_line": "pytest --benchmark-only",
    }
    return Source(current_records(records), env, source.parent / (source.stem + "-report"))


# What each kind of results folder holds, to name a folder that is not a run.
STUDY_MARKERS = {
    "profile.json": "a profile (`bench profile`; its report is profile.md)",
    "gradient_flow.json": "a gradient-flow study (`bench gradient-flow`; its report is gradient_flow.md)",
    "scaling.jsonl": "a scaling study (`bench scale`; its report is scaling.md)",
}


def check_run_folder(folder: Path) -> None:
    """UsageError unless `folder` is a run (a plan.json or a results.jsonl of `bench run`), naming what it is."""
    results = folder / "results.jsonl"
    if results.exists() and not results.is_file():
        raise UsageError(f"{folder} is not a readable run: its results.jsonl is not a file")
    if (folder / "plan.json").is_file() or results.is_file():
        return
    held = next((what for marker, what in STUDY_MARKERS.items() if (folder / marker).exists()), None)
    raise UsageError(
        f"{folder} is not a run folder (no plan.json or results.jsonl)"
        + (f": it holds {held}" if held else "")
        + "; give a folder made by `bench run`, its results.jsonl, or a pytest-benchmark JSON file"
    )


def benchmark_records(data, source: Path) -> list[Record]:
    """The records of a pytest-benchmark JSON file (each benchmark of tests/benchmarks carries its record in
    extra_info.record), after one check of its shape: UsageError naming every unusable entry."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UsageError(f"{source} is neither a run directory, a results.jsonl nor a pytest-benchmark JSON file")
    problems = [
        f"{name} must be an object, got {type(data[name]).__name__}"
        for name in ("machine_info", "commit_info")
        if data.get(name) is not None and not isinstance(data[name], dict)
    ]
    cpu = (data.get("machine_info") or {}).get("cpu") if isinstance(data.get("machine_info"), dict) else None
    if cpu is not None and not isinstance(cpu, dict):
        problems.append(f"machine_info.cpu must be an object, got {type(cpu).__name__}")
    if not data["benchmarks"]:
        problems.append("benchmarks is empty: there is nothing to report")
    records = []
    for index, benchmark in enumerate(data["benchmarks"]):
        if not isinstance(benchmark, dict):
            problems.append(f"benchmark {index}: must be an object, got {type(benchmark).__name__}")
            continue
        where = f"benchmark {index} ({benchmark.get('name')})"
        extra = benchmark.get("extra_info")
        if not isinstance(extra, dict):
            got = "none" if extra is None else type(extra).__name__
            problems.append(f"{where}: extra_info must be an object holding the record, got {got}")
        elif extra.get("record") is None:
            problems.append(f"{where}: no extra_info.record (not a benchmark of this project's tests/benchmarks)")
        else:
            try:
                records.append(Record.from_json(extra["record"]))
            except RecordError as trouble:
                problems.append(f"{where}: {trouble}")
    if problems:
        raise UsageError(f"{source} has unusable entries; nothing was written:\n  " + "\n  ".join(problems))
    return records


def _read_json(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None


def write_report(source: Path, out: Path | None = None) -> Report:
    loaded = load_source(source)
    records, env = loaded.records, loaded.env
    out = Path(out) if out else loaded.out
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    ensure_dir(out)
    plot_files = []
    if records:
        from bench.report.plots import write_plots

        plot_files = write_plots(records, out)
    markdown, console = render_markdown(records, env, plot_files, loaded)
    write_csv(records, out / "summary.csv")
    from bench.report.html import run_page

    write_text(out / "report.html", run_page(records, env, f"Benchmark report: {Path(source).name}"))
    write_text(out / "report.md", markdown)  # last: a report.md on disk means the rest was written
    return Report(out / "report.md", console)


def write_csv(records: list[Record], path: Path) -> None:
    env_fields = ("framework_version", "device_name", "intra_op_threads", "inter_op_threads", "git_commit")
    rows = [
        [_csv_value(getattr(r, f)) for f in RECORD_FIELDS] + [_csv_value(r.env.get(f)) for f in env_fields]
        for r in records
    ]
    atomic.write_csv(path, [*RECORD_FIELDS, *(f"env_{f}" for f in env_fields)], rows)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _md(headers, rows) -> str:
    return markdown_table(rows, headers)


def engine_line(records: list[Record], plan: Plan | None) -> str:
    """Which engines the run asked for, which have figures, and why the others have none."""
    asked = list(dict.fromkeys(c.framework for c in plan.configs)) if plan else sorted({r.framework for r in records})
    measured = [f for f in asked if any(r.framework == f and r.status == "ok" for r in records)]
    reasons = []
    for framework in asked:
        if framework in measured:
            continue
        own = [r for r in records if r.framework == framework]
        if any(r.status == "skipped" and "not installed" in (r.error or "") for r in own):
            reasons.append(f"{framework} (not installed on this machine)")
        elif own:
            reasons.append(f"{framework} (every configuration failed: see Failures)")
        else:
            reasons.append(f"{framework} (no records yet: see Missing)")
    return f"- **Engines**: asked for {', '.join(asked) or '—'}; measured {', '.join(measured) or 'none'}" + (
        f"; without figures: {', '.join(reasons)}" if reasons else ""
    )


def environment_lines(records: list[Record], env: dict, plan: Plan | None = None) -> list[str]:
    worker_envs = defaultdict(dict)
    for r in records:
        if r.env.get("framework_version"):
            worker_envs[r.framework] = r.env
    devices = sorted({r.device for r in records})
    device_names = sorted({e.get("device_name") for e in worker_envs.values() if e.get("device_name")})
    lines = [
        f"- **Device**: {', '.join(devices) or '—'}"
        + (
            f" ({', '.join(device_names)})"
            if device_names
            else f" — CPU: {env.get('cpu_model', '—')}, {env.get('cpu_cores', '—')} cores"
        ),
        f"- **Image size**: {', '.join(str(v) for v in sorted({r.image_size for r in records})) or '—'} px; **batch sizes**: {', '.join(str(b) for b in sorted({r.batch_size for r in records}))}",
        f"- **Precision**: {', '.join(sorted({r.precision for r in records}))}; **compile**: {', '.join(sorted({r.compile for r in records}))} "
        "(off = PyTorch eager, TensorFlow tf.function, JAX jit; on = torch.compile, XLA)",
        f"- **Layout**: PyTorch {', '.join(sorted({r.layout for r in records if r.framework == 'torch'})) or '—'}; Keras engines NHWC",
    ]
    for framework, e in sorted(worker_envs.items()):
        details = [f"{framework} {e.get('framework_version')}"]
        if e.get("keras_version"):
            details.append(f"Keras {e['keras_version']}")
        details.append(f"threads intra {e.get('intra_op_threads')} / inter {e.get('inter_op_threads')}")
        for key in ("tf32", "tf32_matmul", "tf32_cudnn", "flush_denormal", "cuda_version", "cudnn_version"):
            if e.get(key) not in (None, ""):
                details.append(f"{key} {e[key]}")
        lines.append(f"- **{framework}**: " + ", ".join(str(d) for d in details))
    lines.append(engine_line(records, plan))
    if env.get("merged_from"):
        shards = env["merged_from"]
        machines = sorted({f"{s.get('cpu_model')}, {s.get('cpu_cores')} cores" for s in shards})
        numbers = ", ".join(str(s["shard"]) for s in shards)
        lines.append(f"- **Shards**: merged from {len(shards)} run folders (shards {numbers}) on {'; '.join(machines)}")
    for warning in env.get("merge_warnings", []):
        lines.append(f"- **Warning**: {warning}")
    lines.append(
        f"- **Run**: {env.get('time', '—')} on {env.get('host', '—')}, commit {env.get('git_commit', '—')}; "
        f"command `{env.get('command_line', '—')}`"
    )
    return lines


def render_markdown(
    records: list[Record], env: dict, plot_files: list[Path], loaded: Source | None = None
) -> tuple[str, str]:
    plan = loaded.plan if loaded else None
    out = ["# Benchmark report", "", *environment_lines(records, env, plan), ""]
    console = [engine_line(records, plan).removeprefix("- ").replace("**", ""), ""]
    if not records:
        out += ["No records yet.", ""] + _missing(loaded)
        return "\n".join(out) + "\n", "no records"
    found = findings.findings(records)
    wall_s = provenance.wall_so_far(env)  # a run's own report is written before its segment closes
    out += findings.render(found, wall_s)
    console += findings.render(found, wall_s, markdown=False) + [""]
    intro = len(out)  # the trust line goes here once every section is counted
    out += [
        "Throughput is the median of the timed windows (img/s, higher is better); `OOM`, `error`, `timeout` and",
        "`skipped` mark configurations that did not run to the end (see Failures); `—` was not measured.",
        "",
    ]
    verdicts: list = []
    for section in tables.sections(records):
        chosen = tables.select(records, section)
        title = section.title()
        out += [f"## {title}", ""]
        for name in tables.engine_order(chosen):
            headers, rows = tables.throughput_pivot(chosen, name)
            table = _md(headers, rows)
            out += [f"### Throughput, {name} (img/s)", "", table, ""]
            console += [f"{title} — {name} (img/s)", table, ""]
        out += _layouts(chosen)
        comparison = tables.compare_engines(chosen)
        if comparison is not None:
            for other in tables.engine_order(chosen)[1:]:
                headers, rows = tables.comparison_table(chosen, comparison, other)
                table = _md(headers, rows)
                out += [f"### {other} vs {comparison.baseline} (throughput ratio, 95% interval)", "", table, ""]
                console += [f"{title} — {other} vs {comparison.baseline}", table, ""]
            verdicts += list(comparison.ratios.values())
        out += _latency(chosen) + _memory(chosen) + _utilization(chosen) + _first_step(chosen) + _depth_scaling(chosen)
        out += _kernel_variants(chosen)
    flags = tables.sanity_flags(records)
    summary = trust_summary(verdicts, flags, len(records))
    noisy = tables.noisy_run(records, flags)
    out[intro:intro] = [f"**Trust**: {summary}", ""] + ([f"**Noisy run**: {noisy}.", ""] if noisy else [])
    out += _comparison_method() + _failures(records, loaded) + _missing(loaded) + _flags(flags)
    console += [f"trust: {summary}"] + ([f"noisy run: {noisy}."] if noisy else []) + _top_flags(flags)
    if loaded and loaded.missing:
        console.append(f"MISSING: {len(loaded.missing)} planned configuration(s) have no record (see report.md)")
    if plot_files:
        out += ["## Plots", ""]
        from bench.report.plots import caption

        for path in plot_files:
            out += [f"![{path.stem}]({path.name})", "", f"*{caption(path)}*", ""]
        out.append("")
    return "\n".join(out) + "\n", "\n".join(console)


def _ok(records):
    return [r for r in records if r.status == "ok"]


def verdict_kind(ratio) -> str:
    """Which of the trust line's four counts a ratio falls in."""
    if ratio.low is None:
        return "no interval"
    if ratio.decided:
        return "decided"
    if ratio.low <= 1.0 <= ratio.high:
        return "same"
    return "below margin"


def trust_summary(verdicts: list, flags: list, records: int | None = None) -> str:
    """One line: how many comparisons the intervals decide, how many exclude 1 but not the margin, how
    many hold 1, how many have no interval, and how many records a check flagged."""
    counts = {kind: 0 for kind in ("decided", "below margin", "same", "no interval")}
    for v in verdicts:
        counts[verdict_kind(v)] += 1
    flagged = len({id(f.record) for f in flags})
    of = f" of {records}" if records is not None else ""
    if not verdicts:
        return f"no engine comparison (one engine per cell); {flagged} flagged record(s){of}"
    return (
        f"{len(verdicts)} engine comparisons: {counts['decided']} decided, {counts['below margin']} below the "
        f"{tables.NOISE_MARGIN:.0%} margin (not called), {counts['same']} same within noise, "
        f"{counts['no interval']} without an interval (fewer than 6 windows); {flagged} flagged record(s){of}"
    )


def _top_flags(flags: list, limit: int = 5) -> list[str]:
    if not flags:
        return ["flags: none"]
    lines = [f"flags, most severe first ({len(flags)} in report.md):"]
    return lines + [f"  - {FLAG_KINDS_SHORT.get(f.kind, f.kind)}: {f.text}" for f in flags[:limit]]


FLAG_KINDS_SHORT = {"uncertain": "uncertain", "depth": "deeper but faster", "batch": "slower at a larger batch",
                    "memory": "memory below bound"}  # fmt: skip


def _comparison_method() -> list[str]:
    margin = f"{tables.NOISE_MARGIN:.0%}"
    return [
        "## How engines are compared",
        "",
        "On a CPU the engines of a cell are prepared together, each in its own worker, and take turns: one timed",
        "window each, the order reversed every pair. A cell's ratio is the median of the per-pair ratios (engine",
        "img/s over baseline img/s) and its 95% interval is the distribution-free interval for a median (order",
        "statistics of the pair ratios, binomial coverage; at least 6 pairs). Engines that ran one after the",
        "other (a GPU) get the ratio of medians with the interval formed by each median's own interval.",
        "",
        f"A difference is called (*decided*) only when the whole interval lies beyond {margin} either way (the",
        "run-to-run drift measured on our CPU). An interval that holds 1 reads *same within noise*. One that",
        f"excludes 1 but reaches inside the {margin} band reads *not called (interval not beyond the {margin} margin)*:",
        "its ratio is shown, but it is not a finding. The trust line counts the four cases apart: decided, below",
        "the margin (not called), same within noise, and without an interval (fewer than 6 windows).",
        "",
    ]


def _layouts(records) -> list[str]:
    """PyTorch's memory format chosen per cell by the layout trial, with both trial figures."""
    tried = [r for r in _ok(records) if isinstance(r.layout_trial, dict)]
    if not tried:
        return []
    batches = sorted({r.batch_size for r in tried})
    by = {(r.model, r.batch_size): r for r in tried}
    short = {"channels_first": "NCHW", "channels_last": "NHWC"}
    rows = []
    for model in tables.model_order(r.model for r in tried):
        row = [model]
        for b in batches:
            r = by.get((model, b))
            if r is None:
                row.append("—")
                continue
            trial = r.layout_trial
            nchw, nhwc = trial.get("channels_first_img_s"), trial.get("channels_last_img_s")
            if trial.get("ratio_low") is not None:  # a paired trial: NHWC over NCHW with its interval
                low, high = trial["ratio_low"], trial["ratio_high"]
                verdict = f" (NHWC/NCHW {trial['channels_last_over_channels_first']:.2f} [{low:.2f}-{high:.2f}])"
            else:  # older runs: the all-rounds rule, whose undecided trials fell back to NCHW
                verdict = "" if trial.get("decided") else " (undecided: NCHW by the old rule)"
            row.append(f"{short[r.layout_chosen]}{verdict}: {sig3(nchw)} / {sig3(nhwc)}")
        rows.append(row)
    rules = list(dict.fromkeys(r.layout_trial.get("rule", "") for r in tried))
    return [
        "### PyTorch memory format (layout auto): chosen, and trial img/s NCHW / NHWC",
        "",
        *(f"Rule: {rule}." for rule in rules),
        "",
        _md(["model"] + [f"b={b}" for b in batches], rows),
        "",
    ]


def latency_steps(record: Record) -> int | None:
    """The per-step samples behind a record's percentiles (older records: their recorded step times)."""
    if record.latency_samples is not None:
        return record.latency_samples
    return len(record.step_seconds) or None


def p99_cell(record: Record) -> str:
    steps = latency_steps(record)
    if record.latency_ms_p99 is None:
        return "—"
    if steps is not None and steps < P99_WITHHELD:
        return "—"
    if steps is None or steps < P99_MARKED:
        return sig3(record.latency_ms_p99) + "*"
    return sig3(record.latency_ms_p99)


def _latency(records) -> list[str]:
    ok = _ok(records)
    if not ok:
        return []
    smallest = min(r.batch_size for r in ok)
    rows = []
    shown = sorted(
        (r for r in ok if r.batch_size == smallest), key=lambda r: (tables.depth_key(r.model), tables.engine(r))
    )
    for r in shown:
        steps = latency_steps(r)
        rows.append([r.model, tables.engine(r), sig3(r.latency_ms_p50), p99_cell(r), steps if steps else "—"])
    counts = [latency_steps(r) for r in shown if r.latency_ms_p99 is not None]
    notes = []
    marked = [n for n in counts if n is None or P99_WITHHELD <= n < P99_MARKED]
    withheld = [n for n in counts if n is not None and n < P99_WITHHELD]
    if marked:
        known = sorted(n for n in marked if n is not None)
        span = (
            f"from {known[0]}-{known[-1]} steps" if len(set(known)) > 1 else (f"from {known[0]} steps" if known else "")
        )
        notes.append(
            f"`*` p99 {span}{' (or an unknown count)' if None in marked else ''}: under {P99_MARKED} steps a p99 "
            "lies between the two slowest steps, so read it as the slowest step, not a tail percentile"
        )
    if withheld:
        notes.append(
            f"`—` p99 withheld: from {' or '.join(str(n) for n in sorted(set(withheld)))} steps (under {P99_WITHHELD}) "
            "it would be the slowest of a handful"
        )
    return [
        f"### Latency at batch {smallest}",
        "",
        "Per-step times; steps: how many back the percentiles."
        + ("".join(f" {n[0].upper()}{n[1:]}." for n in notes) if notes else ""),
        "",
        _md(["model", "engine", "p50 (ms)", "p99 (ms)", "steps"], rows),
        "",
    ]


# The memory checks' short names (tables.memory_flags) for the console's flag lines.
FLAG_KINDS_SHORT.update(memory_device="GPU peak above device use", memory_batch="less memory at a larger batch")


def _memory(records) -> list[str]:
    shown = {id(r): tables.peak_memory(r) for r in _ok(records)}
    ok = [r for r in _ok(records) if shown[id(r)] != (None, None)]
    if not ok:
        return []
    batches = sorted({r.batch_size for r in ok})
    series = defaultdict(dict)
    sources = set()
    for r in ok:
        series[(r.model, tables.engine(r))][r.batch_size] = r
        sources.add(r.memory_source)
    rows = []
    for (model, name), points in sorted(series.items(), key=lambda kv: (tables.depth_key(kv[0][0]), kv[0][1])):
        measured = sorted((b, shown[id(r)][0]) for b, r in points.items() if shown[id(r)][0] is not None)
        fit = tables.memory_fit(measured) if len(measured) >= 2 else None
        bounds = [r.memory_bound_bytes for r in points.values() if r.memory_bound_bytes]
        bound = max(bounds) / MIB if bounds else None
        possible = fit is not None and fit[1] >= 0 and fit[0] >= 0
        fit_text = f"{sig3(fit[0])} + {sig3(fit[1])}/img" if possible else ("not physical" if fit else "—")
        cells = []
        for b in batches:
            r = points.get(b)
            if r is None:
                cells.append("—")
                continue
            peak, reason = shown[id(r)]
            if peak is not None:
                cells.append(sig3(peak / MIB))
            else:
                cells.append("above device use" if "NVML" in (reason or "") else "below bound")
        rows.append([model, name, *cells, sig3(bound), fit_text])
    headers = (
        ["model", "engine"] + [f"b={b} (MiB)" for b in batches] + ["weights bound (MiB)", "fit: fixed MiB + MiB/img"]
    )
    return [
        "### Peak memory",
        "",
        f"Source: {'; '.join(sorted(s for s in sources if s))}. The weights bound is the parameters in float32 (x3 "
        "when training: gradients and momentum); a figure below it is a measurement error and is withheld "
        "(`below bound`), as is a GPU peak above the most memory NVML saw in use on the device in the same "
        "windows (`above device use`). A peak more than "
        f"{tables.MEMORY_DROP_LIMIT:.0%} below a smaller batch's is flagged. The fit is least squares over the "
        "batch sizes shown, shown only when both terms are non-negative.",
        "",
        _md(headers, rows),
        "",
    ]


def _utilization(records) -> list[str]:
    ok = _ok(records)
    if not ok:
        return []
    largest = {}
    for r in ok:
        key = (r.model, r.framework, r.layout)
        if key not in largest or r.batch_size > largest[key].batch_size:
            largest[key] = r
    gpu = any(r.device == "cuda" for r in ok)
    rows = []
    for (model, framework, layout), r in sorted(
        largest.items(), key=lambda kv: (tables.depth_key(kv[0][0]), kv[0][1:])
    ):
        row = [model, framework, layout, r.batch_size]
        if gpu:
            row += [
                sig3(r.gpu_util_pct_mean),
                sig3(r.gpu_util_pct_max),
                sig3(r.power_w),
                sig3(r.energy_j_per_img),
            ]
        else:
            row += [sig3(r.cpu_util_cores)]
        row += [
            sig3(r.achieved_tflops * 1e3 if r.achieved_tflops is not None else None),
            sig3(r.mfu * 100 if r.mfu is not None else None),
        ]
        rows.append(row)
    headers = ["model", "framework", "layout", "batch"]
    headers += ["GPU util mean (%)", "GPU util max (%)", "power (W)", "energy (J/img)"] if gpu else ["CPU cores used"]
    headers += ["achieved GFLOP/s", "MFU (%)"]
    note = "" if gpu else " MFU needs a device peak FLOP/s, which the harness does not know for a CPU (—)."
    return [
        "### Utilization at the largest batch",
        "",
        f"Achieved FLOP/s count a training step as 3 forward passes.{note}",
        "",
        _md(headers, rows),
        "",
    ]


def _first_step(records) -> list[str]:
    """Build and first step in columns of their own: a worker that keeps the model of its previous
    configuration builds in milliseconds, so the first-step column alone compares across rows."""
    ok = _ok(records)
    if not ok:
        return []
    batches = sorted({r.batch_size for r in ok})
    by = defaultdict(dict)
    for r in ok:
        by[(r.model, r.framework, r.layout)][r.batch_size] = r
    old = False
    rows = []
    for (model, framework, layout), points in sorted(
        by.items(), key=lambda kv: (tables.depth_key(kv[0][0]), kv[0][1:])
    ):
        row = [model, framework, layout]
        for b in batches:
            r = points.get(b)
            if r is None or r.first_step_s is None:
                row += ["—", "—"]
            elif r.build_s is None:
                old = True
                row += ["—", sig3(r.first_step_s) + "†"]
            else:
                row += [sig3(r.build_s), sig3(max(r.first_step_s - r.build_s, 0.0))]
        rows.append(row)
    headers = ["model", "framework", "layout"] + [
        h for b in batches for h in (f"b={b} build (s)", f"b={b} first step (s)")
    ]
    note = (
        "Build: making the model and its step function (milliseconds where the worker kept the model of its previous "
        "configuration). First step: the first call, with any tracing or compilation (tf.function, XLA, "
        "torch.compile), before warm-up."
        + (" `†` build and first step together: the record predates the separate build time." if old else "")
    )
    return [
        "### Build and first step (s)",
        "",
        note,
        "",
        _md(headers, rows),
        "",
    ]


def _depth_scaling(records) -> list[str]:
    ok = _ok(records)
    if not ok:
        return []
    lines = ["### Depth scaling", ""]
    families = defaultdict(list)
    for r in ok:
        families[r.family].append(r)
    for family, members in sorted(families.items(), key=lambda kv: tables.depth_key(kv[1][0].model)):
        batch = max(r.batch_size for r in members)
        rows = []
        for r in sorted((r for r in members if r.batch_size == batch), key=lambda r: (r.depth, r.framework, r.layout)):
            rows.append(
                [
                    r.model,
                    r.depth,
                    r.framework,
                    r.layout,
                    sig3(r.throughput_img_s),
                    sig3(r.flops_per_img / 1e9),
                    sig3(r.achieved_tflops),
                ]
            )
        lines += [
            f"Family `{family}` at batch {batch}:",
            "",
            _md(["model", "depth", "framework", "layout", "img/s", "GFLOPs/img", "achieved TFLOP/s"], rows),
            "",
        ]
    return lines


def _kernel_variants(records) -> list[str]:
    """A VGG and its 5x5 twin measured in the same run: the tutorial's 18 C^2 against 25 C^2 weights per
    merged pair, and what it costs. The two are different cells, so the ratio has no paired interval."""
    from implementations import get_spec
    from implementations.lowering import params_count

    ok = {(r.model, tables.engine(r), r.batch_size): r for r in _ok(records)}
    rows = []
    for (model, name, batch), r in sorted(ok.items(), key=lambda kv: (tables.depth_key(kv[0][0]), kv[0][1:])):
        twin = ok.get((f"{model}_5x5", name, batch))
        if twin is None or model.endswith("_5x5"):
            continue
        rows.append(
            [
                model,
                f"{params_count(get_spec(model)) / 1e6:.1f}M / {params_count(get_spec(twin.model)) / 1e6:.1f}M",
                f"{sig3(r.flops_per_img / 1e9)} / {sig3(twin.flops_per_img / 1e9)}",
                name,
                batch,
                f"{sig3(r.throughput_img_s)} / {sig3(twin.throughput_img_s)}",
                f"{twin.throughput_img_s / r.throughput_img_s:.2f}x",
            ]  # fmt: skip
        )
    if not rows:
        return []
    return [
        "### 3x3 pairs against one 5x5",
        "",
        "Each pair of 3x3 convolutions in a block (18 C^2 weights for C -> C) against one 5x5 (25 C^2); separate",
        "cells, so the ratio of medians carries no paired interval.",
        "",
        _md(
            [
                "model",
                "parameters 3x3 / 5x5",
                "GFLOPs/img 3x3 / 5x5",
                "engine",
                "batch",
                "img/s 3x3 / 5x5",
                "5x5 / 3x3",
            ],
            rows,
        ),  # fmt: skip
        "",
    ]


def _missing(loaded: Source | None) -> list[str]:
    if loaded is None or loaded.plan is None:
        return []
    lines = ["## Missing", ""]
    if not loaded.missing:
        return lines + [f"None: every one of the {len(loaded.plan.configs)} planned configurations has a record.", ""]
    rows = [[c.framework, c.model, c.mode, c.precision, c.batch_size, c.image_size, c.layout] for c in loaded.missing]
    return lines + [
        f"{len(loaded.missing)} of the {len(loaded.plan.configs)} planned configurations have no record "
        "(the run was stopped before them): `python -m bench run --resume RUN_DIR` measures them.",
        "",
        _md(["framework", "model", "mode", "precision", "batch", "px", "layout"], rows),
        "",
    ]


def _failures(records, loaded: Source | None = None) -> list[str]:
    failed = [r for r in records if r.status != "ok"]
    lines = ["## Failures", ""]
    if loaded and loaded.superseded:
        lines += [
            f"{loaded.superseded} earlier attempt(s) were measured again with --retry-errors; the tables show the "
            "latest attempt, and results.jsonl keeps every one.",
            "",
        ]
    if not failed:
        return lines + ["None: every recorded configuration ran to the end.", ""]
    rows = [
        [
            r.framework,
            r.model,
            r.mode,
            r.precision,
            r.batch_size,
            tables.STATUS_LABEL[r.status],
            (r.error or "").replace("|", "/")[:160],
        ]
        for r in failed
    ]
    return lines + [_md(["framework", "model", "mode", "precision", "batch", "status", "message"], rows), ""]


def _flags(flags: list) -> list[str]:
    lines = ["## Sanity flags", ""]
    if not flags:
        return lines + ["None: no record tripped a check (" + "; ".join(tables.FLAG_KINDS.values()) + ").", ""]
    lines += ["Distrust these records; groups largest first, each most severe first:", ""]
    for kind, members in tables.grouped_flags(flags):
        lines += [f"**{kind}** ({len(members)})", ""] + [f"- {f.text}" for f in members] + [""]
    return lines
