"""Statistics computed by hand: the distribution-free interval of a median, paired ratios with their
intervals, drift that cancels in pairs, and a difference inside the noise margin that is not called."""

import math
import os

import pytest

from bench.measure import stats
from bench.report import tables

QUIET = open(os.devnull, "w")  # noqa: SIM115


# --- the interval for a median, and ratios ----------------------------------------------------------


def coverage(n: int, k: int) -> float:
    """1 - 2 P(Binomial(n, 1/2) < k), written out for the test."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


def test_median_interval_ranks_match_the_binomial_coverage():
    # n=6: [x(1), x(6)] covers with 1 - 2/64 = 96.9%; n=9: [x(2), x(8)] 1 - 2*10/512 = 96.1%, and k=3 only 82%.
    assert [stats.median_rank(n) for n in (5, 6, 8, 9, 11, 12, 20)] == [None, 1, 1, 2, 2, 3, 6]
    assert coverage(9, 2) == pytest.approx(0.9609375) and coverage(9, 3) < 0.95
    assert stats.median_interval([5, 1, 4, 2, 3, 9, 7, 6, 8]) == (2, 8)
    assert stats.median_interval([1, 2, 3, 4, 5]) is None


def test_paired_ratio_is_the_median_of_pair_ratios_with_its_interval():
    base = [100.0] * 9
    engine = [120, 110, 130, 125, 115, 120, 122, 99, 130]
    ratio = stats.paired_ratio(base, engine)
    assert ratio.ratio == pytest.approx(1.20) and (ratio.low, ratio.high) == pytest.approx((1.10, 1.30))
    assert ratio.decided and ratio.words() == "1.20x faster [1.10-1.30]"
    mixed = stats.paired_ratio(base, [120, 90, 130, 95, 115, 120, 122, 99, 130])
    assert not mixed.decided and mixed.words() == "same within noise [0.95-1.30]"
    slower = stats.paired_ratio([100.0] * 6, [80, 81, 79, 82, 80, 78])
    assert slower.words() == "1.25x slower [0.78-0.82]"


def test_a_drift_cancels_in_pairs_but_not_in_a_ratio_of_medians():
    drift = [100 * (1 + 0.1 * i) for i in range(9)]  # the machine speeds up 10% a window
    engine = [1.05 * d for d in drift]  # 5% faster than the baseline in every pair
    paired = stats.paired_ratio(drift, engine)
    assert paired.ratio == pytest.approx(1.05) and paired.decided
    assert not stats.sequential_ratio(drift, engine).decided  # unpaired, the drift swamps the 5%


def test_sequential_ratio_uses_each_medians_interval():
    ratio = stats.sequential_ratio([1, 1.1, 0.9, 1, 1, 1, 1], [2, 2.1, 1.9, 2, 2, 2, 2])
    assert ratio.ratio == 2 and (ratio.low, ratio.high) == pytest.approx((1.9 / 1.1, 2.1 / 0.9))
    assert ratio.method == "sequential" and ratio.pairs == 0


def test_a_difference_inside_the_margin_is_not_called():
    base = [100.0] * 9
    slightly = [103.0, 102, 104, 103, 103, 102, 104, 103, 103]  # 3% faster, tightly: [1.02-1.04]
    assert stats.paired_ratio(base, slightly).decided  # no margin: the interval excludes 1
    within = stats.paired_ratio(base, slightly, margin=0.05)
    assert not within.decided
    assert within.words() == "1.03x faster [1.02-1.04]: not called (interval not beyond the 5% margin)"
    # 1.09x slower, but the interval [0.90-0.98] reaches inside the band: it once read "within the 5% margin"
    slower = stats.paired_ratio(base, [88.0, 90, 91, 92, 92, 93, 95, 98, 99], margin=0.05)
    assert not slower.decided
    assert slower.words() == "1.09x slower [0.90-0.98]: not called (interval not beyond the 5% margin)"
    assert stats.paired_ratio(base, [x * 1.05 for x in slightly], margin=0.05).decided  # [1.07-1.09]
    assert tables.NOISE_MARGIN == 0.05
