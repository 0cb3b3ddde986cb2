"""pytest-benchmark suite set-up: one worker process per framework, so frameworks never share a
measuring process. The pytest process itself imports neither framework: every step runs in the
framework's worker, which times it (synchronised) and reports the seconds back; a virtual clock
hands exactly those seconds to pytest-benchmark, so pipe round trips are not counted."""

import os

import pytest

from bench.config import Settings
from bench.runner import Worker


class StepClock:
    """A clock pytest-benchmark reads; it advances only by the worker-measured step times."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def workers():
    pool: dict[str, Worker] = {}
    settings = Settings(threads=int(os.environ.get("CNN_BENCH_THREADS", "0")), timeout_s=600)

    def get(framework: str) -> Worker:
        if framework not in pool:
            worker = Worker(framework, settings, log_path=None)
            worker.start(settings.timeout_s)
            pool[framework] = worker
        return pool[framework]

    yield get
    for worker in pool.values():
        worker.close()
