"""The timing loop shared by every backend.

Why it measures this way:
- The first step (after the build) includes tracing, compilation and autotuning; it is timed alone
  and reported as time to first step, never mixed into the windows.
- Warm-up runs until the step time stops improving (`warm_up`: blocks of steps, stopping when a
  block's median is no more than 3% faster than the previous block's, capped in time), so first-touch
  page faults, allocator growth and caches settle before the clock starts.
- A window is: synchronise the device, read the clock, run its steps, synchronise once, read the clock.
  The same in every engine, so none drains its queue between steps and none is timed differently.
  On a CPU both frameworks execute synchronously (PyTorch always; TensorFlow's eager executor is
  synchronous by default and records it in the environment), so a clock read after each step also
  gives per-step times inside the windows, from which latency percentiles come. On a GPU, latency
  comes from a separate short pass in which every step is synchronised, done the same way in each.
- Throughput is the median over the windows with its spread; engines compared in one cell alternate
  their windows, and their ratio is the median of per-pair ratios (see stats.paired_ratio).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

WARMUP_IMPROVEMENT = 0.03  # a block faster than the previous one by more than this is still warming up
WARMUP_BLOCK_S = 0.2  # a warm-up block lasts about this long (at least one step)
# Before each window's clock (and the explain pass's), untimed steps for about this long: a worker that waited
# while the other engine ran its window starts cold: in the default sweep on our CPU before this rule (results/runs/
# 20261202-060804-cpu-cpu-default; docs/methodology.md quotes it) a window's first CIFAR ResNet step took up to 4x the
# median step. A step longer than twice this gets none (a cold start is a small part of it).
SETTLE_S = 0.1
SETTLE_MAX_STEPS = 50


def settle_steps(step_s: float) -> int:
    """Untimed steps before a window: about SETTLE_S of them, none for a step longer than twice SETTLE_S."""
    return max(0, min(SETTLE_MAX_STEPS, round(SETTLE_S / max(step_s, 1e-9))))


def settle(step: Callable[[], object], sync: Callable[[], None], steps: int) -> None:
    """`steps` untimed steps, then a synchronisation: the worker is warm again before a clock is read."""
    for _ in range(steps):
        step()
    if steps:
        sync()


@dataclass(frozen=True)
class WarmUp:
    steps: int
    seconds: float
    step_estimate_s: float  # median step time of the last block: sizes the windows
    steady: bool  # False when the time cap ended it before the step time settled


def timed_step(step: Callable[[], object], sync: Callable[[], None]) -> float:
    """One synchronised step: seconds from a synchronised start to a synchronised end."""
    sync()
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


def warm_up(
    step: Callable[[], object], sync: Callable[[], None], *, min_steps: int, cap_s: float, max_steps: int = 10_000
) -> WarmUp:
    """Untimed-for-results steps until steady: at least `min_steps` and two blocks; stop when a block's
    median step is no more than WARMUP_IMPROVEMENT faster than the previous block's, or at `cap_s`."""
    started = time.perf_counter()
    first = timed_step(step, sync)
    block = max(1, min(50, math.ceil(WARMUP_BLOCK_S / max(first, 1e-9))))
    times = [first]
    middle, previous = first, None
    steady = False
    while len(times) < max_steps:
        current = sorted(timed_step(step, sync) for _ in range(block))
        times += current
        middle = current[len(current) // 2]
        if previous is not None and len(times) >= min_steps and middle >= previous * (1 - WARMUP_IMPROVEMENT):
            steady = True
            break
        previous = middle if previous is None else min(previous, middle)
        if time.perf_counter() - started >= cap_s and len(times) >= min_steps:
            break
    return WarmUp(len(times), time.perf_counter() - started, middle, steady)


def steps_per_window(step_s: float, min_window_s: float, max_window_steps: int) -> int:
    return max(1, min(max_window_steps, math.ceil(min_window_s / max(step_s, 1e-9))))


# Launch-bound steps on a GPU (batch 1: a few ms, mostly kernel launches) vary from step to step far more
# than compute-bound ones: on an H200, ResNet-50 at batch 1 had a window CV of 2-28% with 0.25 s windows.
# Such steps get longer windows of many steps, and more of them.
SHORT_STEP_S = 0.02  # a GPU step shorter than this counts as launch-bound
SHORT_STEP_WINDOW_S = 1.0  # each of its windows lasts at least this long...
SHORT_STEP_MIN_STEPS = 200  # ...and holds at least this many steps
SHORT_STEP_WINDOWS = 10  # and there are at least this many windows


@dataclass(frozen=True)
class WindowPlan:
    steps: int
    windows: int
    rule: str


def window_plan(step_s: float, device: str, min_window_s: float, windows: int, max_window_steps: int) -> WindowPlan:
    """Steps per window and windows for a configuration. A launch-bound GPU step (shorter than SHORT_STEP_S)
    gets windows of at least SHORT_STEP_WINDOW_S and SHORT_STEP_MIN_STEPS steps, and at least
    SHORT_STEP_WINDOWS of them; anything else gets the run's settings. On a CPU every step is timed
    exactly, so the settings stand."""
    if device == "cuda" and step_s < SHORT_STEP_S:
        length = max(min_window_s, SHORT_STEP_WINDOW_S)
        # The rule's length wins over --max-window-steps: 1 s of 0.5 ms steps is 2000 steps.
        steps = max(SHORT_STEP_MIN_STEPS, math.ceil(length / max(step_s, 1e-9)))
        rule = (
            f"launch-bound GPU step ({step_s * 1e3:.2g} ms < {SHORT_STEP_S * 1e3:g} ms): windows of at least "
            f"{length:g} s and {SHORT_STEP_MIN_STEPS} steps, at least {SHORT_STEP_WINDOWS} windows"
        )
        return WindowPlan(steps, max(windows, SHORT_STEP_WINDOWS), rule)
    return WindowPlan(steps_per_window(step_s, min_window_s, max_window_steps), windows, "the run's settings")


@dataclass(frozen=True)
class Window:
    seconds: float  # synchronised start to synchronised end
    step_seconds: tuple[float, ...]  # per step (empty when per-step marks are not valid: a GPU)


def window(step: Callable[[], object], sync: Callable[[], None], steps: int, per_step_marks: bool) -> Window:
    """`steps` steps between two synchronisations; per-step clock reads only where execution is synchronous."""
    sync()
    start = time.perf_counter()
    marks = [start]
    for _ in range(steps):
        step()
        if per_step_marks:
            marks.append(time.perf_counter())
    sync()
    end = time.perf_counter()
    if not per_step_marks:
        return Window(end - start, ())
    marks[-1] = end  # the last step ends at the synchronisation
    return Window(end - start, tuple(b - a for a, b in zip(marks, marks[1:])))


def alternating(items: Sequence[T], rounds: int, first: int = 0) -> Iterator[tuple[int, T]]:
    """The one interleaving order of every paired comparison (cells, the layout trial, profiles, overhead,
    scaling): rounds `first` .. `rounds - 1`, each visiting every item once, the order reversed every round
    (AB BA AB ...), so a slow spell of a shared machine lands on all of them alike. A negative `first` adds
    settling rounds before round 0 (their results are the caller's to discard)."""
    for index in range(first, rounds):
        for item in items if index % 2 == 0 else items[::-1]:
            yield index, item


def latency_pass(step: Callable[[], object], sync: Callable[[], None], steps: int) -> list[float]:
    """Every step synchronised before and after: per-step latency on a device with a queue."""
    return [timed_step(step, sync) for _ in range(steps)]
