"""Pure rendering helpers: number formatting, pivots of records, memory fits and sanity flags.

Functions from records (`Record`) to rows and strings; no I/O, no framework imports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from bench.measure import stats
from bench.measure.stats import Ratio, linear_fit, median_interval, paired_ratio, sequential_ratio
from bench.store.records import Record
from implementations import get_spec, list_models
from implementations.specs import FAMILY_ORDER

MIB = 1024 * 1024
STATUS_LABEL = {"oom": "OOM", "error": "error", "timeout": "timeout", "skipped": "skipped"}
BATCH_DROP_LIMIT = 0.7  # throughput at a larger batch below 70% of the smaller batch's is flagged


def sig3(value) -> str:
    """Three significant figures, thousands separated, '—' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if value == 0:
        return "0"
    digits = 3 - int(math.floor(math.log10(abs(value)))) - 1
    rounded = round(value, digits)
    if digits <= 0:
        return f"{int(rounded):,}"
    return f"{rounded:,.{digits}f}"


def model_order(names) -> list[str]:
    known = list_models()
    rank = {n: i for i, n in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def cell(record: Record | None, field: str = "throughput_img_s", scale: float = 1.0) -> str:
    if record is None:
        return "—"
    if record.status != "ok":
        return STATUS_LABEL[record.status]
    value = getattr(record, field)
    return sig3(value / scale if value is not None else None)


@dataclass(frozen=True)
class Section:
    """One table's worth of records: never mixes modes, precisions, compile settings, sizes or devices."""

    mode: str
    precision: str
    compile: str
    image_size: int
    device: str
    distinct_sizes: bool = False  # the run has several image sizes or devices: say which in titles and files

    def title(self) -> str:
        text = f"{self.mode}, {self.precision}" + (", compiled" if self.compile == "on" else "")
        return text + (f", {self.image_size} px, {self.device}" if self.distinct_sizes else "")

    def tag(self) -> str:
        text = f"{self.mode}_{self.precision}" + ("_compiled" if self.compile == "on" else "")
        return text + (f"_{self.image_size}px_{self.device}" if self.distinct_sizes else "")

    def holds(self, record: Record) -> bool:
        return (record.mode, record.precision, record.compile, record.image_size, record.device) == (
            self.mode, self.precision, self.compile, self.image_size, self.device,
        )  # fmt: skip


def sections(records: list[Record]) -> list[Section]:
    """The sections present, in a stable order (train before infer)."""
    seen = {(r.mode, r.precision, r.compile, r.image_size, r.device) for r in records}
    distinct = len({(size, device) for *_, size, device in seen}) > 1
    mode_rank = {"train": 0, "infer": 1}
    ordered = sorted(seen, key=lambda s: (mode_rank.get(s[0], 9), *s[1:]))
    return [Section(*key, distinct_sizes=distinct) for key in ordered]


def select(records, section: Section) -> list[Record]:
    return [r for r in records if section.holds(r)]


def throughput_pivot(records: list[Record], engine_name: str) -> tuple[list[str], list[list[str]]]:
    """Rows: models in depth order; columns: batch sizes; cells: img/s or the failure."""
    chosen = [r for r in records if engine(r) == engine_name]
    batches = sorted({r.batch_size for r in chosen})
    by_key = {(r.model, r.batch_size): r for r in chosen}
    rows = [[model] + [cell(by_key.get((model, b))) for b in batches] for model in model_order(r.model for r in chosen)]
    return ["model"] + [f"b={b} (img/s)" for b in batches], rows


BASELINE_ENGINE = "torch"
# A ratio is called faster or slower only when its whole 95% interval lies beyond 5% either way. The
# interval covers the noise within a run; between runs this CPU drifts too: in two back-to-back runs of
# the default preset a cell's ratio moved by 2.5% (median), under 5% in 13 of 16 cells.
NOISE_MARGIN = 0.05


def engine(record: Record) -> str:
    """An engine's name in tables: the framework, with PyTorch's layout when it was pinned."""
    if record.framework == "torch" and record.layout != "auto":
        return f"torch ({record.layout})"
    return record.framework


def engine_order(records: list[Record]) -> list[str]:
    """Engines present, baseline first, then in the order of FRAMEWORKS (PyTorch, Keras on TensorFlow, on JAX)."""
    from implementations import FRAMEWORKS

    def rank(name: str) -> tuple:
        framework = name.split()[0]
        known = FRAMEWORKS.index(framework) if framework in FRAMEWORKS else len(FRAMEWORKS)
        return (not name.startswith(BASELINE_ENGINE), known, name)

    return sorted({engine(r) for r in records}, key=rank)


def baseline_engine(records: list[Record]) -> str | None:
    names = engine_order(records)
    return names[0] if names else None


def window_rates(record: Record) -> list[float]:
    return list(record.window_throughputs_img_s or [])


def ratio_between(baseline: Record, other: Record) -> Ratio | None:
    """`other` against `baseline`: paired when their windows alternated in one cell, else sequential."""
    base, rates = window_rates(baseline), window_rates(other)
    if not base or not rates:
        return None
    same_cell = baseline.cell_id and baseline.cell_id == other.cell_id
    if same_cell and other.pairing == "interleaved" and len(base) == len(rates):
        return paired_ratio(base, rates, margin=NOISE_MARGIN)
    return sequential_ratio(base, rates, margin=NOISE_MARGIN)


@dataclass(frozen=True)
class Comparison:
    """Every other engine against the baseline engine, per (model, batch) of one section."""

    baseline: str
    ratios: dict  # (engine, model, batch) -> Ratio
    failures: dict  # (engine, model, batch) -> text naming what failed


def compare_engines(records: list[Record]) -> Comparison | None:
    baseline = baseline_engine(records)
    if baseline is None or len(engine_order(records)) < 2:
        return None
    slots: dict[tuple, dict[str, Record]] = defaultdict(dict)
    for r in records:
        slots[(r.model, r.batch_size)][engine(r)] = r
    ratios, failures = {}, {}
    for (model, batch), slot in slots.items():
        base = slot.get(baseline)
        for name, r in slot.items():
            if name == baseline:
                continue
            key = (name, model, batch)
            broken = [
                f"{e} {STATUS_LABEL.get(x.status, x.status)}"
                for e, x in ((baseline, base), (name, r))
                if x and x.status != "ok"
            ]
            if base is None:
                failures[key] = f"no {baseline} record"
            elif broken:
                failures[key] = ", ".join(broken)
            else:
                ratio = ratio_between(base, r)
                if ratio is None:
                    failures[key] = "no windows"
                else:
                    ratios[key] = ratio
    return Comparison(baseline, ratios, failures)


def comparison_table(records: list[Record], comparison: Comparison, other: str) -> tuple[list[str], list[list[str]]]:
    """Rows: models; columns: batch sizes; cells: '1.23x faster [1.10-1.35]' or 'same within noise [...]'."""
    chosen = [r for r in records if engine(r) in (other, comparison.baseline)]
    batches = sorted({r.batch_size for r in chosen})
    rows = []
    for model in model_order(r.model for r in chosen):
        row = [model]
        for b in batches:
            key = (other, model, b)
            row.append(
                comparison.ratios[key].words() if key in comparison.ratios else comparison.failures.get(key, "—")
            )
        rows.append(row)
    return [f"{other} vs {comparison.baseline}"] + [f"b={b}" for b in batches], rows


def memory_fit(points: list[tuple[int, int]]) -> tuple[float, float] | None:
    """Fit peak bytes = fixed + per_image * batch; returns (fixed MiB, MiB per image)."""
    fit = linear_fit([b for b, _ in points], [m for _, m in points])
    if fit is None:
        return None
    return fit[0] / MIB, fit[1] / MIB


def depth_key(model: str) -> tuple:
    spec = get_spec(model)
    return (FAMILY_ORDER.index(spec.family) if spec.family in FAMILY_ORDER else 99, spec.depth)


@dataclass(frozen=True)
class Flag:
    kind: str  # the check that tripped, a group heading
    severity: float  # how far past the check: ranks flags within and across groups
    text: str
    record: Record


# A record is flagged as uncertain when the 95% interval of its median throughput reaches more than
# UNCERTAIN_LIMIT from the median on either side (below 6 windows: the windows' range, which covers the median
# with probability 1 - 2/2^n, 94% for 5). Calibrated on the committed runs: over the 120 records of the four
# cpu-default runs the reach is 4.5% at the median, 8.2% at the 75th percentile and 12.8% at the 90th; 9
# records pass 15% (2, 1, 0 and 6 per run: 6%, 3%, 0% and 19% of each), 7 of them by 27-51% (six PyTorch VGG
# training records, whose windows drop to half speed in bursts, and one Keras ResNet-32 training record). The
# CV is not the test: above 5% it fired on 26 of the 32 records of the 1.5-2x slower run, and a CV of 23% (one
# slow window in ten) left a median known within 7%. 15% is three times the noise margin a comparison must
# clear. A warm-up that reached its time cap is named in this flag, not flagged alone: the windows are its
# test, and 3 of the 5 such records of the committed runs have medians known within 15% (1.5%, 8.4%, 14%).
UNCERTAIN_LIMIT = 0.15


def median_uncertainty(record: Record) -> tuple[float, float, float, str] | None:
    """(low, high, reach, basis) of a record's median throughput: its 95% interval from the windows
    (six or more), else the range of its windows; reach is the larger relative distance from the median.
    None with fewer than two windows."""
    rates = window_rates(record)
    if len(rates) < 2 or not record.throughput_img_s:
        return None
    interval = median_interval(rates)
    if interval is None:
        interval, basis = (min(rates), max(rates)), f"the range of its {len(rates)} windows"
    else:
        basis = "95% interval of the median"
    low, high = interval
    median = record.throughput_img_s
    return low, high, max(high / median - 1, 1 - low / median), basis


FLAG_KINDS = {
    "uncertain": f"throughput uncertain by more than {UNCERTAIN_LIMIT:.0%} (the median's 95% interval, or the windows' "
    "range under 6 windows)",
    "depth": "a deeper model faster than a shallower one, beyond both intervals",
    "batch": f"throughput per image below {BATCH_DROP_LIMIT:.0%} of a smaller batch's, beyond both intervals",
    "memory": "memory below the weights bound (a measurement error: the figure is withheld)",
}


def _cell_comparisons(records: list[Record]) -> dict:
    """(section tag, model, batch) -> [(engine, baseline engine, Ratio)] for every engine comparison."""
    cells = defaultdict(list)
    for section in sections(records):
        comparison = compare_engines(select(records, section))
        if comparison is None:
            continue
        for (name, model, batch), ratio in comparison.ratios.items():
            cells[(section.tag(), model, batch)].append((name, comparison.baseline, ratio))
    return cells


def _what_it_changes(record: Record, cells: dict, section_tag: str) -> str:
    """What an uncertain figure does to its cell's engine comparisons."""
    own = [
        (name, base, ratio)
        for name, base, ratio in cells.get((section_tag, record.model, record.batch_size), [])
        if engine(record) in (name, base)
    ]
    if not own:
        return "no engine comparison uses it"
    parts = []
    for name, base, ratio in own:
        state = "decided all the same" if ratio.decided else "not decided"
        parts.append(f"{name} vs {base}: {state} ({ratio.words()})")
    return ("its comparison " if len(parts) == 1 else "its comparisons ") + "; ".join(parts)


def _interval_text(u) -> str:
    return f"{sig3(u[0])}-{sig3(u[1])} img/s"


# A run whose windows' median CV passes this (twice the noise margin), or more than a quarter of whose medians are
# uncertain by more than UNCERTAIN_LIMIT, ran on a noisy machine: the report says so above its tables rather than
# leave it to a flag on many records (the EPYC run of 2026-12-04: 6.4% median CV, 9 of 32 uncertain). The committed Intel Xeon default runs: 2.6% median CV, 1 record
# of 32 flagged; the AMD EPYC run of 2026-12-03: 12.4%, 17 of 32.
NOISY_RUN_CV = 0.10


def noisy_run(records: list[Record], flags: list[Flag]) -> str | None:
    """The report's line for a noisy run: how many medians are uncertain, the windows' median CV; else None."""
    cvs = [r.throughput_cv for r in records if r.status == "ok" and r.throughput_cv is not None]
    if not cvs:
        return None
    median_cv = stats.median(cvs)
    uncertain = len({id(f.record) for f in flags if f.kind == "uncertain"})
    if median_cv <= NOISY_RUN_CV and 4 * uncertain <= len(records):
        return None
    why = (
        f"the windows' median CV is {median_cv:.1%}, above the {NOISY_RUN_CV:.0%} this report calls noisy"
        if median_cv > NOISY_RUN_CV
        else f"more than a quarter of them, though the windows' median CV is {median_cv:.1%}"
    )
    return (
        f"{uncertain} of {len(records)} records' throughput is uncertain by more than {UNCERTAIN_LIMIT:.0%} ({why}): "
        "read this run's figures by their intervals; a decided comparison stands, its interval clear of the margin"
    )


def sanity_flags(records: list[Record]) -> list[Flag]:
    """Records a reader should distrust, each with what it changes, most severe first."""
    flags = []
    ok = [r for r in records if r.status == "ok" and r.throughput_img_s]
    cells = _cell_comparisons(ok)
    tags = {id(r): s.tag() for s in sections(ok) for r in select(ok, s)}
    uncertainty = {id(r): median_uncertainty(r) for r in ok}
    for r in ok:
        u = uncertainty[id(r)]
        if u is not None and u[2] > UNCERTAIN_LIMIT:
            cv = f"CV {r.throughput_cv:.1%}; " if r.throughput_cv is not None else ""
            warm = (
                f"; its warm-up stopped at the time cap after {r.warmup_steps_run} steps, before the step time settled"
                if r.warmup_steady is False
                else ""
            )
            flags.append(Flag("uncertain", u[2] / UNCERTAIN_LIMIT, (
                f"{_name(r)}: {cv}{sig3(r.throughput_img_s)} img/s is uncertain by up to {u[2]:.0%} "
                f"({u[3]}: {_interval_text(u)}){warm}; {_what_it_changes(r, cells, tags[id(r)])}"
            ), r))  # fmt: skip
        withheld = {k: v for k, v in r.unavailable.items() if k.startswith("peak_memory") and "bound" in v}
        for field, reason in withheld.items():
            flags.append(Flag("memory", 2.0, (
                f"{_name(r)}: {field} {reason.split(':')[0]}; the memory table shows `below bound` and its "
                "fit leaves this batch out"
            ), r))  # fmt: skip

    def beyond(fast: Record, slow: Record) -> bool:
        """`fast` is faster than `slow` beyond both intervals (by the point values where one has none)."""
        uf, us = uncertainty[id(fast)], uncertainty[id(slow)]
        if uf is None or us is None:
            return fast.throughput_img_s > slow.throughput_img_s
        return uf[0] > us[1]

    groups = defaultdict(list)
    for r in ok:
        groups[(engine(r), r.family, r.batch_size, r.mode, r.precision, r.compile, r.image_size)].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.depth)
        for shallow, deep in zip(group, group[1:]):
            if deep.depth > shallow.depth and beyond(deep, shallow):
                ratio = deep.throughput_img_s / shallow.throughput_img_s
                flags.append(Flag("depth", ratio, (
                    f"{_name(deep)}: {sig3(deep.throughput_img_s)} img/s vs {shallow.model}'s "
                    f"{sig3(shallow.throughput_img_s)}, although deeper; the depth-scaling table cannot be read "
                    "for this pair"
                ), deep))  # fmt: skip
    series = defaultdict(list)
    for r in ok:
        series[(engine(r), r.model, r.mode, r.precision, r.compile, r.image_size)].append(r)
    for runs in series.values():
        runs.sort(key=lambda r: r.batch_size)
        largest = runs[-1].batch_size if runs else None
        for small, large in zip(runs, runs[1:]):
            share = large.throughput_img_s / small.throughput_img_s
            if share < BATCH_DROP_LIMIT and beyond(small, large):
                consequence = (
                    f"b={large.batch_size} is not this engine's best batch: the largest-batch tables (utilization, depth "
                    "scaling) understate it"
                    if large.batch_size == largest
                    else "the batch-scaling curve turns down here"
                )
                flags.append(Flag("batch", 1 / share, (
                    f"{_name(large)}: {share:.0%} of batch {small.batch_size}'s img/s; {consequence}"
                ), large))  # fmt: skip
    flags += memory_flags(ok)
    return sorted(flags, key=lambda f: -f.severity)


