"""Pure statistics over raw step and window timings: no I/O, no framework imports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def iqr(values: Sequence[float]) -> float:
    return percentile(values, 75.0) - percentile(values, 25.0)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over the mean (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance) / mean if mean else float("inf")


def throughput_summary(window_seconds: Sequence[float], window_images: Sequence[int]) -> dict:
    """Per-window img/s, then median, IQR, min, max and CV across windows."""
    rates = [images / seconds for images, seconds in zip(window_images, window_seconds, strict=True)]
    return {
        "throughput_img_s": median(rates),
        "throughput_iqr_img_s": iqr(rates),
        "throughput_min_img_s": min(rates),
        "throughput_max_img_s": max(rates),
        "throughput_cv": coefficient_of_variation(rates),
        "window_throughputs_img_s": rates,
    }


def latency_summary(step_seconds: Sequence[float]) -> dict:
    """Per-step latency percentiles in milliseconds."""
    return {f"latency_ms_p{q}": percentile(step_seconds, q) * 1e3 for q in (50, 90, 99)}


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares intercept and slope, or None with fewer than two distinct x."""
    if len(set(xs)) < 2:
        return None
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - slope * mean_x, slope
