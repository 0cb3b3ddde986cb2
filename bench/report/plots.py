"""PNG plots of a run (matplotlib, Agg backend): sized to read at README width."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.report import tables
from bench.report.tables import MIB
from bench.store.atomic import save_figure
from bench.store.records import Record

# One colour and one marker per engine on every plot, PNG and HTML alike (html.ENGINE_STYLE).
MARKERS = {"circle": "o", "square": "s", "diamond": "D", "triangle": "^"}

# The question each plot answers, by file-name prefix: its caption in the report.
CAPTIONS = {
    "throughput_vs_batch": "Which engine moves more images per second, per model and batch? Median img/s; bars: "
    "95% interval of the median (the windows' range with fewer than 6 windows). Batches are categories: no lines.",
    "depth": "What does depth cost? Throughput and peak memory per depth at each family's largest batch; bars as above.",
    "ratio_heatmap": "How much faster or slower is each engine than the baseline? Ratio of img/s; hatched cells are "
    "not decided (same within noise, or below the margin).",
    "memory_vs_batch": "How does peak memory grow with the batch? Each engine's peak per model and batch.",
}


def caption(path: Path) -> str:
    for prefix, text in CAPTIONS.items():
        if path.stem.startswith(prefix):
            return text
    return ""


def _style(label: str) -> dict:
    from bench.report.render import style

    color, shape = style(label)
    return {"color": color, "marker": MARKERS.get(shape, "o")}


def _interval(r: Record) -> tuple[float, float]:
    from bench.report.html import interval_of

    low, high, _ = interval_of(r)
    return r.throughput_img_s - low, high - r.throughput_img_s


def _plt():
    from bench.report.render import pyplot

    return pyplot()


def _label(r: Record) -> str:
    return tables.engine(r)


def write_plots(records: list[Record], out: Path) -> list[Path]:
    files = []
    for section in tables.sections(records):
        chosen = [r for r in tables.select(records, section) if r.status == "ok"]
        if not chosen:
            continue
        tag = section.tag()
        files.append(_throughput_vs_batch(chosen, out / f"throughput_vs_batch_{tag}.png", tag))
        files.append(_depth(chosen, out / f"depth_{tag}.png", tag))
        heatmap = _ratio_heatmap(tables.select(records, section), out / f"ratio_heatmap_{tag}.png", tag)
        if heatmap:
            files.append(heatmap)
        memory = _memory_vs_batch(chosen, out / f"memory_vs_batch_{tag}.png", tag)
        if memory:
            files.append(memory)
    return files


def _grid(count: int):
    plt = _plt()
    cols = min(3, count)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), squeeze=False)
    return plt, fig, axes


def _throughput_vs_batch(records, path: Path, tag: str) -> Path:
    models = tables.model_order(r.model for r in records)
    plt, fig, axes = _grid(len(models))
    for ax, model in zip(axes.flat, models):
        chosen = [r for r in records if r.model == model]
        batches = sorted({r.batch_size for r in chosen})
        labels = sorted({_label(r) for r in chosen})
        for offset, label in enumerate(labels):
            points = sorted((r.batch_size, r) for r in chosen if _label(r) == label)
            xs = [batches.index(b) + (offset - (len(labels) - 1) / 2) * 0.15 for b, _ in points]
            errors = list(zip(*(_interval(r) for _, r in points)))
            ax.errorbar(xs, [r.throughput_img_s for _, r in points], yerr=errors, linestyle="none", capsize=2,
                        label=label, **_style(label))  # fmt: skip
        ax.set_xticks(range(len(batches)), [f"b={b}" for b in batches])
        ax.set_xlim(-0.6, len(batches) - 0.4)
        ax.set_title(model, fontsize=9)
        ax.set_ylabel("img/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Throughput per batch ({tag})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _depth(records, path: Path, tag: str) -> Path:
    plt = _plt()
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4))
    families = defaultdict(list)
    for r in records:
        families[(r.family, _label(r))].append(r)
    for (family, label), members in sorted(families.items()):
        batch = max(r.batch_size for r in members)
        points = sorted((r.depth, r) for r in members if r.batch_size == batch)
        style = dict(_style(label), label=f"{family} {label} b={batch}", linestyle="-" if family == "resnet" else ":")
        errors = list(zip(*(_interval(r) for _, r in points)))
        ax_t.errorbar([d for d, _ in points], [r.throughput_img_s for _, r in points], yerr=errors, capsize=2,
                      **style)  # fmt: skip
        memory = [(d, m) for d, r in points if (m := tables.peak_memory(r)[0]) is not None]
        if memory:
            ax_m.plot([d for d, _ in memory], [m / MIB for _, m in memory], **style)
    ax_t.set(xlabel="depth (layers)", ylabel="img/s", title="Throughput vs depth", yscale="log")
    ax_m.set(xlabel="depth (layers)", ylabel="peak memory (MiB)", title="Peak memory vs depth")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=6)
    fig.suptitle(f"Depth scaling at each family's largest batch ({tag})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _ratio_heatmap(records, path: Path, tag: str) -> Path | None:
    """Each engine other than the baseline against the baseline, one ratio grid per engine."""
    import math

    comparison = tables.compare_engines(records)
    if comparison is None or not comparison.ratios:
        return None
    from matplotlib.patches import Rectangle

    grids, decisions = {}, {}
    for other in tables.engine_order(records)[1:]:
        ratios = {(m, b): r.ratio for (e, m, b), r in comparison.ratios.items() if e == other}
        decisions[other] = {(m, b): r.decided for (e, m, b), r in comparison.ratios.items() if e == other}
        if ratios:
            grids[other] = ratios
    if not grids:
        return None
    plt = _plt()
    models = tables.model_order(m for ratios in grids.values() for m, _ in ratios)
    batches = sorted({b for ratios in grids.values() for _, b in ratios})
    values = {o: [[r.get((m, b), float("nan")) for b in batches] for m in models] for o, r in grids.items()}
    finite = [abs(math.log2(v)) for grid in values.values() for row in grid for v in row if v == v]
    span = max(finite + [0.1])
    width = 1.6 + 0.8 * len(batches)
    fig, axes = plt.subplots(
        1, len(grids), figsize=(width * len(grids) + 2.2, 1.6 + 0.4 * len(models)), squeeze=False, layout="constrained"
    )
    for index, (ax, (other, grid)) in enumerate(zip(axes.flat, values.items())):
        image = ax.imshow(
            [[math.log2(v) if v == v else float("nan") for v in row] for row in grid],
            cmap="RdBu",
            vmin=-span,
            vmax=span,
            aspect="auto",
        )
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:
                    decided = decisions[other].get((models[i], batches[j]), False)
                    ax.text(j, i, f"{value:.2f}" + ("" if decided else "\nnot decided"), ha="center", va="center",
                            fontsize=7 if decided else 6, style="normal" if decided else "italic")  # fmt: skip
                    if not decided:
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.5",
                                               linewidth=0))  # fmt: skip
        ax.set_xticks(range(len(batches)), [str(b) for b in batches], fontsize=7)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        ax.tick_params(labelleft=index == 0)
        ax.set_xlabel("batch size", fontsize=8)
        ax.set_title(f"{other} / {comparison.baseline}\n>1 (blue): {other} faster", fontsize=8)
    fig.suptitle(f"Throughput ratio against {comparison.baseline} ({tag})", fontsize=9)
    bar = fig.colorbar(image, ax=list(axes.flat))
    bar.set_label(f"log2(engine / {comparison.baseline} img/s)", fontsize=7)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _memory_vs_batch(records, path: Path, tag: str) -> Path | None:
    with_memory = [(r, m) for r in records if (m := tables.peak_memory(r)[0]) is not None]  # withheld: not drawn
    if not with_memory:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    groups = []
    for model in tables.model_order(r.model for r, _ in with_memory):
        groups += [(model, b) for b in sorted({r.batch_size for r, _ in with_memory if r.model == model})]
    labels = sorted({_label(r) for r, _ in with_memory})
    for offset, label in enumerate(labels):
        points = [(groups.index((r.model, r.batch_size)), m / MIB) for r, m in with_memory
                  if _label(r) == label]  # fmt: skip
        xs = [x + (offset - (len(labels) - 1) / 2) * 0.2 for x, _ in points]
        ax.plot(xs, [m for _, m in points], linestyle="none", label=label, **_style(label))
    ax.set_xticks(range(len(groups)), [f"{m} b={b}" for m, b in groups], rotation=35, ha="right", fontsize=7)
    ax.set(ylabel="peak memory (MiB)", title=f"Peak memory per model and batch ({tag})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
