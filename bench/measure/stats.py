"""Pure statistics over raw step and window timings: no I/O, no framework imports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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


# --- intervals and engine comparisons ----------------------------------------------------------------
#
# The interval for a median is distribution-free: with n samples sorted, [x(k), x(n+1-k)] covers the
# true median with probability 1 - 2 * P(Binomial(n, 1/2) < k), whatever the distribution. k is the
# largest rank that keeps that coverage at or above the level asked for (95%). No resampling, so the
# same samples always give the same interval. Six samples are the fewest with a 95% interval.


def median_rank(n: int, level: float = 0.95) -> int | None:
    """The rank k of the interval [x(k), x(n+1-k)] for a median, or None if n is too small."""

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    ranks = [k for k in range(1, (n + 1) // 2 + 1) if coverage(k) >= level]
    return max(ranks) if ranks else None


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for the median of `values` (None below six samples at 95%)."""
    rank = median_rank(len(values), level)
    if rank is None:
        return None
    ordered = sorted(values)
    return ordered[rank - 1], ordered[len(ordered) - rank]


@dataclass(frozen=True)
class Ratio:
    """How one engine's throughput compares with the baseline engine's in one cell."""

    ratio: float  # engine img/s over baseline img/s: above 1 is faster
    low: float | None  # 95% interval; None when too few windows
    high: float | None
    pairs: int  # paired windows (0 when the engines ran one after the other)
    method: str  # "paired" or "sequential"
    margin: float = 0.0  # differences inside (1 + margin) either way are not called

    @property
    def decided(self) -> bool:
        """The whole interval lies beyond the margin: faster or slower by more than it, at 95%."""
        if self.low is None or self.high is None:
            return False
        return self.low > 1.0 + self.margin or self.high < 1.0 / (1.0 + self.margin)

    def words(self) -> str:
        """'1.23x faster [1.10-1.35]' (decided), 'same within noise [0.95-1.04]' (the interval holds 1),
        '1.03x faster [1.02-1.04]: not called (interval not beyond the 5% margin)' (the interval excludes 1
        but reaches inside the margin), or '1.10x faster [no interval]' (too few windows)."""
        if self.low is None or self.high is None:
            return _speed(self.ratio) + " [no interval]"
        interval = f" [{self.low:.2f}-{self.high:.2f}]"
        if self.decided:
            return _speed(self.ratio) + interval
        if self.low <= 1.0 <= self.high:
            return "same within noise" + interval
        return f"{_speed(self.ratio)}{interval}: not called (interval not beyond the {self.margin:.0%} margin)"


def _speed(ratio: float) -> str:
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def paired_ratio(
    baseline_rates: Sequence[float], engine_rates: Sequence[float], level: float = 0.95, margin: float = 0.0
) -> Ratio:
    """Windows taken in alternation (pair i = window i of each engine): the median of the per-pair
    ratios, with the distribution-free interval of that median. A drift of the machine moves both
    windows of a pair alike, so it cancels in the pair's ratio."""
    pairs = [e / b for b, e in zip(baseline_rates, engine_rates)]
    if not pairs:
        raise ValueError("no paired windows")
    low, high = median_interval(pairs, level) or (None, None)
    return Ratio(median(pairs), low, high, pairs=len(pairs), method="paired", margin=margin)


def sequential_ratio(
    baseline_rates: Sequence[float], engine_rates: Sequence[float], level: float = 0.95, margin: float = 0.0
) -> Ratio:
    """Engines measured one after the other (a GPU): the ratio of medians, with the conservative
    interval formed by the two medians' own intervals (lowest engine over highest baseline, and so on)."""
    base, engine = median_interval(baseline_rates, level), median_interval(engine_rates, level)
    ratio = median(engine_rates) / median(baseline_rates)
    if base is None or engine is None:
        return Ratio(ratio, None, None, pairs=0, method="sequential", margin=margin)
    return Ratio(ratio, engine[0] / base[1], engine[1] / base[0], pairs=0, method="sequential", margin=margin)
