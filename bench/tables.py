"""Pure rendering helpers: number formatting, pivots of records, memory fits and sanity flags.

Functions from records (plain dicts) to rows and strings; no I/O, no framework imports.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from implementations import get_spec, list_models
from implementations.specs import FAMILY_ORDER

from .stats import linear_fit

MIB = 1024 * 1024
STATUS_LABEL = {"oom": "OOM", "error": "error", "timeout": "timeout", "skipped": "skipped"}
CV_LIMIT = 0.05
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


def ratio_words(ratio: float | None) -> str:
    """'1.23x faster' / '1.10x slower' / 'same' for a throughput ratio."""
    if ratio is None:
        return "—"
    if abs(ratio - 1.0) < 0.005:
        return "same"
    return f"{ratio:.2f}x faster" if ratio > 1 else f"{1 / ratio:.2f}x slower"


def model_order(names) -> list[str]:
    known = list_models()
    rank = {n: i for i, n in enumerate(known)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def cell(record: dict | None, field: str = "throughput_img_s", scale: float = 1.0) -> str:
    if record is None:
        return "—"
    if record["status"] != "ok":
        return STATUS_LABEL[record["status"]]
    value = record.get(field)
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

    def holds(self, record: dict) -> bool:
        return (record["mode"], record["precision"], record["compile"], record["image_size"], record["device"]) == (
            self.mode, self.precision, self.compile, self.image_size, self.device,
        )  # fmt: skip


def sections(records: list[dict]) -> list[Section]:
    """The sections present, in a stable order (train before infer)."""
    seen = {(r["mode"], r["precision"], r["compile"], r["image_size"], r["device"]) for r in records}
    distinct = len({(size, device) for *_, size, device in seen}) > 1
    mode_rank = {"train": 0, "infer": 1}
    ordered = sorted(seen, key=lambda s: (mode_rank.get(s[0], 9), *s[1:]))
    return [Section(*key, distinct_sizes=distinct) for key in ordered]


def select(records, section: Section) -> list[dict]:
    return [r for r in records if section.holds(r)]


def throughput_pivot(
    records: list[dict], framework: str, layout: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Rows: models in depth order; columns: batch sizes; cells: img/s or the failure."""
    chosen = [r for r in records if r["framework"] == framework and (layout is None or r["layout"] == layout)]
    batches = sorted({r["batch_size"] for r in chosen})
    by_key = {(r["model"], r["batch_size"]): r for r in chosen}
    rows = [
        [model] + [cell(by_key.get((model, b))) for b in batches] for model in model_order(r["model"] for r in chosen)
    ]
    return ["model"] + [f"b={b} (img/s)" for b in batches], rows


def paired(records: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(model, batch) -> {framework: record}, taking PyTorch's fastest layout for the pairing."""
    pairs: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        slot = pairs[(r["model"], r["batch_size"])]
        current = slot.get(r["framework"])
        if current is None or (
            r["status"] == "ok" and (current["status"] != "ok" or r["throughput_img_s"] > current["throughput_img_s"])
        ):
            slot[r["framework"]] = r
    return pairs


def framework_ratio(records: list[dict]) -> tuple[list[str], list[list[str]], dict[tuple, float]]:
    """TensorFlow relative to PyTorch per model and batch, worded as 'faster'/'slower'."""
    pairs = paired(records)
    batches = sorted({b for _, b in pairs})
    ratios = {}
    for key, slot in pairs.items():
        t, k = slot.get("torch"), slot.get("tensorflow")
        if t and k and t["status"] == "ok" and k["status"] == "ok" and t["throughput_img_s"]:
            ratios[key] = k["throughput_img_s"] / t["throughput_img_s"]
    models = model_order(m for m, _ in pairs)
    rows = []
    for model in models:
        row = [model]
        for b in batches:
            slot = pairs.get((model, b), {})
            if (model, b) in ratios:
                row.append(ratio_words(ratios[(model, b)]))
            elif slot:
                failed = [
                    f"{fw} {STATUS_LABEL.get(r['status'], r['status'])}"
                    for fw, r in slot.items()
                    if r["status"] != "ok"
                ]
                row.append(", ".join(failed) or "—")
            else:
                row.append("—")
        rows.append(row)
    return ["TensorFlow vs PyTorch"] + [f"b={b}" for b in batches], rows, ratios


def memory_fit(points: list[tuple[int, int]]) -> tuple[float, float] | None:
    """Fit peak bytes = fixed + per_image * batch; returns (fixed MiB, MiB per image)."""
    fit = linear_fit([b for b, _ in points], [m for _, m in points])
    if fit is None:
        return None
    return fit[0] / MIB, fit[1] / MIB


def depth_key(model: str) -> tuple:
    spec = get_spec(model)
    return (FAMILY_ORDER.index(spec.family) if spec.family in FAMILY_ORDER else 99, spec.depth)


def sanity_flags(records: list[dict]) -> list[str]:
    """Cells a reader should distrust, with the reason."""
    flags = []
    ok = [r for r in records if r["status"] == "ok" and r.get("throughput_img_s")]
    for r in ok:
        cv = r.get("throughput_cv")
        if cv is not None and cv > CV_LIMIT:
            flags.append(f"{_name(r)}: throughput CV {cv:.1%} across windows is above {CV_LIMIT:.0%}")
    groups = defaultdict(list)
    for r in ok:
        groups[
            (r["framework"], r["family"], r["batch_size"], r["mode"], r["precision"], r["compile"], r["layout"])
        ].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r["depth"])
        for shallow, deep in zip(group, group[1:]):
            if deep["depth"] > shallow["depth"] and deep["throughput_img_s"] > shallow["throughput_img_s"]:
                flags.append(
                    f"{_name(deep)}: deeper than {shallow['model']} but faster "
                    f"({sig3(deep['throughput_img_s'])} vs {sig3(shallow['throughput_img_s'])} img/s)"
                )
    series = defaultdict(list)
    for r in ok:
        series[(r["framework"], r["model"], r["mode"], r["precision"], r["compile"], r["layout"])].append(r)
    for runs in series.values():
        runs.sort(key=lambda r: r["batch_size"])
        for small, large in zip(runs, runs[1:]):
            if large["throughput_img_s"] < BATCH_DROP_LIMIT * small["throughput_img_s"]:
                flags.append(
                    f"{_name(large)}: throughput per image falls to {large['throughput_img_s'] / small['throughput_img_s']:.0%} "
                    f"of batch {small['batch_size']}'s"
                )
    return flags


def _name(r: dict) -> str:
    extra = " compiled" if r["compile"] == "on" else ""
    return f"{r['framework']} {r['model']} {r['mode']} b={r['batch_size']} {r['precision']} {r['layout']}{extra}"
