"""Keras 3 on JAX: the same Keras models as the TensorFlow engine, stepped by jitted stateless functions.

The step is the Keras 3 custom-training-loop pattern for JAX: the model's variables are pulled out
as arrays once, `model.stateless_call` runs the forward pass, `jax.value_and_grad` the backward,
`optimizer.stateless_apply` the SGD-momentum update, all inside one `jax.jit` whose state buffers are
donated; the arrays stay on the device between steps and are written back to the Keras variables only
when a test asks. JAX dispatches asynchronously (also on a CPU), so a step's return is not its end:
`sync` blocks on its output, and the harness takes latency from a synchronous pass, as on a GPU.

KERAS_BACKEND is process-wide: this engine always has a worker of its own.
"""

from __future__ import annotations

import gc
import os
from typing import Any

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported anywhere in this process
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # take GPU memory as needed, as the others

from bench.backends import (  # noqa: E402
    MallocBacked,
    Prepared,
    StepHook,
    Wrap,
    is_allocation_failure,  # noqa: E402
    refuse_wrap,
)
from bench.config import Config, Settings  # noqa: E402
from implementations import build, count_params, require  # noqa: E402

jax = require("keras-jax")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench.backends.keras_recipe import loss_function, make_optimizer  # noqa: E402

_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _float64_everywhere() -> None:
    """For the float64 test hook: JAX with 64-bit types, and Keras promoting float64 to float64 as it does
    on TensorFlow. Off TensorFlow, Keras maps every promoted float64 to float32 to match JAX's default
    (64-bit off), so its means, reductions and losses ran in float32 inside a float64 model (1e-7
    relative error in inference, against 4e-16 on TensorFlow)."""
    from keras.src.backend.common import dtypes

    jax.config.update("jax_enable_x64", True)
    dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"


