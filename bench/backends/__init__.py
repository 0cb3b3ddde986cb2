"""One small backend per framework: set up the process, build a model and its step, synchronise,
read peak memory, classify OOM, report versions. Only these modules import a framework."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bench.config import Config, Settings


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
    # Keras on TensorFlow under a tf.distribute strategy: the same training step with the gradients kept in each
    # replica (not exchanged), and the optimizer alone; the scaling study's control. PyTorch's is DDP's no_sync().
    no_exchange: Callable[[], None] | None = None


# A data-parallel wrapping of a built model. PyTorch: a callable applied to the built module (the module the step
# then runs, DistributedDataParallel). Keras on TensorFlow: a tf.distribute strategy, under whose scope the model
# and optimizer are built and whose replicas run the step.
Wrap = Any
WRAP_REFUSED = (
    "data-parallel wrapping is PyTorch's (a module wrapper: DistributedDataParallel) or Keras on TensorFlow's "
    "(a tf.distribute strategy); this engine takes neither"
)


def refuse_wrap(wrap: Wrap | None) -> None:
    """The prepare of an engine with no data-parallel wrapping (Keras on JAX, the test double)."""
    if wrap is not None:
        raise ValueError(WRAP_REFUSED)


@dataclass(frozen=True)
class StepHook:
    """For tests: run a backend's own prepared step (the code the harness times) in a chosen dtype on
    given inputs, with a freshly built model and no cache. Inputs and labels are NumPy arrays, images
    NCHW (the TensorFlow backend transposes them); the step rotates through them in order."""

    dtype: str = "float64"
    inputs: tuple = ()
    labels: tuple = ()
    dropout: float = 0.0


class Backend(Protocol):
    """What an engine provides, and all the harness and every study use of it: a fourth engine is this list.

    The training step inside `prepare` follows the one recipe (recipe.py); every study times what `prepare`
    or the engine's profile functions build from the same parts, and the equivalence tests prove them."""

    name: str
    # Whether a released configuration's tensors stay allocated (TensorFlow after training keeps its weights and
    # momentum): then only what stays in malloc's arenas is taken off a CPU peak as the framework's caches.
    keeps_released_tensors: bool

    def setup_process(self, settings: Settings) -> dict:
        """Threads, denormals, TF32, memory growth: once per process, before any model. Returns the environment."""
        ...

    def warm_framework(self) -> None:
        """Pay the framework's lazy start-up before the worker's memory baseline is taken."""
        ...

    def warm_profiler(self) -> None:
        """Pay the profiler's lasting start-up before the baseline, where the explain pass will use it."""
        ...

    def drop_other(self, config: Config, settings: Settings) -> None:
        """Free what a kept model or traced step of another configuration holds, before `config` is measured."""
        ...

    def prepare(
        self, config: Config, settings: Settings, hook: StepHook | None = None, wrap: Wrap | None = None
    ) -> Prepared:
        """Build (or reuse) the model and return its ready step. `wrap` is the scaling study's data parallelism:
        PyTorch applies it to the built model (DistributedDataParallel) and the step runs the wrapped module;
        Keras on TensorFlow takes a tf.distribute strategy and runs the same step in its replicas; an engine with
        neither refuses it (WRAP_REFUSED)."""
        ...

    def operator_categories(self, prepared: Prepared, config: Config, steps: int) -> dict:
        """Time per operator category of the prepared step under the framework's profiler, `steps` steps (the
        caller has run it warm): {"categories": seconds per step by category, each moment of wall time shared among
        the operators running in it, "profiled_steps", "profiled_step_s": the mean step under the profiler} or
        {"categories_unavailable": why}."""
        ...

    def reset_peak_memory(self, config: Config) -> None: ...

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        """The device allocator's peak since the reset, and its source; (None, None) where there is none."""
        ...

    def pool_in_use(self, config: Config) -> Callable[[], int] | None:
        """On a CPU, a function giving the bytes in use in the framework's own tensor pool, where it keeps one
        that malloc's figures cannot see into (TensorFlow under oneDNN); None where all of it is malloc's."""
        ...

    def release(self) -> None:
        """Let go of every model and cached step."""
        ...

    def is_oom(self, error: BaseException) -> bool:
        """Whether `error` is this framework's out-of-memory."""
        ...


class MallocBacked:
    """The memory rules of an engine whose CPU tensors all come from malloc and are freed when released
    (PyTorch, Keras on JAX, the test double): no pool of its own, nothing kept after release. An engine with
    a pool or kept tensors (TensorFlow) states both itself."""

    keeps_released_tensors = False

    def pool_in_use(self, config: Config) -> Callable[[], int] | None:
        return None


# Messages of allocation failures that are not typed as out-of-memory: cuDNN and cuBLAS workspaces, the CUDA
# runtime, XLA, and the host allocator. Every one is recorded as OOM, never as an error.
ALLOCATION_FAILURES = (
    "out of memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "cudaerrormemoryallocation",
    "resource_exhausted",
    "resource exhausted",
    "can't allocate memory",
    "failed to allocate",
)


def is_allocation_failure(error: BaseException) -> bool:
    """Whether `error` is an allocation failure by its type (MemoryError) or its message: for `Backend.is_oom`."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return any(message in text for message in ALLOCATION_FAILURES)


def get_backend(framework: str) -> Backend:
    """The backend for a framework; CNN_BENCH_BACKEND=fake selects the test double for either."""
    if os.environ.get("CNN_BENCH_BACKEND") == "fake":
        from bench.backends.fake_backend import FakeBackend

        return FakeBackend(framework)
    if framework == "torch":
        from bench.backends.torch_backend import TorchBackend

        return TorchBackend()
    if framework == "keras-tensorflow":
        from bench.backends.tf_backend import TensorFlowBackend

        return TensorFlowBackend()
    if framework == "keras-jax":
        from bench.backends.jax_backend import JaxBackend

        return JaxBackend()
    raise ValueError(f"no backend for framework {framework!r}")
