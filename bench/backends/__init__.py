"""One small backend per framework: set up the process, build a model and its step, synchronise,
read peak memory, classify OOM, report versions. Only these modules import a framework."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Prepared:
    """A built model with its inputs and a ready step. `step()` returns the step's output (the loss when
    training, the logits when inferring) without waiting for it; `sync()` waits for the device."""

    step: Callable[[], Any]
    sync: Callable[[], None]
    params: int
    device_name: str | None
    model: Any = None
    layout: str = "channels_last"  # the memory format the step runs in now
    set_layout: Callable[[str], None] | None = None  # PyTorch only: switch memory format in place
    handle: Any = None  # whatever else the backend must keep alive
    # True where a step has finished when step() returns on a CPU (PyTorch, TensorFlow's synchronous
    # eager executor): per-step clock reads are then exact. JAX dispatches asynchronously: False.
    device_uuid: str | None = None  # the CUDA device's UUID where the framework gives it (NVML's handle)
    synchronous: bool = True
    # Engines that step on copies of the weights (JAX): write the current ones back into `model`.
    export_weights: Callable[[], None] | None = None
    # With a StepHook: feed(images, labels) gives the next step this batch (NCHW NumPy images, int labels, the
    # hook's batch size) in place of the hook's rotation; a study that trains on data calls it before each step.
    feed: Callable[[Any, Any], None] | None = None


@dataclass(frozen=True)
class StepHook:
    """For tests: run a backend's own prepared step (the code the harness times) in a chosen dtype on
    given inputs, with a freshly built model and no cache. Inputs and labels are NumPy arrays, images
    NCHW (the TensorFlow backend transposes them); the step rotates through them in order."""

    dtype: str = "float64"
    inputs: tuple = ()
    labels: tuple = ()
    dropout: float = 0.0


def get_backend(framework: str):
    """The backend for a framework; CNN_BENCH_BACKEND=fake selects the test double for either."""
    if os.environ.get("CNN_BENCH_BACKEND") == "fake":
        from .fake_backend import FakeBackend

        return FakeBackend(framework)
    if framework == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend()
    if framework == "keras-tensorflow":
        from .tf_backend import TensorFlowBackend

        return TensorFlowBackend()
    if framework == "keras-jax":
        from .jax_backend import JaxBackend

        return JaxBackend()
    raise ValueError(f"no backend for framework {framework!r}")