class JaxBackend(MallocBacked):
    name = "keras-jax"

    def __init__(self):
        self._cached = None  # {"key", "model"} of the last model built

    def setup_process(self, settings: Settings) -> dict:
        threads = settings.resolved_threads()
        cores = os.cpu_count() or 1
        if threads < cores and hasattr(os, "sched_setaffinity"):
            # XLA's CPU client sizes its pool from the cores it may use: fewer threads means fewer cores.
            os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
        if keras.backend.backend() != "jax":
            raise RuntimeError(f"Keras was already imported with the {keras.backend.backend()!r} backend")
        devices = jax.devices()
        env = {
            "framework_version": jax.__version__,
            "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "jax_platform": devices[0].platform,
            "intra_op_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores,
            "inter_op_threads": 1,
            "synchronous_execution": False,  # JAX dispatches asynchronously: latency from a synchronous pass
            "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        }
        if devices[0].platform == "gpu":
            env["device_name"] = devices[0].device_kind
            env["gpus"] = len(devices)
        return env

    def warm_profiler(self) -> None:
        """Nothing to warm: this engine's explain pass starts no profiler on a CPU."""

    def warm_framework(self) -> None:
        """A tiny jitted convolution with a gradient, so JAX's lazy start-up is paid before the worker's
        memory baseline is taken."""
        import jax.numpy as jnp

        def loss(kernel, x):
            dimension_numbers = ("NHWC", "HWIO", "NHWC")
            return jnp.sum(jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dimension_numbers))

        grad = jax.jit(jax.grad(loss))
        x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3), dtype=np.float32))
        jax.block_until_ready(grad(jnp.ones((3, 3, 3, 4), jnp.float32), x))

    def _device(self, config: Config):
        if config.device == "cuda":
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if not gpus:
                raise RuntimeError("device 'cuda' was asked for but JAX sees no GPU (install jax[cuda12])")
            return gpus[0]
        return jax.devices("cpu")[0]

    @staticmethod
    def _key(config: Config, settings: Settings) -> tuple:
        return (config.model, config.image_size, config.precision, config.device, settings.seed)

    def drop_other(self, config: Config, settings: Settings) -> None:
        if self._cached is not None and self._cached["key"] != self._key(config, settings):
            self.release()

    def _model(self, config: Config, settings: Settings, hook: StepHook | None):
        key = self._key(config, settings)
        if hook is None and self._cached is not None and self._cached["key"] == key:
            return self._cached["model"]
        self.release()
        if hook is not None and hook.dtype == "float64":
            _float64_everywhere()
        policy = "float64" if hook is not None and hook.dtype == "float64" else _POLICIES[config.precision]
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(settings.seed)
        options: dict[str, Any] = {"dropout": hook.dropout} if hook else {}
        with jax.default_device(self._device(config)):
            model = build(config.model, "keras-jax", image_size=config.image_size, **options)
        if hook is None:
            self._cached = {"key": key, "model": model}
        return model

    def prepare(
        self, config: Config, settings: Settings, hook: StepHook | None = None, wrap: Wrap | None = None
    ) -> Prepared:
        refuse_wrap(wrap)
        device = self._device(config)
        model = self._model(config, settings, hook)
        num_classes = model.output_shape[-1]
        float64 = hook is not None and hook.dtype == "float64"
        dtype = np.float64 if float64 else np.float32
        if hook is not None:
            host_inputs = [np.asarray(x, dtype=dtype).transpose(0, 2, 3, 1) for x in hook.inputs]
            host_labels = [np.asarray(y, dtype=np.int32) for y in hook.labels]
        else:
            rng = np.random.default_rng(settings.seed)
            shape = (config.batch_size, config.image_size, config.image_size, 3)
            host_inputs = [rng.standard_normal(shape, dtype=np.float32) for _ in range(settings.inputs)]
            host_labels = [rng.integers(0, num_classes, config.batch_size, dtype=np.int32) for _ in host_inputs]
        inputs = [jax.device_put(x, device) for x in host_inputs]
        labels = [jax.device_put(y, device) for y in host_labels]
        pull, write_back, device_step = self._step_function(model, config)
        if config.mode == "train":
            self._cached = None  # its buffers are donated to the step: never reused by another configuration
        state: list = []
        counter = [0]
        last = [None]

        def step():
            if not state:  # the model's weights as they are at the first step (a test may set them first)
                state[:] = jax.device_put(pull(), device)
            i = counter[0] % len(inputs)
            counter[0] += 1
            output, new_state = device_step(state, inputs[i], labels[i])
            state[:] = new_state
            last[0] = output
            return output

        def export_weights() -> None:
            if state:
                write_back(state)

        def sync() -> None:
            if last[0] is not None:
                jax.block_until_ready(last[0])

        def feed(x, y) -> None:
            inputs[:] = [jax.device_put(np.asarray(x, dtype=dtype).transpose(0, 2, 3, 1), device)]
            labels[:] = [jax.device_put(np.asarray(y, dtype=np.int32), device)]
            counter[0] = 0

        name = device.device_kind if device.platform == "gpu" else None
        return Prepared(
            step=step,
            sync=sync,
            params=count_params(model),
            device_name=name,
            model=model,
            handle=(inputs, labels, state),
            synchronous=False,
            export_weights=export_weights,
            feed=feed if hook is not None else None,
        )

    @staticmethod
    def _step_function(model, config: Config):
        """(pull, write_back, step): `pull()` reads the model's variables as arrays; the step maps
        (state, x, y) to (output, state), jitted, a training step with the state donated so XLA
        updates the weights in place; `write_back(state)` copies a state into the Keras variables."""

        def variables() -> list:
            return [[v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]]

        def write_back(current) -> None:
            for group, values in zip((model.trainable_variables, model.non_trainable_variables), current[:2]):
                for variable, value in zip(group, values, strict=True):
                    variable.assign(jax.numpy.array(value, copy=True))  # the state's buffers are donated next step

        if config.mode == "train":
            optimizer = make_optimizer(loss_scaling=config.precision == "fp16")
            optimizer.build(model.trainable_variables)
            loss_dtype = "float64" if model.dtype_policy.compute_dtype == "float64" else "float32"
            loss_fn = loss_function(loss_dtype)

            def loss_and_state(trainable, non_trainable, x, y):
                logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
                if logits.dtype in (jax.numpy.float16, jax.numpy.bfloat16):
                    logits = logits.astype(jax.numpy.float32)
                loss = loss_fn(y, logits)
                return loss, non_trainable

            gradient = jax.value_and_grad(loss_and_state, has_aux=True)

            def train_step(state, x, y):
                trainable, non_trainable, optimizer_state = state
                (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
                trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
                return loss, [trainable, non_trainable, optimizer_state]

            def pull() -> list:
                return [*variables(), [v.value for v in optimizer.variables]]

            return pull, write_back, jax.jit(train_step, donate_argnums=0)

        @jax.jit
        def logits_of(state, x):
            trainable, non_trainable = state
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return logits

        def infer_step(state, x, y):  # the weights are not outputs of the jitted call: XLA would copy them
            return logits_of(state, x), state

        return variables, write_back, infer_step

    def operator_categories(self, prepared: Prepared, config: Config, steps: int) -> dict:
        """The prepared step's time per operator category under jax.profiler, read with xprof, on a GPU; a CPU's
        JAX profile holds no per-operator statistics, which is what is returned there."""
        if config.device != "cuda":
            return {"categories_unavailable": "JAX's profile on a CPU holds no per-operator statistics"}
        import tempfile
        from pathlib import Path

        from bench.backends.xplane import categories_from_trace
        from implementations import get_spec
        from implementations.keras_models import keras_name
        from implementations.lowering import lower

        layer_ops = {keras_name(layer.name): layer.op for layer in lower(get_spec(config.model), config.image_size)}
        prepared.step()
        prepared.sync()
        with tempfile.TemporaryDirectory(prefix="cnn-bench-explain-") as logdir:
            jax.profiler.start_trace(logdir)
            try:
                for _ in range(steps):
                    prepared.step()
                    prepared.sync()
            finally:
                jax.profiler.stop_trace()
            return categories_from_trace(Path(logdir), layer_ops, steps)

    def reset_peak_memory(self, config: Config) -> None:
        return None  # JAX has no resettable peak: a GPU's peak comes from the device's own statistics

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        if config.device == "cuda":
            stats = self._device(config).memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return stats["peak_bytes_in_use"], "jax Device.memory_stats peak_bytes_in_use (since start)"
        return None, None

    def release(self) -> None:
        self._cached = None
        keras.backend.clear_session(free_memory=False)  # one garbage collection, after the caches go too
        jax.clear_caches()
        gc.collect()

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        return is_allocation_failure(error)
