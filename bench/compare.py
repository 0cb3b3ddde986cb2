"""Compare two runs configuration by configuration; pure functions from records to rows and text."""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from .config import Config
from .records import Record
from .tables import sig3


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
    if not any(r.status == "ok" for r in candidate):
        reasons.append(f"the candidate has no successful measurement ({len(candidate)} record(s))")
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


def _config_name(c: Config) -> str:
    return f"{c.framework} {c.model} {c.mode} b={c.batch_size} {c.precision} {c.layout} {c.image_size}px"


def _names(records: list[Record], with_status: bool = False, limit: int = 10) -> str:
    names = [_config_name(r.config) + (f" ({r.status})" if with_status else "") for r in records[:limit]]
    return "; ".join(names) + (" ..." if len(records) > limit else "")


def render_comparison(rows: list[Change], name_a: str, name_b: str) -> str:
    if not rows:
        return f"No configuration measured in both {name_a} and {name_b}."
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
    return (
        f"# Comparison: {name_b} against {name_a}\n\n{summary}. A change counts only when the two runs' window ranges "
        "do not overlap.\n\n" + tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    )


# --- do two runs tell the same story about the engines? ------------------------------------------------

AGREEMENT = 0.15  # two runs' ratios for a cell "agree" when they are within 15% of each other


@dataclass(frozen=True)
class RatioConsistency:
    cells: int  # engine comparisons present in both runs
    contradictions: list[str]  # one run says faster beyond its interval, the other slower beyond its own
    agreeing: int  # ratios within AGREEMENT of each other
    decided: tuple[int, int]  # comparisons whose interval lies beyond the noise margin, in each run
    total: tuple[int, int]  # comparisons in each run


def _engine_ratios(records: list[Record]) -> dict:
    from . import tables

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
    contradictions = [
        f"{tag} {engine} {model} b={batch}: {a[k].words()} vs {b[k].words()}"
        for k in shared
        for tag, engine, model, batch in [k]
        if a[k].decided and b[k].decided and (a[k].ratio > 1) != (b[k].ratio > 1)
    ]
    agreeing = sum(1 for k in shared if abs(b[k].ratio / a[k].ratio - 1) <= AGREEMENT)
    decided = (sum(r.decided for r in a.values()), sum(r.decided for r in b.values()))
    return RatioConsistency(len(shared), contradictions, agreeing, decided, (len(a), len(b)))


def render_consistency(result: RatioConsistency) -> str:
    if not result.cells:
        return "No engine comparison appears in both runs."
    lines = [
        "## Engine ratios: do the two runs agree?",
        "",
        f"- comparisons in both runs: {result.cells}",
        f"- contradictions (faster beyond the interval in one run, slower beyond it in the other): "
        f"{len(result.contradictions)}",
        f"- ratios within {AGREEMENT:.0%} of each other: {result.agreeing} of {result.cells} "
        f"({result.agreeing / result.cells:.0%})",
        f"- decided (interval beyond the noise margin): {result.decided[0]} of {result.total[0]} in the baseline run "
        f"({result.decided[0] / max(result.total[0], 1):.0%}), {result.decided[1]} of {result.total[1]} in the "
        f"candidate ({result.decided[1] / max(result.total[1], 1):.0%})",
    ]
    lines += [f"  - {c}" for c in result.contradictions]
    return "\n".join(lines)
