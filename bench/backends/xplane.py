"""Operator categories from a TensorFlow or JAX profiler trace (an XSpace, `*.xplane.pb`), read with xprof."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from bench.backends.categories import CATEGORIES, tf_category


def categories_from_trace(logdir: Path, layer_ops: dict[str, str], steps: int) -> dict:
    """{"categories": seconds per step per category, "profiled_steps"}; or {"categories_unavailable": why}.

    Device ops (a GPU) come from xprof's op statistics, their self time. Host ops (a CPU) come from the trace's
    timeline: TensorFlow runs independent ops at once on its inter-op threads, so adding their self times
    counts the same wall time twice; each moment is instead shared among the ops running in it (`wall_shares`),
    and the categories add up to the time some op was running."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        return {"categories_unavailable": "xprof is not installed (pip install xprof): no operator categories"}
    paths = [str(p) for p in sorted(Path(logdir).rglob("*.xplane.pb"))]
    if not paths:
        return {"categories_unavailable": f"no profile was written under {logdir}"}
    data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "framework_op_stats", {})
    rows = _rows(json.loads(data)[0])
    if not any(r["host_or_device"] == "Device" for r in rows):
        trace, _ = raw_to_tool_data.xspace_to_tool_data(paths, "trace_viewer", {})
        return {"categories": _host_categories(json.loads(trace), layer_ops, steps), "profiled_steps": steps}
    return {"categories": _per_category(rows, layer_ops, steps), "profiled_steps": steps}


def _rows(table: dict) -> list[dict]:
    columns = [c["id"] for c in table["cols"]]
    return [dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"]))) for row in table["rows"]]


def _per_category(rows: list[dict], layer_ops: dict[str, str], steps: int) -> dict[str, float]:
    """Seconds per step in each category: xprof's framework_op_stats rows, self time of every device op, IDLE
    left out."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for row in rows:
        if row["type"] == "IDLE" or row["host_or_device"] != "Device":
            continue
        totals[tf_category(row["operation"], row["type"], layer_ops)] += row["total_self_time"] / 1e6 / steps
    return totals


def _host_categories(trace: dict, layer_ops: dict[str, str], steps: int) -> dict[str, float]:
    """Seconds per step in each category from the trace's op events (a TensorFlow op's event carries its
    "scope/name:Type" as `long_name`), each moment shared among the ops running in it."""
    spans = []
    for event in trace.get("traceEvents", ()):
        name = (event.get("args") or {}).get("long_name")
        if event.get("ph") != "X" or not name or not event.get("dur"):
            continue
        operation, _, op_type = name.rpartition(":")
        category = tf_category(operation or name, op_type or event["name"], layer_ops)
        spans.append((event["ts"], event["ts"] + event["dur"], category, (event.get("pid"), event.get("tid"))))
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for category, microseconds in wall_shares(spans).items():
        totals[category] += microseconds / 1e6 / steps
    return totals


def wall_shares(spans: Iterable[tuple[float, float, str, object]]) -> dict[str, float]:
    """Wall time by category from (start, end, category, thread) spans: on one thread the innermost span
    holds each moment; a moment in which n threads run a span is shared, 1/n to each. The shares add up to
    the time in which any span runs: time is never counted twice."""
    by_thread: dict[object, list] = defaultdict(list)
    for start, end, category, thread in spans:
        if end > start:
            by_thread[thread].append((start, -end, category))
    segments: list[
        tuple[float, float, str]
    ] = []  # (start, end, category): one thread's innermost spans, not overlapping
    for items in by_thread.values():
        items.sort()
        stack: list[tuple[float, str]] = []  # (end, category) of the open spans, innermost last
        now = -math.inf  # the end of the last segment on this thread
        for start, negative_end, category in items:
            end = -negative_end
            while stack and stack[-1][0] <= start:
                top_end, top = stack.pop()
                if top_end > now:
                    segments.append((now, top_end, top))
                    now = top_end
            if stack and start > now:
                segments.append((now, start, stack[-1][1]))
            stack.append((min(end, stack[-1][0]) if stack else end, category))
            now = max(now, start)
        while stack:
            top_end, top = stack.pop()
            if top_end > now:
                segments.append((now, top_end, top))
                now = top_end
    edges = sorted(
        [(s, 1, c) for s, _, c in segments] + [(e, -1, c) for _, e, c in segments], key=lambda x: (x[0], x[1])
    )
    shares: dict[str, float] = defaultdict(float)
    running: dict[str, int] = defaultdict(int)
    count, last = 0, None
    for time, change, category in edges:
        if count and last is not None and time > last:
            for name, n in running.items():
                if n:
                    shares[name] += (time - last) * n / count
        running[category] += change
        count += change
        last = time
    return dict(shares)
