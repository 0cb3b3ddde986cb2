"""Does a batch-polymorphic tf.function signature slow TensorFlow's step? A benchmark: `python -m bench.studies.tf_signature`.

The same Keras model's training and inference step as a tf.function traced for the static batch shape,
and as one with a None batch dimension in its input signature (one trace for every batch size), take
turns, one window each, the order reversed every pair. The ratio is the median of per-pair ratios with
its 95% interval. The TensorFlow backend uses static shapes because of what this measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

CASES = [("resnet20_cifar", 32), ("resnet18", 64), ("vgg11", 32)]
BATCH = 8
PAIRS = 9
MIN_WINDOW_S = 0.3


def compare(model_name: str, size: int, mode: str) -> str:
    import tensorflow as tf

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from bench.measure.stats import paired_ratio
    from bench.measure.timing import alternating
    from implementations import build

    model = build(model_name, "keras-tensorflow", image_size=size)
    optimizer = make_optimizer()
    loss_fn = loss_function()

    def body(x, y):
        if mode == "infer":
            return model(x, training=False)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    static = tf.function(body)
    polymorphic = tf.function(
        body, input_signature=[tf.TensorSpec((None, size, size, 3)), tf.TensorSpec((None,), tf.int32)]
    )
    xs = [tf.random.normal((BATCH, size, size, 3), seed=i) for i in range(4)]
    ys = [tf.random.uniform((BATCH,), 0, model.output_shape[-1], dtype=tf.int32, seed=i) for i in range(4)]

    def run(step, steps: int) -> float:
        start, out = time.perf_counter(), None
        for i in range(steps):
            out = step(xs[i % 4], ys[i % 4])
        out.numpy()
        return time.perf_counter() - start

    for step in (static, polymorphic):
        run(step, 5)
    steps = max(1, int(MIN_WINDOW_S / (run(static, 2) / 2)))
    static_rates, polymorphic_rates = [], []
    for _, (step, rates) in alternating([(static, static_rates), (polymorphic, polymorphic_rates)], PAIRS):
        rates.append(steps * BATCH / run(step, steps))
    return paired_ratio(static_rates, polymorphic_rates).words()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.studies.tf_signature", description=__doc__).parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.backends.tf_backend import TensorFlowBackend
    from bench.config import Settings

    TensorFlowBackend().setup_process(Settings())  # the harness's thread pools
    print(f"Batch-polymorphic signature against static shapes, batch {BATCH}, {PAIRS} alternating pairs:")
    for model_name, size in CASES:
        for mode in ("train", "infer"):
            print(f"{model_name} {size} px {mode}: polymorphic is {compare(model_name, size, mode)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