# --- memory: what a table may show, and what contradicts itself -------------------------------------------
MEMORY_DROP_LIMIT = 0.05  # a peak more than 5% below a smaller batch's is flagged (repeats agree within 3%)
FLAG_KINDS.update(
    memory_device="GPU peak above the device memory in use (NVML) in the same windows (the figure is withheld)",
    memory_batch=f"peak memory more than {MEMORY_DROP_LIMIT:.0%} below a smaller batch's",
)


def peak_memory(record: Record) -> tuple[int | None, str | None]:
    """The peak memory a table may show, or None and why it is withheld. Withheld when measured: a peak
    below the weights bound. Withheld here, so older runs are covered too: on a GPU, an allocator peak
    above the most memory NVML saw in use on the device during the same windows. The allocator's bytes
    lie inside the device's used memory (the caching allocator keeps what it reserved), so a larger
    peak is a measurement error, not a result."""
    peak = record.peak_memory_bytes
    if peak is None:
        return None, record.unavailable.get("peak_memory_bytes")
    used = record.nvml_memory_used_bytes
    if record.device == "cuda" and used is not None and peak > used:
        return None, (
            f"allocator peak {sig3(peak / MIB)} MiB above the {sig3(used / MIB)} MiB NVML saw in use on the "
            "device during the same windows: a measurement error, not a result"
        )
    return peak, None


