"""Compare two runs: which machines made them, configuration by configuration, and whether their engine
ratios agree; the regression gate, which fails closed. Pure functions from records to rows and text, and
`compare_command`, which loads, decides the gate, and only then writes compare.md."""

from __future__ import annotations

import os
import stat
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import Config, UsageError
from bench.report.render import markdown_table
from bench.report.tables import sig3
from bench.store.records import Record


@dataclass(frozen=True)
class Change:
    config: Config
    baseline_img_s: float
    candidate_img_s: float
    change: float  # candidate / baseline - 1
    verdict: str  # "regression", "improvement" or "within spread"


def _range(record: Record) -> tuple[float, float]:
    low = record.throughput_min_img_s
    high = record.throughput_max_img_s
    median = record.throughput_img_s
    return (median if low is None else low), (median if high is None else high)


def compare_runs(baseline: list[Record], candidate: list[Record]) -> list[Change]:
    """Match configurations; a change counts only beyond both runs' measured spread: a regression when
    the candidate's best window is slower than the baseline's worst, an improvement the other way."""
    base = {r.config.key(): r for r in baseline if r.status == "ok"}
    rows = []
    for r in candidate:
        if r.status != "ok":
            continue
        config = r.config
        b = base.get(config.key())
        if b is None or not b.throughput_img_s:
            continue
        b_low, b_high = _range(b)
        c_low, c_high = _range(r)
        if c_high < b_low:
            verdict = "regression"
        elif c_low > b_high:
            verdict = "improvement"
        else:
            verdict = "within spread"
        change = r.throughput_img_s / b.throughput_img_s - 1
        rows.append(Change(config, b.throughput_img_s, r.throughput_img_s, change, verdict))
    return rows


def gate_failures(
    baseline: list[Record], candidate: list[Record], rows: list[Change], threshold_pct: float
) -> list[str]:
    """Why a regression gate must fail, as sentences; empty when it may pass. It fails closed: a
    candidate that measured nothing, failed where the baseline ran, or lacks a configuration of the
    baseline fails the gate, as a slowdown beyond `threshold_pct` (and beyond the spread) does."""
    reasons = []
    measured = {r.config.key(): r for r in candidate}
    for role, records in (("baseline", baseline), ("candidate", candidate)):
        if not any(r.status == "ok" for r in records):
            reasons.append(f"the {role} has no successful measurement ({_count(records)})")
    base_ok = [r for r in baseline if r.status == "ok"]
    absent = [r for r in base_ok if r.config.key() not in measured]
    if absent:
        reasons.append(
            f"{len(absent)} configuration(s) of the baseline are missing from the candidate: {_names(absent)}"
        )
    failed = [
        measured[r.config.key()] for r in base_ok if r.config.key() in measured and not measured[r.config.key()].ok
    ]
    if failed:
        reasons.append(
            f"{len(failed)} configuration(s) failed in the candidate but ran in the baseline: "
            + _names(failed, with_status=True)
        )
    slower = [c for c in rows if c.verdict == "regression" and -c.change > threshold_pct / 100.0]
    if slower:
        reasons.append(
            f"{len(slower)} regression(s) beyond {threshold_pct:g}% and the spread: "
            + "; ".join(f"{_config_name(c.config)} {c.change:+.1%}" for c in slower[:10])
        )
    return reasons


def _count(records: list[Record]) -> str:
    statuses = defaultdict(int)
    for r in records:
        statuses[r.status] += 1
    listed = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return f"{len(records)} record(s)" + (f": {listed}" if listed else "")


def _config_name(c: Config) -> str:
    return f"{c.framework} {c.model} {c.mode} b={c.batch_size} {c.precision} {c.layout} {c.image_size}px"


def _names(records: list[Record], with_status: bool = False, limit: int = 10) -> str:
    names = [_config_name(r.config) + (f" ({r.status})" if with_status else "") for r in records[:limit]]
    return "; ".join(names) + (" ..." if len(records) > limit else "")


