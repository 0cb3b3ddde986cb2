"""The clock: warm-up until steps settle (or its cap, said so), per-step clock reads only where execution is
synchronous, and a settling time before each window's clock."""

import os
import time

import pytest

from bench.measure import timing

QUIET = open(os.devnull, "w")  # noqa: SIM115


# --- steady state before the clock --------------------------------------------------------------------


def stepper(durations):
    """A step that sleeps the given seconds in turn, then the last one forever."""
    it = iter(durations)
    last = [durations[-1]]

    def step():
        last[0] = next(it, last[0])
        time.sleep(last[0])

    return step


def test_warm_up_continues_while_steps_get_faster_and_stops_when_they_settle():
    # Blocks of 1 step (each step is above the 0.2 s block target would need: 0.2 s / 0.25 s -> 1).
    warm = timing.warm_up(stepper([0.25, 0.2, 0.15, 0.1, 0.05, 0.05, 0.05]), lambda: None, min_steps=1, cap_s=10)
    assert warm.steady and warm.steps == 6 and warm.step_estimate_s == pytest.approx(0.05, rel=0.5)


def test_warm_up_stops_at_its_time_cap_and_says_so():
    speeds = [0.3 * 0.8**i for i in range(40)]  # always 20% faster than the step before
    warm = timing.warm_up(stepper(speeds), lambda: None, min_steps=1, cap_s=0.8)
    assert not warm.steady and warm.seconds < 1.5


def test_windows_read_the_clock_per_step_only_where_execution_is_synchronous():
    cpu = timing.window(stepper([0.01]), lambda: None, 5, per_step_marks=True)
    gpu = timing.window(stepper([0.01]), lambda: None, 5, per_step_marks=False)
    assert len(cpu.step_seconds) == 5 and sum(cpu.step_seconds) == pytest.approx(cpu.seconds)
    assert gpu.step_seconds == () and gpu.seconds >= 0.05


def test_a_window_settles_for_about_a_tenth_of_a_second_before_its_clock():
    from bench.measure.timing import SETTLE_S, settle_steps

    assert settle_steps(0.004) == round(SETTLE_S / 0.004) == 25  # a CIFAR ResNet inference step
    assert settle_steps(0.06) == 2 and settle_steps(0.3) == 0  # a VGG training step: none
