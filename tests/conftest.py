"""Shared test set-up: quiet TensorFlow, import torch before TensorFlow, memory handed back after each
test, and a plain `pytest` that leaves the benchmark suite out."""

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


@pytest.fixture(autouse=True)
def hand_memory_back():
    """After each test: drop Keras's global state and free what the test built (glibc keeps freed
    memory resident until trimmed), so the suite's peak is one test's, not the sum of them."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
