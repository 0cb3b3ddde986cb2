"""Shared test set-up: quiet TensorFlow, import torch before TensorFlow, memory handed back after a test
that grew the process, and a plain `pytest` that leaves the benchmark suite out."""

import gc
import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:  # torch first: with a CUDA build of torch, TensorFlow first then triton crashed the process
    import torch  # noqa: F401
except ImportError:
    pass


def pytest_ignore_collect(collection_path, config):
    """The benchmark suite runs only under --benchmark-only: a plain `pytest` stays quick."""
    if collection_path.name == "benchmarks" and not config.getoption("benchmark_only", default=False):
        return True
    return None


PAGE = os.sysconf("SC_PAGE_SIZE")
# Hand memory back once the process has grown by this much since it was last handed back: a full clean-up
# (Keras's clear_session, a full collection, malloc_trim) takes 0.6-0.7 s once TensorFlow is imported, and
# after each of the suite's 585 tests it was 6-7 minutes of the suite; most tests build nothing.
GROWTH = 256 * 2**20


def _resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


_CLEAN = {"resident": _resident()}


@pytest.fixture(autouse=True)
def hand_memory_back():
    """After a test that left the process 256 MiB above its last clean state: drop Keras's global state and
    free what the tests built (glibc keeps freed memory resident until trimmed), so the suite's peak is
    one test's plus at most that margin, not the sum of them."""
    yield
    if _resident() - _CLEAN["resident"] < GROWTH:
        return
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    _CLEAN["resident"] = _resident()
