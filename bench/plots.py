"""PNG plots of a run (matplotlib, Agg backend): sized to read at README width."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from . import tables
from .atomic import save_figure
from .records import Record
from .tables import MIB

COLORS = {"torch": "#ee4c2c", "keras-tensorflow": "#ff8f00", "keras-jax": "#1f77b4"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
        series = defaultdict(list)
        for r in records:
            if r.model == model:
                series[_label(r)].append((r.batch_size, r.throughput_img_s))
        for label, points in sorted(series.items()):
            points.sort()
            ax.plot(
                [b for b, _ in points],
                [t for _, t in points],
                marker="o",
                label=label,
                color=COLORS.get(label.split()[0]),
            )
        ax.set_xscale("log", base=2)
        batches = sorted({b for points in series.values() for b, _ in points})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("batch size", fontsize=8)
        ax.set_ylabel("img/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Throughput vs batch size ({tag})", fontsize=10)
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
        style = dict(
            marker="o", label=f"{family} {label} b={batch}", linestyle="-" if label.startswith("torch") else "--"
        )
        ax_t.plot([d for d, _ in points], [r.throughput_img_s for _, r in points], **style)
        memory = [(d, r.peak_memory_bytes) for d, r in points if r.peak_memory_bytes is not None]
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
    grids = {}
    for other in tables.engine_order(records)[1:]:
        ratios = {(m, b): r.ratio for (e, m, b), r in comparison.ratios.items() if e == other}
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
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
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
    with_memory = [r for r in records if r.peak_memory_bytes is not None]
    if not with_memory:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    series = defaultdict(list)
    for r in with_memory:
        series[(r.model, _label(r))].append((r.batch_size, r.peak_memory_bytes / MIB))
    for (model, label), points in sorted(series.items(), key=lambda kv: (tables.depth_key(kv[0][0]), kv[0][1])):
        points.sort()
        ax.plot(
            [b for b, _ in points],
            [m for _, m in points],
            marker="o",
            linestyle="-" if label.startswith("torch") else "--",
            label=f"{model} {label}",
        )
    ax.set(xscale="log", xlabel="batch size", ylabel="peak memory (MiB)", title=f"Peak memory vs batch size ({tag})")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
