"""Timing many small functions against each other: warm each, then windows taken in rounds.

Each round times one window of every function, in an order reversed every round, so a slow spell of a
shared machine lands on all of them alike; a function's figure is the median of its per-call window
times, with the distribution-free 95% interval of that median (stats.median_interval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench.measure import stats, timing


@dataclass(frozen=True)
class Timed:
    seconds: float  # median seconds per call over the windows
    low: float | None  # 95% interval of that median (None below six windows)
    high: float | None
    windows: int
    calls_per_window: int


def time_in_rounds(
    functions: dict[str, Callable[[], object]],
    sync: Callable[[], None],
    *,
    windows: int = 7,
    min_window_s: float = 0.1,
    warmup_cap_s: float = 3.0,
) -> dict[str, Timed]:
    """Median seconds per call of each function, measured in interleaved rounds of windows."""
    calls = {}
    for name, function in functions.items():
        warm = timing.warm_up(function, sync, min_steps=3, cap_s=warmup_cap_s)
        calls[name] = timing.steps_per_window(warm.step_estimate_s, min_window_s, 10_000)
    per_call: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for _, name in timing.alternating(names, windows):
        window = timing.window(functions[name], sync, calls[name], per_step_marks=False)
        per_call[name].append(window.seconds / calls[name])
    result = {}
    for name, values in per_call.items():
        interval = stats.median_interval(values)
        result[name] = Timed(stats.median(values), *(interval or (None, None)), len(values), calls[name])
    return result


def time_returning(
    functions: dict[str, Callable[[], object]], block: Callable[[object], None], *, windows: int, min_window_s: float
) -> dict[str, Timed]:
    """`time_in_rounds` for engines whose calls return before their work is done (TensorFlow's outputs,
    JAX's asynchronous dispatch): the last call's result is kept, and synchronising blocks on it."""
    last: dict = {}

    def keep(function):
        def call():
            last["value"] = function()

        return call

    def sync():
        if "value" in last:
            block(last["value"])

    return time_in_rounds({name: keep(f) for name, f in functions.items()}, sync, windows=windows,
                          min_window_s=min_window_s)  # fmt: skip


def profile_result(
    engine: str, layout: str, timed: dict[str, Timed], stages: list[str], saved: dict | None = None
) -> dict:
    """One engine's part of a profile, as its worker returns it."""
    return {
        "engine": engine,
        "layout": layout,
        "timings": {name: asdict(t) for name, t in timed.items()},
        "saved_activation_bytes": saved or {},
        "stages": stages,
    }
