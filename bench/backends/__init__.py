"""One small backend per framework: set up the process, build a model and its step, synchronise,
read peak memory, classify OOM, report versions. Only these modules import a framework."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Prepared:
    """A built model with its synthetic inputs and a ready step."""

    step: Callable[[], None]
    clock: Any  # start() / lap() / stop() -> per-step seconds
    params: int
    device_name: str | None
    handle: Any = None  # whatever the backend must keep alive


def get_backend(framework: str):
    """The backend for a framework; CNN_BENCH_BACKEND=fake selects the test double for either."""
    if os.environ.get("CNN_BENCH_BACKEND") == "fake":
        from .fake_backend import FakeBackend

        return FakeBackend(framework)
    if framework == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend()
    if framework == "tensorflow":
        from .tf_backend import TensorFlowBackend

        return TensorFlowBackend()
    raise ValueError(f"no backend for framework {framework!r}")
