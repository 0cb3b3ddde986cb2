"""Findings: what a run found, ranked, each with the evidence from the same run that explains it.

Pure functions from records to sentences; the report and the console open with them. A finding is an engine
comparison whose 95% interval lies beyond the noise margin (tables.compare_engines), ranked by the size of the
effect. Its evidence is what the run measured beside it: each engine's cores kept busy (a CPU) or GPU
utilisation, PyTorch's memory format, and, where the explain pass ran (Settings.explain), the operator
categories of each engine's step: which categories make the gap between the two step times, and whether the
categories add up to the measured gap within GAP_TOLERANCE (a profiled step is not the timed one: when they do
not add up, the finding says so). Comparisons inside the noise are grouped in one line, as are those whose
interval excludes 1 but not the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.measure.stats import Ratio
from bench.report import tables
from bench.store.records import Record

GAP_TOLERANCE = 0.15  # the categories' differences must come within this of the measured step-time gap
TOP_CATEGORIES = 2  # the categories named as making a gap


@dataclass(frozen=True)
class Finding:
    section: str
    model: str
    batch: int
    engine: str
    baseline: str
    ratio: Ratio
    evidence: tuple[str, ...]
    adds_up: bool | None  # the categories' differences against the measured gap; None: not profiled
    inside_interval: bool = False  # they do not add up within GAP_TOLERANCE but fall inside the gap's 95% interval
    # The windows' own 95% interval of the gap lies within GAP_TOLERANCE of it: only then can any separate pass be
    # expected to land within GAP_TOLERANCE of the gap the windows measured.
    gap_measured_within: bool = False

    @property
    def effect(self) -> float:
        return abs(math.log(self.ratio.ratio))

    def sentence(self) -> str:
        speed = f"{self.ratio.ratio:.2f}x faster" if self.ratio.ratio >= 1 else f"{1 / self.ratio.ratio:.2f}x slower"
        interval = f"[{self.ratio.low:.2f}-{self.ratio.high:.2f}]" if self.ratio.low is not None else "[no interval]"
        return (
            f"**{self.model} {self.section}, b={self.batch}**: {self.engine} is {speed} than {self.baseline} {interval}"
        )


@dataclass(frozen=True)
class Findings:
    decided: list[Finding]
    same: list[str]  # "model section b=N" of comparisons whose interval holds 1
    not_called: list[str]  # interval excludes 1 but reaches inside the margin
    explain_s: float  # wall seconds the explain passes took, over the run's records
    profiled: int  # decided findings with categories on both sides

    @property
    def adding_up(self) -> int:
        return sum(1 for f in self.decided if f.adds_up)

    @property
    def inside_interval(self) -> int:
        return sum(1 for f in self.decided if f.inside_interval)

    @property
    def gaps_measured_within(self) -> int:
        """Profiled findings whose gap the windows themselves measured to within GAP_TOLERANCE."""
        return sum(1 for f in self.decided if f.adds_up is not None and f.gap_measured_within)


def _step_ms(record: Record) -> float:
    return record.batch_size / record.throughput_img_s * 1e3


def _usage(record: Record) -> str | None:
    if record.device == "cuda":
        return None if record.gpu_util_pct_mean is None else f"GPU busy {record.gpu_util_pct_mean:.0f}%"
    return None if record.cpu_util_cores is None else f"{record.cpu_util_cores:.2f} cores busy"


def gap_interval(base: Record, ratio: Ratio) -> tuple[float, float] | None:
    """The 95% interval of the step-time gap (slower minus faster, ms) from the paired ratio's interval, on the
    baseline's step: the gap the categories are checked against is itself measured to within this."""
    if ratio.low is None or ratio.high is None:
        return None
    step = _step_ms(base)
    if ratio.ratio > 1:  # the other engine is the faster
        return step * (1 - 1 / ratio.low), step * (1 - 1 / ratio.high)
    return step * (1 / ratio.high - 1), step * (1 / ratio.low - 1)


def gap_measured_within(fast: Record, slow: Record, interval: tuple[float, float] | None) -> bool:
    """Whether the gap's 95% interval lies within GAP_TOLERANCE of the measured gap (slower minus faster step)."""
    if interval is None:
        return False
    gap_ms = _step_ms(slow) - _step_ms(fast)
    low, high = sorted(abs(x) for x in interval)
    return gap_ms > 0 and low >= (1 - GAP_TOLERANCE) * gap_ms and high <= (1 + GAP_TOLERANCE) * gap_ms


def explain_gap(fast: Record, slow: Record, interval: tuple[float, float] | None = None) -> tuple[str, bool | None]:
    """Which operator categories make the gap between two engines' steps, from their explain passes; and
    whether the categories' differences add up to the measured gap within GAP_TOLERANCE (None when either was
    not profiled). Where they do not, the text says whether they fall inside the gap's own 95% `interval`."""
    text, adds_up, _ = _explain(fast, slow, interval)
    return text, adds_up


