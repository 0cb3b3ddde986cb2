"""TensorFlow backend: Keras 3 models, a tf.function step with GradientTape (XLA when compiled),
the Keras mixed-precision policy for bf16/fp16, memory growth on every GPU.

Data parallelism: `prepare(..., wrap=strategy)` with a tf.distribute strategy (the scaling study's
MirroredStrategy or MultiWorkerMirroredStrategy) builds the model and optimizer under its scope and runs the same
step in every replica (each its own batch of the configuration's size; Keras divides the recipe's mean loss by the
replicas and its optimizer sums the gradients across them, giving the mean over the global batch); `Prepared.no_exchange`
is the same forward and backward with the gradients kept local, and the optimizer alone on a copy of the weights.

A built model is kept for the next configuration of the same model, size, precision and compile
setting, so a model is built once per worker. Each mode and batch size gets its own step, traced for its
static shape (the previous one is dropped first, so its graph is not counted in the next peak): a batch-polymorphic signature (None batch dimension) made ResNet-20 CIFAR training 1.08x
slower [0.91-0.97] on our CPU (`python -m bench.studies.tf_signature`), so it is not used."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"  # process-wide: this engine has a worker of its own

from bench.backends import (  # noqa: E402
    WRAP_REFUSED,
    Prepared,
    StepHook,
    Wrap,
    is_allocation_failure,  # noqa: E402
)
from bench.config import Config, Settings  # noqa: E402
from implementations import build, count_params, require  # noqa: E402

tf = require("keras-tensorflow", torch_first=False)  # this worker never loads torch, so never triton
import keras  # noqa: E402

from bench.backends.keras_recipe import loss_function, make_optimizer  # noqa: E402

_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


class TensorFlowBackend:
    name = "keras-tensorflow"

    def __init__(self):
        self._cached = None  # {"key", "model", "steps"} of the last model built

    def setup_process(self, settings: Settings) -> dict:
        threads = settings.resolved_threads()
        # TensorFlow ignores OMP_NUM_THREADS: set its pools explicitly, as PyTorch's are.
        inter_op = settings.tf_inter_op_threads or threads
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:  # otherwise TensorFlow reserves nearly all device memory at start
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.experimental.enable_tensor_float_32_execution(settings.tf32)
        build_info = tf.sysconfig.get_build_info()
        env = {
            "framework_version": tf.__version__,
            "keras_version": keras.__version__,
            "intra_op_threads": threads,
            "inter_op_threads": inter_op,
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "memory_growth": bool(gpus),
            "flush_denormal": "TensorFlow's thread pools flush denormals (default)",
            "gpus": len(gpus),
            # Synchronous eager execution: on a CPU a step has finished when its call returns.
            "synchronous_execution": tf.config.experimental.get_synchronous_execution(),
            "cuda_version": build_info.get("cuda_version"),
            "cudnn_version": build_info.get("cudnn_version"),
        }
        if gpus:
            env["device_name"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        return env

    def warm_framework(self) -> None:
        """A tiny traced convolution with a gradient, so TensorFlow's lazy start-up is paid before the
        worker's memory baseline is taken."""
        kernel = tf.Variable(tf.random.normal((3, 3, 3, 4)))

        @tf.function
        def tiny(x):
            with tf.GradientTape() as tape:
                y = tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME"))
            return tape.gradient(y, kernel)

        tiny(tf.random.normal((2, 8, 8, 3))).numpy()

    def warm_profiler(self) -> None:
        """One tiny traced step under TensorFlow's profiler, so its lasting start-up memory is in the worker's
        baseline, not in the peak of the configuration measured after the first explain pass."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cnn-bench-warm-") as logdir:
            tf.profiler.experimental.start(logdir)
            try:
                self.warm_framework()
            finally:
                tf.profiler.experimental.stop()

    def _device(self, config: Config) -> str:
        if config.device == "cuda":
            if not tf.config.list_physical_devices("GPU"):
                raise RuntimeError("device 'cuda' was asked for but TensorFlow sees no GPU")
            return "/GPU:0"
        return "/CPU:0"

    @staticmethod
    def _key(config: Config, settings: Settings) -> tuple:
        return (config.model, config.image_size, config.precision, config.compile, config.device, settings.seed)

    def drop_other(self, config: Config, settings: Settings) -> None:
        """Free a kept model that `config` will not reuse, and any other configuration's traced step,
        before this configuration's memory is measured."""
        if self._cached is None:
            return
        if self._cached["key"] != self._key(config, settings):
            self.release()
        elif set(self._cached["steps"]) - {(config.mode, config.batch_size)}:
            # A traced step holds its graph (and a training step its optimizer): not this configuration's.
            self._cached["steps"] = {}
            gc.collect()

    def _model(self, config: Config, settings: Settings, device: str, hook: StepHook | None, strategy=None) -> dict:
        key = self._key(config, settings)
        if hook is None and strategy is None and self._cached is not None and self._cached["key"] == key:
            return self._cached
        self.release()
        policy = "float64" if hook is not None and hook.dtype == "float64" else _POLICIES[config.precision]
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(settings.seed)
        options: dict[str, Any] = {"dropout": hook.dropout} if hook else {}
        with strategy.scope() if strategy is not None else tf.device(device):
            model = build(config.model, "keras-tensorflow", image_size=config.image_size, **options)
        entry = {"key": key, "model": model, "steps": {}}
        if hook is None and strategy is None:
            self._cached = entry
        return entry

    def _step_function(self, entry: dict, config: Config, strategy=None):
        """The step function of a mode and batch size (traced for its static shape); under a strategy, the same
        step in every replica."""
        if (config.mode, config.batch_size) in entry["steps"]:
            return entry["steps"][(config.mode, config.batch_size)]
        model = entry["model"]
        jit = True if config.compile == "on" else None  # None: TensorFlow's default execution, no XLA

        def traced(function):
            """The step traced once: run as it is, or in every replica of the strategy."""
            if strategy is None:
                return tf.function(function, jit_compile=jit)

            def in_every_replica(x, y):
                return strategy.run(function, args=(x, y))

            return tf.function(in_every_replica, jit_compile=jit)

        if config.mode == "train":
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                optimizer = make_optimizer(loss_scaling=config.precision == "fp16")
                if strategy is not None:
                    optimizer.build(model.trainable_variables)  # outside the replicas' step (Keras 3 requires it)
            # Keras losses compute in floatx() (float32) unless told: follow a float64 model (the test hook).
            loss_dtype = "float64" if model.dtype_policy.compute_dtype == "float64" else "float32"
            loss_fn = loss_function(loss_dtype)

            def loss_and_grads(x, y):
                with tf.GradientTape() as tape:
                    logits = model(x, training=True)
                    if logits.dtype in (tf.float16, tf.bfloat16):  # never a downcast of float64
                        logits = tf.cast(logits, tf.float32)
                    # Under a strategy Keras divides each replica's mean over its batch by the replicas
                    # (keras.losses' scale_loss_for_distribution) and its optimizer sums the replicas' gradients:
                    # the update is the mean over the global batch (tests/test_scaling.py checks it).
                    loss = loss_fn(y, logits)
                    scaled = optimizer.scale_loss(loss)
                return loss, tape.gradient(scaled, model.trainable_variables)

            def train_step(x, y):
                loss, grads = loss_and_grads(x, y)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            device_step = traced(train_step)
            entry["loss_and_grads"] = loss_and_grads  # the no-exchange control's forward and backward

        else:

            def infer_step(x, y):
                return model(x, training=False)

            device_step = traced(infer_step)

        entry["steps"][(config.mode, config.batch_size)] = device_step
        return device_step

    @staticmethod
    def _strategy(wrap: Wrap | None):
        """A tf.distribute strategy is this engine's data-parallel wrapping; PyTorch's module wrapper is refused."""
        if wrap is None or isinstance(wrap, tf.distribute.Strategy):
            return wrap
        raise ValueError(WRAP_REFUSED)

    def _no_exchange(self, entry: dict, strategy, inputs: list, labels: list):
        """The wrapped training step with no gradient exchange, for the scaling study: every replica's forward
        and backward (the step's own loss and gradients, not reduced), then the optimizer alone, on one copy of
        the weights and gradients of ones (no replica's update waits for another's)."""
        loss_and_grads = entry["loss_and_grads"]
        model = entry["model"]

        @tf.function
        def local(x, y):
            def replica(x, y):
                _, grads = loss_and_grads(x, y)
                return tf.add_n([tf.reduce_sum(g) for g in grads])

            return strategy.run(replica, args=(x, y))

        ones = [tf.ones_like(v) for v in model.trainable_variables]
        copies = [keras.Variable(v.numpy()) for v in model.trainable_variables]
        alone = make_optimizer()
        alone.build(copies)

        @tf.function
        def optimizer_only():
            alone.apply_gradients(zip(ones, copies))
            return alone.iterations

        def no_exchange():
            _fetch(local(inputs[0], labels[0]), strategy)
            optimizer_only().numpy()

        return no_exchange

    def prepare(
        self, config: Config, settings: Settings, hook: StepHook | None = None, wrap: Wrap | None = None
    ) -> Prepared:
        strategy = self._strategy(wrap)
        device = self._device(config)
        entry = self._model(config, settings, device, hook, strategy)
        model = entry["model"]
        device_step = self._step_function(entry, config, strategy)
        num_classes = model.output_shape[-1]
        # Inputs in float32 (mixed policies cast inside the model), in float64 for the test hook: a Keras
        # Input is float32 whatever the policy, and rounding float64 images to it changed the updates.
        dtype = tf.float64 if hook is not None and hook.dtype == "float64" else tf.float32
        with tf.device(device):
            if hook is not None:
                inputs = [tf.constant(x.transpose(0, 2, 3, 1), dtype=dtype) for x in hook.inputs]
                labels = [tf.constant(y, dtype=tf.int32) for y in hook.labels]
            else:
                shape = (config.batch_size, config.image_size, config.image_size, 3)
                inputs = [tf.random.normal(shape, seed=settings.seed + i, dtype=dtype) for i in range(settings.inputs)]
                labels = [
                    tf.random.uniform((config.batch_size,), 0, num_classes, dtype=tf.int32, seed=settings.seed + i)
                    for i in range(settings.inputs)
                ]
        if strategy is not None:
            inputs, labels = _distribute(strategy, inputs, labels, config, settings, hook is not None, num_classes)
        counter = [0]
        last = [None]

        def step():
            i = counter[0] % len(inputs)
            counter[0] += 1
            last[0] = device_step(inputs[i], labels[i])
            return last[0]

        def sync() -> None:
            # Fetching a value to the host is TensorFlow's synchronisation point.
            if last[0] is not None:
                _fetch(last[0], strategy)

        def feed(x, y) -> None:
            with tf.device(device):
                inputs[:] = [tf.constant(x.transpose(0, 2, 3, 1), dtype=dtype)]
                labels[:] = [tf.constant(y, dtype=tf.int32)]
            counter[0] = 0

        name = None
        if device.startswith("/GPU"):
            gpu = tf.config.list_physical_devices("GPU")[0]
            name = tf.config.experimental.get_device_details(gpu).get("device_name")
        no_exchange = None
        if strategy is not None and config.mode == "train":
            no_exchange = self._no_exchange(entry, strategy, inputs, labels)
        return Prepared(
            step=step, sync=sync, params=count_params(model), device_name=name, model=model, handle=(inputs, labels),
            feed=feed if hook is not None and strategy is None else None, no_exchange=no_exchange,
        )  # fmt: skip

    def operator_categories(self, prepared: Prepared, config: Config, steps: int) -> dict:
        """The prepared step's time per operator category over `steps` steps under TensorFlow's profiler, read
        with xprof, and their mean wall time under it (the caller has run the step warm before); a TensorFlow op
        takes the category of its Keras layer's op."""
        import tempfile
        from pathlib import Path

        from bench.backends.xplane import categories_from_trace
        from implementations import get_spec
        from implementations.keras_models import keras_name
        from implementations.lowering import lower

        layer_ops = {keras_name(layer.name): layer.op for layer in lower(get_spec(config.model), config.image_size)}
        with tempfile.TemporaryDirectory(prefix="cnn-bench-explain-") as logdir:
            tf.profiler.experimental.start(logdir)
            try:
                started = time.perf_counter()
                for number in range(steps):
                    with tf.profiler.experimental.Trace("step", step_num=number, _r=1):
                        prepared.step()
                        prepared.sync()
                wall = (time.perf_counter() - started) / steps
            finally:
                tf.profiler.experimental.stop()
            return {**categories_from_trace(Path(logdir), layer_ops, steps), "profiled_step_s": wall}

    def reset_peak_memory(self, config: Config) -> None:
        if config.device == "cuda":
            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        if config.device == "cuda":
            return tf.config.experimental.get_memory_info("GPU:0")[
                "peak"
            ], "tf.config.experimental.get_memory_info peak"
        return None, None

    # After a training configuration is let go of, its weights and momentum stay allocated (no Python
    # object holds them any more; TensorFlow does): what stays is not only caches (see Session).
    keeps_released_tensors = True

    def pool_in_use(self, config: Config):
        """On a CPU, a function giving the bytes in use in TensorFlow's own pool (oneDNN's allocator serves
        tensors of 256 KiB and more from a pool it keeps; smaller ones come from malloc), or None."""
        if config.device != "cpu":
            return None
        try:
            tf.config.experimental.get_memory_info("CPU:0")
        except ValueError:  # an allocator that keeps no statistics: all of it is malloc's
            return None
        return lambda: tf.config.experimental.get_memory_info("CPU:0")["current"]

    def release(self) -> None:
        self._cached = None
        keras.backend.clear_session()  # and a garbage collection (free_memory=True): a second one finds nothing

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        return isinstance(error, tf.errors.ResourceExhaustedError) or is_allocation_failure(error)