def render_comparison(rows: list[Change], name_a: str, name_b: str, setting: str | None = None) -> str:
    """The configuration-by-configuration table; `setting` ("different machines", ...) when the runs'
    machines or framework versions differ."""
    title = "## Throughput, configuration by configuration\n\n"
    if not rows:
        return title + f"No configuration measured in both {name_a} and {name_b}."
    table = [
        [
            c.config.framework,
            c.config.model,
            c.config.mode,
            c.config.precision,
            c.config.batch_size,
            sig3(c.baseline_img_s),
            sig3(c.candidate_img_s),
            f"{c.change:+.1%}",
            c.verdict,
        ]
        for c in rows
    ]
    counts = {v: sum(1 for c in rows if c.verdict == v) for v in ("regression", "improvement", "within spread")}
    headers = [
        "framework",
        "model",
        "mode",
        "precision",
        "batch",
        "baseline (img/s)",
        "candidate (img/s)",
        "change",
        "verdict",
    ]
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    caveat = f" The runs come from {setting}: a change may be theirs, not the code's." if setting else ""
    return (
        f"{title}{summary}. A change counts only when the two runs' window ranges do not overlap.{caveat}\n\n"
        + markdown_table(table, headers)
    )


# --- do two runs tell the same story about the engines? ------------------------------------------------

AGREEMENT = 0.15  # two runs' ratios for a cell "agree" when they are within 15% of each other


@dataclass(frozen=True)
class RatioConsistency:
    cells: int  # engine comparisons present in both runs
    opposed: list[str]  # one run says faster beyond its interval, the other slower beyond its own
    agreeing: int  # ratios within AGREEMENT of each other
    decided: tuple[int, int]  # comparisons whose interval lies beyond the noise margin, in each run
    total: tuple[int, int]  # comparisons in each run


def _engine_ratios(records: list[Record]) -> dict:
    from bench.report import tables

    ratios = {}
    for section in tables.sections(records):
        comparison = tables.compare_engines(tables.select(records, section))
        if comparison is None:
            continue
        for (engine, model, batch), ratio in comparison.ratios.items():
            ratios[(section.tag(), engine, model, batch)] = ratio
    return ratios


def ratio_consistency(run_a: list[Record], run_b: list[Record]) -> RatioConsistency:
    a, b = _engine_ratios(run_a), _engine_ratios(run_b)
    shared = sorted(set(a) & set(b))
    opposed = [
        f"{tag} {engine} {model} b={batch}: {a[k].words()} vs {b[k].words()}"
        for k in shared
        for tag, engine, model, batch in [k]
        if a[k].decided and b[k].decided and (a[k].ratio > 1) != (b[k].ratio > 1)
    ]
    agreeing = sum(1 for k in shared if abs(b[k].ratio / a[k].ratio - 1) <= AGREEMENT)
    decided = (sum(r.decided for r in a.values()), sum(r.decided for r in b.values()))
    return RatioConsistency(len(shared), opposed, agreeing, decided, (len(a), len(b)))


def render_consistency(result: RatioConsistency, setting: str | None = None) -> str:
    """On one machine, opposed cells are contradictions; where the machines (or framework versions) differ
    they are labelled by that difference instead: the runs need not agree."""
    if not result.cells:
        return "No engine comparison appears in both runs."
    if setting:
        opposed = (
            f"- opposite verdicts (faster beyond the interval in one run, slower beyond it in the other), "
            f"{setting}: {len(result.opposed)}"
        )
        label = setting
    else:
        opposed = (
            "- contradictions (faster beyond the interval in one run, slower beyond it in the other): "
            f"{len(result.opposed)}"
        )
        label = "contradiction"
    lines = [
        "## Engine ratios: do the two runs agree?",
        "",
        f"- comparisons in both runs: {result.cells}",
        opposed,
        f"- ratios within {AGREEMENT:.0%} of each other: {result.agreeing} of {result.cells} "
        f"({result.agreeing / result.cells:.0%})",
        f"- decided (interval beyond the noise margin): {result.decided[0]} of {result.total[0]} in the baseline run "
        f"({result.decided[0] / max(result.total[0], 1):.0%}), {result.decided[1]} of {result.total[1]} in the "
        f"candidate ({result.decided[1] / max(result.total[1], 1):.0%})",
    ]
    lines += [f"  - {label}: {c}" for c in result.opposed]
    return "\n".join(lines)


# --- which machines made the two runs ------------------------------------------------------------------

# The versions a record's env names, by engine: its framework_version and, for the Keras engines, Keras's.
VERSION_KEYS = {
    "torch": (("torch", "framework_version"),),
    "keras-tensorflow": (("tensorflow", "framework_version"), ("keras", "keras_version")),
    "keras-jax": (("jax", "framework_version"), ("keras", "keras_version")),
}
VERSION_ORDER = ("torch", "tensorflow", "jax", "keras")
HARDWARE_FIELDS = (("CPU model", "cpu_model"), ("core count", "cpu_cores"), ("GPU names", "gpus"))


