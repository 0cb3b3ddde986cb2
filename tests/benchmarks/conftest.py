"""pytest-benchmark suite set-up: one worker process per framework, so frameworks never share a
measuring process. The pytest process itself imports neither framework: every step runs in the
framework's worker, which times it (synchronised) and reports the seconds back; a virtual clock
hands exactly those seconds to pytest-benchmark, so pipe round trips are not counted.

pytest-benchmark's options map onto the worker's rounds by pytest-benchmark's own rules (see
`plan_rounds`); options that cannot apply to steps timed in another process are refused."""

import math
import os
from dataclasses import dataclass

import pytest

from bench.config import Settings
from bench.execute.runner import WorkerClient

SUITE_WARMUP_STEPS = 3  # untimed steps after the first, always: allocator growth and caches settle


def suite_device() -> str:
    """The device the suite measures on: CNN_BENCH_DEVICE (cpu, cuda or auto), by default auto, which is
    cuda when NVML finds an NVIDIA GPU (the pytest process imports no framework to ask). On cuda each step
    is synchronised in the worker as the harness synchronises it (torch.cuda.synchronize, a fetch to the
    host in TensorFlow, block_until_ready in JAX)."""
    from bench.config import resolve_device

    return resolve_device(os.environ.get("CNN_BENCH_DEVICE", "auto"))


class StepClock:
    """A clock pytest-benchmark reads; it advances only by the worker-measured step times."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Rounds:
    rounds: int
    warmup_rounds: int


def plan_rounds(step_s: float, min_rounds: int, max_time_s: float, warmup: bool, warmup_iterations: int) -> Rounds:
    """pytest-benchmark's rules for one step per round: enough rounds to fill --benchmark-max-time,
    never fewer than --benchmark-min-rounds; with --benchmark-warmup, warm-up rounds up to
    --benchmark-warmup-iterations that also stop at --benchmark-max-time."""
    rounds = max(min_rounds, math.ceil(max_time_s / max(step_s, 1e-9)))
    warmup_rounds = min(warmup_iterations, max(1, math.floor(max_time_s / max(step_s, 1e-9)))) if warmup else 0
    return Rounds(rounds, warmup_rounds)


def pytest_configure(config):
    from pytest_benchmark.timers import default_timer
    from pytest_benchmark.utils import NameWrapper

    refused = []
    timer = getattr(config.option, "benchmark_timer", None)
    if timer is not None and str(timer) != str(NameWrapper(default_timer)):
        refused.append("--benchmark-timer (steps are timed in the framework's worker, synchronised)")
    if getattr(config.option, "benchmark_cprofile", None):
        refused.append("--benchmark-cprofile (the work runs in a worker process, not under pytest's profiler)")
    if refused and config.getoption("benchmark_only", default=False):
        raise pytest.UsageError("this suite cannot honour: " + "; ".join(refused))


@pytest.fixture(scope="session")
def workers():
    pool: dict[str, WorkerClient] = {}
    settings = Settings(threads=int(os.environ.get("CNN_BENCH_THREADS", "0")), timeout_s=600)

    def get(framework: str) -> WorkerClient:
        if framework not in pool:
            worker = WorkerClient(framework, settings, log_path=None)
            worker.start(settings.timeout_s)
            pool[framework] = worker
        return pool[framework]

    yield get
    for worker in pool.values():
        worker.close()
