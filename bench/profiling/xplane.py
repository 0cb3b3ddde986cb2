"""Operator categories from a TensorFlow or JAX profiler trace (an XSpace, `*.xplane.pb`), read with xprof."""

from __future__ import annotations

import json
from pathlib import Path

from .categories import CATEGORIES, tf_category


def categories_from_trace(logdir: Path, layer_ops: dict[str, str], steps: int) -> dict:
    """{"categories": seconds per step per category, "profiled_steps"}; or {"categories_unavailable": why}."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        return {"categories_unavailable": "xprof is not installed (pip install xprof): no operator categories"}
    paths = [str(p) for p in sorted(Path(logdir).rglob("*.xplane.pb"))]
    if not paths:
        return {"categories_unavailable": f"no profile was written under {logdir}"}
    data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "framework_op_stats", {})
    return {"categories": _per_category(json.loads(data)[0], layer_ops, steps), "profiled_steps": steps}


def _per_category(table: dict, layer_ops: dict[str, str], steps: int) -> dict[str, float]:
    """Seconds per step in each category: xprof's framework_op_stats, self time of every op (device ops
    on a GPU, host ops otherwise), IDLE left out."""
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"]))) for row in table["rows"]]
    on_device = any(r["host_or_device"] == "Device" for r in rows)
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for row in rows:
        if row["type"] == "IDLE" or (row["host_or_device"] == "Device") != on_device:
            continue
        totals[tf_category(row["operation"], row["type"], layer_ops)] += row["total_self_time"] / 1e6 / steps
    return totals