def _fetch(value, strategy=None) -> None:
    """Wait for a step's output by fetching it to the host (every replica's part under a strategy)."""
    parts = strategy.experimental_local_results(value) if strategy is not None else value
    tf.nest.map_structure(lambda t: t.numpy(), parts)


def _distribute(strategy, inputs: list, labels: list, config: Config, settings: Settings, split: bool, classes: int):
    """Per-replica inputs under a strategy. The test hook's batches are the global batch, split among the replicas
    in order (replica r its r-th slice); otherwise each replica draws its own batch of the configuration's size
    (seeded by the process's seed and the replica's number, so no two replicas see the same images)."""
    replicas = strategy.num_replicas_in_sync

    def per_replica(i: int):
        def value(context):
            r = context.replica_id_in_sync_group
            if split:
                size = inputs[i].shape[0] // replicas
                return inputs[i][r * size : (r + 1) * size], labels[i][r * size : (r + 1) * size]
            seed = settings.seed * 1000 + r
            shape = (config.batch_size, config.image_size, config.image_size, 3)
            images = tf.random.stateless_normal(shape, seed=(seed, i), dtype=inputs[i].dtype)
            return images, tf.random.stateless_uniform((config.batch_size,), seed=(seed, i + 1_000_000), minval=0,
                                                      maxval=classes, dtype=tf.int32)  # fmt: skip

        return strategy.experimental_distribute_values_from_function(value)

    pairs = [per_replica(i) for i in range(len(inputs))]
    return [images for images, _ in pairs], [y for _, y in pairs]