def _explain(fast: Record, slow: Record, interval: tuple[float, float] | None) -> tuple[str, bool | None, bool]:
    """explain_gap's text and verdict, and whether categories that do not add up fall inside `interval`."""
    missing = [r for r in (fast, slow) if not r.op_categories]
    if missing:
        reasons = [
            f"{tables.engine(r)}: {r.unavailable['op_categories']}" for r in missing if "op_categories" in r.unavailable
        ]
        return "operator categories: not profiled" + (f" ({'; '.join(reasons)})" if reasons else ""), None, False
    gap_ms = _step_ms(slow) - _step_ms(fast)
    categories = sorted(set(fast.op_categories) | set(slow.op_categories))
    differences = {c: (slow.op_categories.get(c, 0.0) - fast.op_categories.get(c, 0.0)) * 1e3 for c in categories}
    total_ms = sum(differences.values())
    parts = []
    for category in sorted(differences, key=differences.get, reverse=True)[:TOP_CATEGORIES]:
        if differences[category] <= 0:
            break
        a, b = fast.op_categories.get(category, 0.0) * 1e3, slow.op_categories.get(category, 0.0) * 1e3
        share = differences[category] / gap_ms if gap_ms > 0 else float("nan")
        if a > 0:
            what = f"{category} {b / a:.1f}x slower in {tables.engine(slow)} ({b:.3g} vs {a:.3g} ms per step)"
        else:
            what = f"{category} {b:.3g} ms per step in {tables.engine(slow)}, {a:.3g} in {tables.engine(fast)}"
        parts.append(f"{what}: {share:.0%} of the gap")
    adds_up = gap_ms > 0 and abs(total_ms - gap_ms) <= GAP_TOLERANCE * gap_ms
    check = f"the categories' differences add to {total_ms:.3g} of the {gap_ms:.3g} ms gap"
    inside = not adds_up and interval is not None and interval[0] <= total_ms <= interval[1]
    if not adds_up:
        span = f"{interval[0]:.3g}-{interval[1]:.3g} ms" if interval else "none"
        check += (
            f": not within {GAP_TOLERANCE:.0%}, but inside the gap's 95% interval ({span})"
            if inside
            else f": they do not account for it within {GAP_TOLERANCE:.0%} or the gap's 95% interval ({span})"
        )
    return ("; ".join(parts) or "no category is slower") + f" ({check})", adds_up, inside


def findings(records: list[Record]) -> Findings:
    decided, same, not_called = [], [], []
    for section in tables.sections(records):
        chosen = tables.select(records, section)
        comparison = tables.compare_engines(chosen)
        if comparison is None:
            continue
        by_slot = {(tables.engine(r), r.model, r.batch_size): r for r in chosen if r.ok}
        for (name, model, batch), ratio in comparison.ratios.items():
            where = f"{model} {section.title()} b={batch}"
            if not ratio.decided:
                inside = ratio.low is not None and ratio.high is not None and ratio.low <= 1.0 <= ratio.high
                (same if inside or ratio.low is None else not_called).append(where)
                continue
            base, other = by_slot[(comparison.baseline, model, batch)], by_slot[(name, model, batch)]
            fast, slow = (other, base) if ratio.ratio > 1 else (base, other)
            evidence = []
            usage = [f"{tables.engine(r)} {u}" for r in (base, other) if (u := _usage(r))]
            if usage:
                evidence.append(", ".join(usage))
            layouts = [f"{tables.engine(r)} ran {r.layout_chosen or r.layout}" for r in (base, other)
                       if r.framework == "torch" and (r.layout_chosen or r.layout)]  # fmt: skip
            evidence += layouts
            interval = gap_interval(base, ratio)
            why, adds_up, inside = _explain(fast, slow, interval)
            evidence.append(why)
            decided.append(Finding(section.title(), model, batch, name, comparison.baseline, ratio, tuple(evidence),
                                   adds_up, inside, gap_measured_within(fast, slow, interval)))  # fmt: skip
    decided.sort(key=lambda f: -f.effect)
    explain_s = sum(r.explain_s or 0.0 for r in records)
    profiled = sum(1 for f in decided if f.adds_up is not None)
    return Findings(decided, same, not_called, explain_s, profiled)


def render(result: Findings, wall_s: float | None = None, markdown: bool = True) -> list[str]:
    """The findings as lines: ranked decided comparisons with their evidence, then the grouped others."""
    lines = ["## Findings", ""] if markdown else ["Findings (ranked by effect):"]
    if not result.decided:
        lines.append("- No engine comparison is decided beyond the noise margin in this run.")
    for finding in result.decided:
        head = finding.sentence() if markdown else finding.sentence().replace("**", "")
        lines.append(f"- {head}. Why: " + "; ".join(finding.evidence) + ".")
    if result.same:
        lines.append(f"- Same within noise ({len(result.same)}): " + ", ".join(result.same) + ".")
    if result.not_called:
        lines.append(
            f"- Below the {tables.NOISE_MARGIN:.0%} margin, not called ({len(result.not_called)}): "
            + ", ".join(result.not_called) + "."
        )  # fmt: skip
    if result.profiled:
        cost = f"{result.explain_s:.3g} s" + (
            f", {result.explain_s / wall_s:.0%} of the run's wall time" if wall_s else ""
        )
        lines.append(
            f"- Operator categories (an untimed profiled pass after each cell's windows, {cost}) add up to the "
            f"measured gap within {GAP_TOLERANCE:.0%} in {result.adding_up} of {result.profiled} profiled findings"
            + (
                f"; in {result.inside_interval} more, inside the gap's own 95% interval"
                if result.inside_interval
                else ""
            )
            + f". The windows themselves measured {result.gaps_measured_within} of these {result.profiled} gaps to "
            f"within {GAP_TOLERANCE:.0%} (the gap's 95% interval inside it)"
            + (
                f"; in the other {result.profiled - result.gaps_measured_within} a separate pass cannot be held to "
                f"{GAP_TOLERANCE:.0%} of the gap."
                if result.gaps_measured_within < result.profiled
                else "."
            )
        )
    return lines + ([""] if markdown else [])
