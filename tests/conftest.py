"""Shared test set-up: quiet TensorFlow, import torch before TensorFlow, and the published figures."""

import os

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
