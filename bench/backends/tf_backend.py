"""TensorFlow backend: Keras 3 models, a tf.function step with GradientTape (XLA when compiled),
the Keras mixed-precision policy for bf16/fp16, memory growth on every GPU."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from implementations import build, count_params, require  # noqa: E402

from ..config import Config, Settings  # noqa: E402
from ..timing import HostClock  # noqa: E402
from . import Prepared  # noqa: E402

tf = require("tensorflow")
import keras  # noqa: E402

_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


class TensorFlowBackend:
    name = "tensorflow"

    def setup_process(self, settings: Settings) -> dict:
        threads = settings.resolved_threads()
        # TensorFlow ignores OMP_NUM_THREADS: set its pools explicitly, as PyTorch's are.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:  # otherwise TensorFlow reserves nearly all device memory at start
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.experimental.enable_tensor_float_32_execution(settings.tf32)
        build_info = tf.sysconfig.get_build_info()
        env = {
            "framework_version": tf.__version__,
            "keras_version": keras.__version__,
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "memory_growth": bool(gpus),
            "flush_denormal": "TensorFlow's thread pools flush denormals (default)",
            "gpus": len(gpus),
            "cuda_version": build_info.get("cuda_version"),
            "cudnn_version": build_info.get("cudnn_version"),
        }
        if gpus:
            env["device_name"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
        return env

    def _device(self, config: Config) -> str:
        if config.device == "cuda":
            if not tf.config.list_physical_devices("GPU"):
                raise RuntimeError("device 'cuda' was asked for but TensorFlow sees no GPU")
            return "/GPU:0"
        return "/CPU:0"

    def prepare(self, config: Config, settings: Settings) -> Prepared:
        device = self._device(config)
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(_POLICIES[config.precision])
        keras.utils.set_random_seed(settings.seed)
        with tf.device(device):
            model = build(config.model, "tensorflow", image_size=config.image_size)
            num_classes = model.output_shape[-1]
            shape = (config.batch_size, config.image_size, config.image_size, 3)
            inputs = [tf.random.normal(shape, seed=settings.seed + i) for i in range(settings.inputs)]
            labels = [
                tf.random.uniform((config.batch_size,), 0, num_classes, dtype=tf.int32, seed=settings.seed + i)
                for i in range(settings.inputs)
            ]
        params = count_params(model)
        jit = True if config.compile == "on" else None  # None: TensorFlow's default execution, no XLA
        if config.mode == "train":
            optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
            if config.precision == "fp16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            @tf.function(jit_compile=jit)
            def device_step(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32))
                    scaled = optimizer.scale_loss(loss)
                grads = tape.gradient(scaled, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

        else:

            @tf.function(jit_compile=jit)
            def device_step(x, y):
                return tf.reduce_mean(tf.cast(model(x, training=False), tf.float32))

        counter = [0]
        last = [None]

        def step() -> None:
            i = counter[0] % len(inputs)
            counter[0] += 1
            last[0] = device_step(inputs[i], labels[i])

        def sync() -> None:
            # Fetching a value to the host is TensorFlow's synchronisation point.
            if last[0] is not None:
                last[0].numpy()

        name = None
        if device.startswith("/GPU"):
            gpu = tf.config.list_physical_devices("GPU")[0]
            name = tf.config.experimental.get_device_details(gpu).get("device_name")
        return Prepared(step=step, clock=HostClock(sync), params=params, device_name=name, handle=(model, inputs))

    def reset_peak_memory(self, config: Config) -> None:
        if config.device == "cuda":
            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        if config.device == "cuda":
            return tf.config.experimental.get_memory_info("GPU:0")[
                "peak"
            ], "tf.config.experimental.get_memory_info peak"
        return None, None

    def release(self) -> None:
        keras.backend.clear_session()

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        if isinstance(error, (tf.errors.ResourceExhaustedError, MemoryError)):
            return True
        return "out of memory" in str(error).lower()