@dataclass(frozen=True)
class Machine:
    """What made a run: its hardware (as `bench merge` judges it) and the framework versions its records saw."""

    cpu_model: str | None  # None: not recorded
    cpu_cores: int | None
    gpus: tuple[str, ...] | None  # the GPUs its records saw; None for a run without records
    versions: dict = field(default_factory=dict)  # "torch" -> "2.13.0+cpu" (several joined by ", ")


def machine(env: dict, records: list[Record]) -> Machine:
    from bench.store.records import hardware

    found = defaultdict(set)
    for r in records:
        for name, key in VERSION_KEYS.get(r.framework, ()):
            if r.env.get(key):
                found[name].add(str(r.env[key]))
    versions = {name: ", ".join(sorted(found[name])) for name in VERSION_ORDER if name in found}
    hw = hardware(env, records)
    return Machine(hw["cpu_model"], hw["cpu_cores"], tuple(hw["gpus"]) if records else None, versions)


def _shown(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, tuple):
        return repr(", ".join(value)) if value else "none"
    return repr(value) if isinstance(value, str) else str(value)


def hardware_differences(a: Machine, b: Machine) -> list[str]:
    """'CPU model differs: 'Intel Xeon' vs 'AMD EPYC 7B13'', one sentence per hardware field that both runs
    recorded and that differs (a field one run did not record is named by `unrecorded`)."""
    out = []
    for label, name in HARDWARE_FIELDS:
        if None not in (getattr(a, name), getattr(b, name)) and getattr(a, name) != getattr(b, name):
            verb = "differ" if label.endswith("names") else "differs"
            out.append(f"{label} {verb}: {_shown(getattr(a, name))} vs {_shown(getattr(b, name))}")
    return out


def unrecorded(a: Machine, b: Machine) -> list[str]:
    """The hardware fields a run did not record: 'CPU model (baseline)'."""
    return [
        f"{label} ({role})"
        for label, name in HARDWARE_FIELDS
        for role, m in (("baseline", a), ("candidate", b))
        if getattr(m, name) is None
    ]


def version_differences(a: Machine, b: Machine) -> list[str]:
    """One sentence per framework whose version differs between runs that both used it."""
    return [
        f"{name} version differs: {a.versions[name]!r} vs {b.versions[name]!r}"
        for name in VERSION_ORDER
        if name in a.versions and name in b.versions and a.versions[name] != b.versions[name]
    ]


def setting_of(hardware: list[str], versions: list[str]) -> str | None:
    """How two runs' settings differ, in two words, or None where they match."""
    if hardware:
        return "different machines"
    if versions:
        return "different framework versions"
    return None


def render_machines(a: Machine, b: Machine, name_a: str, name_b: str) -> str:
    rows = [
        ["run", name_a, name_b],
        ["CPU model", a.cpu_model or "not recorded", b.cpu_model or "not recorded"],
        ["CPU cores", _cell(a.cpu_cores), _cell(b.cpu_cores)],
        ["GPUs", _gpus(a.gpus), _gpus(b.gpus)],
    ]
    for name in VERSION_ORDER:
        if name in a.versions or name in b.versions:
            rows.append([name, a.versions.get(name, "—"), b.versions.get(name, "—")])
    table = markdown_table(rows, ["", "baseline", "candidate"])
    hardware, versions = hardware_differences(a, b), version_differences(a, b)
    setting = setting_of(hardware, versions)
    if setting is None:
        verdict = "Same hardware (CPU model, core count, GPU names) and framework versions in both runs."
        if unrecorded(a, b):
            verdict = "No recorded difference in hardware (CPU model, core count, GPU names) or framework versions."
    else:
        verdict = f"**The runs come from {setting}**: " + "; ".join(hardware + versions) + "."
    missing = unrecorded(a, b)
    if missing:
        verdict += f" Not recorded, so not compared: {', '.join(missing)}."
    return f"## Machines\n\n{table}\n\n{verdict}"


def _gpus(gpus) -> str:
    return "not recorded" if gpus is None else (", ".join(gpus) or "none")


def _cell(value) -> str:
    return "not recorded" if value is None else str(value)


# --- the command: load, decide the gate, then write --------------------------------------------------


