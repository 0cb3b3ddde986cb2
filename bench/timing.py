"""The timing loop shared by every backend.

Why it measures this way:
- The first step (after the build) includes tracing, compilation and autotuning; it is timed alone
  and reported as time to first step, never mixed into the windows. Warm-up steps follow, untimed.
- Every step is followed by a clock mark taken *after* the device is synchronised: on a CPU and in
  TensorFlow the mark syncs then reads perf_counter; on CUDA the backend records an event per step and
  synchronises once per window, so the device queue never drains between steps.
- Throughput is the median over at least five windows of a fixed step count (sized from the warm-up
  to last `min_window_s`), with IQR, min, max and CV beside it, so a reader sees the spread. Per-step
  times give latency percentiles.
- CPU time of the process over the windows gives the cores used; monitors sample during the windows only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class HostClock:
    """Marks by synchronising then reading perf_counter."""

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._marks: list[float] = []

    def start(self) -> None:
        self._sync()
        self._marks = [time.perf_counter()]

    def lap(self) -> None:
        self._sync()
        self._marks.append(time.perf_counter())

    def stop(self) -> list[float]:
        marks = self._marks
        return [b - a for a, b in zip(marks, marks[1:])]


@dataclass
class Timing:
    first_step_s: float
    warmup_s: float
    steps_per_window: int
    window_seconds: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


def measure(
    step: Callable[[], None],
    clock,
    *,
    warmup_steps: int,
    windows: int,
    min_window_s: float,
    max_window_steps: int,
    on_windows_start: Callable[[], None] | None = None,
    on_windows_end: Callable[[], None] | None = None,
) -> Timing:
    """Run `step` through first step, warm-up and timed windows; `clock` marks synchronised instants."""
    clock.start()
    step()
    clock.lap()
    first_step_s = clock.stop()[0]

    clock.start()
    for _ in range(warmup_steps):
        step()
        clock.lap()
    warmup = clock.stop()
    # Size windows from the last warm-up steps (or the first step when there is no warm-up).
    estimate = min(warmup[-3:]) if warmup else first_step_s
    steps_per_window = max(1, min(max_window_steps, math.ceil(min_window_s / max(estimate, 1e-9))))

    timing = Timing(first_step_s=first_step_s, warmup_s=sum(warmup), steps_per_window=steps_per_window)
    if on_windows_start:
        on_windows_start()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(windows):
        clock.start()
        for _ in range(steps_per_window):
            step()
            clock.lap()
        laps = clock.stop()
        timing.step_seconds += laps
        timing.window_seconds.append(sum(laps))
    timing.cpu_seconds = time.process_time() - cpu_start
    timing.wall_seconds = time.perf_counter() - wall_start
    if on_windows_end:
        on_windows_end()
    return timing


def measure_prepared(prepared, settings, on_windows_start=None, on_windows_end=None) -> Timing:
    """`measure` a backend's prepared step with a run's measurement settings."""
    return measure(
        prepared.step,
        prepared.clock,
        warmup_steps=settings.warmup_steps,
        windows=settings.windows,
        min_window_s=settings.min_window_s,
        max_window_steps=settings.max_window_steps,
        on_windows_start=on_windows_start,
        on_windows_end=on_windows_end,
    )