def memory_flags(records: list[Record]) -> list[Flag]:
    """Peaks withheld for exceeding the device's memory in use, and peaks that fall as the batch grows
    (same engine, model, mode, precision, compile setting, size and device; shown peaks only)."""
    flags = []
    series = defaultdict(list)
    for r in records:
        peak, reason = peak_memory(r)
        if peak is None and r.peak_memory_bytes is not None:
            flags.append(Flag("memory_device", 2.0 * r.peak_memory_bytes / r.nvml_memory_used_bytes,
                              f"{_name(r)}: {reason.split(':')[0]}; the peak is withheld", r))  # fmt: skip
        elif peak is not None:
            series[(engine(r), r.model, r.mode, r.precision, r.compile, r.image_size, r.device)].append((r, peak))
    for runs in series.values():
        runs.sort(key=lambda item: item[0].batch_size)
        for (small, small_peak), (large, large_peak) in zip(runs, runs[1:]):
            if large_peak < (1 - MEMORY_DROP_LIMIT) * small_peak:
                text = (
                    f"{_name(large)}: {sig3(large_peak / MIB)} MiB, below batch {small.batch_size}'s "
                    f"{sig3(small_peak / MIB)} MiB; this series' fixed + per-image fit cannot be read"
                )
                flags.append(Flag("memory_batch", small_peak / large_peak, text, large))
    return flags


def grouped_flags(flags: list[Flag]) -> list[tuple[str, list[Flag]]]:
    """Flags by kind, the largest group first; each group most severe first."""
    groups: dict[str, list[Flag]] = defaultdict(list)
    for flag in flags:
        groups[flag.kind].append(flag)
    return sorted(((FLAG_KINDS[k], v) for k, v in groups.items()), key=lambda kv: -len(kv[1]))


def _name(r: Record) -> str:
    extra = " compiled" if r.compile == "on" else ""
    return f"{engine(r)} {r.model} {r.mode} b={r.batch_size} {r.precision} {r.image_size}px{extra}"