@dataclass(frozen=True)
class LoadedRun:
    path: Path
    records: list[Record]
    env: dict
    problems: tuple[str, ...] = ()  # why it is not a run the gate can judge by (it then has no records)


def _kind(path: Path) -> str:
    if path.is_symlink():
        target = os.readlink(path)
        return f"a link to {target}" + ("" if path.exists() else ", which does not exist")
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def load_run(path: Path, role: str) -> LoadedRun:
    """A run to compare. A folder that is not a run at all (no plan.json, no results.jsonl: empty, a profile, a
    scaling study) is refused (UsageError, exit 2). A run that recorded nothing, or a results.jsonl that is not
    a regular file (a link to /dev/null, a pipe), is not read: it loads as no records, with the reason the gate
    fails on (exit 1)."""
    from bench.report.run import load_source

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{path} does not exist")
    results = path / "results.jsonl" if path.is_dir() else (path if path.suffix == ".jsonl" else None)
    if results is not None:
        if not results.exists() and not results.is_symlink():
            if not (path / "plan.json").exists():
                load_source(path)  # not a run folder at all: refused (exit 2), nothing written
            what = "a run that recorded nothing (a plan.json, no results.jsonl)"
            return LoadedRun(path, [], {}, (f"the {role} {path} is {what}",))
        if not results.exists() or not stat.S_ISREG(results.stat().st_mode):  # a dangling link, /dev/null, a pipe
            return LoadedRun(path, [], {}, (f"the {role}'s {results} is not a regular file ({_kind(results)})",))
    source = load_source(path)
    return LoadedRun(path, source.records, source.env)


def compare_command(
    run_a: str,
    run_b: str,
    threshold: float | None,
    allow_other_hardware: bool = False,
    out: str | None = None,
    html: bool = False,
) -> int:
    """`bench compare`: both runs' machines first, then the tables. With a gate, runs from other hardware
    or framework versions are refused (UsageError, exit 2) unless allowed; the gate is decided before
    compare.md is written, and a failed write is reported after it (exit 1)."""
    base, cand = load_run(Path(run_a), "baseline"), load_run(Path(run_b), "candidate")
    machine_a, machine_b = machine(base.env, base.records), machine(cand.env, cand.records)
    hardware, versions = hardware_differences(machine_a, machine_b), version_differences(machine_a, machine_b)
    setting = setting_of(hardware, versions)
    header = f"# Comparison: {run_b} against {run_a}\n\n" + render_machines(machine_a, machine_b, run_a, run_b)
    if threshold is not None and setting and not allow_other_hardware:
        print(header)
        raise UsageError(
            f"the runs come from {setting}, so the regression gate cannot judge them: "
            + "; ".join(hardware + versions)
            + ". Compare anyway with --allow-other-hardware (the output then says which fields differ)"
        )
    rows = compare_runs(base.records, cand.records)
    text = "\n\n".join(
        [
            header,
            render_comparison(rows, run_a, run_b, setting),
            render_consistency(ratio_consistency(base.records, cand.records), setting),
        ]
    )
    reasons = None
    if threshold is not None:
        problems = [*base.problems, *cand.problems]
        judged = gate_failures(base.records, cand.records, rows, threshold)
        roles = [role for role, run in (("baseline", base), ("candidate", cand)) if run.problems]
        reasons = problems + [r for r in judged if not any(r.startswith(f"the {role} has no") for role in roles)]
    print(text)
    if threshold is None:
        for problem in [*base.problems, *cand.problems]:
            print(f"warning: {problem}", file=sys.stderr)
    elif reasons:
        print("regression gate FAILED:\n- " + "\n- ".join(reasons), file=sys.stderr)
    else:
        other = f" (runs from {setting}, allowed: {'; '.join(hardware + versions)})" if setting else ""
        print(f"regression gate passed: {len(rows)} configuration(s) compared{other}", file=sys.stderr)
    target = Path(out) if out else (Path(run_b) if Path(run_b).is_dir() else Path(run_b).parent) / "compare.md"
    try:
        from bench.store.atomic import write_text

        write_text(target, text + "\n")
        if html:
            from bench.report.html import compare_page

            page = compare_page(text, f"Comparison: {run_b} against {run_a}", base.records, cand.records)
            write_text(target.with_suffix(".html"), page)
    except OSError as error:
        print(
            f"error: cannot write {target}: {error.strerror or error}; the comparison is printed above", file=sys.stderr
        )
        return 1
    return 1 if reasons else 0
