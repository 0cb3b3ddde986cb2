"""Keras-on-TensorFlow replicas of a data-parallel measurement, through tf.distribute.

    python -m bench.studies.scaling.replica_keras REQUEST.json

`mirrored`: one process, MirroredStrategy over N devices (on a CPU, N logical CPU devices sharing the
process's thread pool). `multi-worker`: one process per worker, MultiWorkerMirroredStrategy configured
by TF_CONFIG (set by the driver), each worker one device. The model and optimizer are built under the
strategy's scope; a step runs in every replica and Keras's optimizer all-reduces the gradients. The step
without gradient exchange is forward and backward in every replica (gradients computed, not reduced)
plus the optimizer alone on one replica's copy of the weights, timed apart; the difference is the
exposed communication. Each worker writes its window times; the driver takes the slowest per window.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def main() -> int:
    request = json.loads(Path(sys.argv[1]).read_text())
    status_dir = Path(request["status_dir"])
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    (status_dir / f"rank-{task}.started").write_text(str(os.getpid()))
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    from bench.backends.tf_backend import TensorFlowBackend
    from bench.config import Settings
    from bench.measure.timing import alternating

    # The backend's own process set-up (thread pools, memory growth, TF32), as in every other TensorFlow path.
    process_env = TensorFlowBackend().setup_process(
        Settings(threads=request["threads_per_process"], tf32=request.get("tf32", True))
    )
    replicas = request["replicas"]
    cuda = request["device"] == "cuda"
    if request["strategy"] == "multi-worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        if cuda:
            devices = [f"/gpu:{i}" for i in range(replicas)]
        else:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
            devices = [f"/cpu:{i}" for i in range(replicas)]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    if request.get("kill_rank") == task:
        os._exit(9)
    import keras

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from implementations import build

    keras.utils.set_random_seed(request["seed"])
    batch, size = request["batch_size"], request["image_size"]
    global_batch = batch * strategy.num_replicas_in_sync
    with strategy.scope():
        # The spec's dropout, as the harness's cells and the PyTorch replica (equal work on both sides).
        model = build(request["model"], "keras-tensorflow", image_size=size)
        optimizer = make_optimizer()
        optimizer.build(model.trainable_variables)  # built outside the replicas' step (a Keras 3 requirement)
        loss_fn = loss_function(reduction="sum")  # divided by the global batch in the step: the recipe's mean

    def per_replica(context):
        seed = request["seed"] + task * 1000 + context.replica_id_in_sync_group
        images = tf.random.stateless_normal((batch, size, size, 3), seed=(seed, 0))
        labels = tf.random.stateless_uniform((batch,), seed=(seed, 1), minval=0, maxval=10, dtype=tf.int32)
        return images, labels

    inputs = strategy.experimental_distribute_values_from_function(per_replica)

    @tf.function
    def step(inputs):
        def replica(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images, training=True)) / global_batch
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.run(replica, args=inputs)

    @tf.function
    def local(inputs):
        def replica(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images, training=True)) / global_batch
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, model.trainable_variables)])

        return strategy.run(replica, args=inputs)

    grads = [tf.ones_like(v) for v in model.trainable_variables]
    copies = [keras.Variable(v.numpy()) for v in model.trainable_variables]
    alone = make_optimizer()
    alone.build(copies)

    @tf.function
    def optimizer_only():
        alone.apply_gradients(zip(grads, copies))
        return alone.iterations

    def run(function, *args):
        result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy(), strategy.experimental_local_results(result) if args else result)

    def window(function, steps, *args):
        start = time.perf_counter()
        for _ in range(steps):
            run(function, *args)
        return time.perf_counter() - start

    first = window(step, 1, inputs)
    for _ in range(request["warmup_steps"]):
        run(step, inputs)
        run(local, inputs)
        run(optimizer_only)
    probe = window(step, 2, inputs) / 2
    steps = max(1, int(request["min_window_s"] / max(probe, 1e-6)) + 1)
    # Every worker must run the same number of collective steps: agree on the mean (tf.distribute has no MAX).
    agreed = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(lambda: tf.constant(float(steps))), axis=None)
    steps = max(1, round(float(agreed)))
    full, local_times = [], []
    for _, name in alternating(("full", "local"), request["windows"]):
        if name == "full":
            full.append(window(step, steps, inputs))
        else:
            local_times.append(window(local, steps, inputs) + window(optimizer_only, steps))
    strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1)), axis=None
    )  # no worker leaves mid-collective
    result = {
        "task": task, "first_step_s": first, "steps_per_window": steps, "full_window_s": full,
        "local_window_s": local_times, "world_size": strategy.num_replicas_in_sync,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "collective": _collective(strategy),
        "tf_version": tf.__version__, "process_env": process_env,
    }  # fmt: skip
    (status_dir / f"result-{task}.json").write_text(json.dumps(result))
    (status_dir / f"rank-{task}.done").write_text("ok")
    return 0


def _collective(strategy) -> str:
    """The strategy and how it reduces across devices, as far as TensorFlow says."""
    ops = getattr(strategy.extended, "_cross_device_ops", None) or getattr(strategy.extended, "_collective_ops", None)
    return type(strategy).__name__ + (f" ({type(ops).__name__})" if ops is not None else "")


if __name__ == "__main__":
    sys.exit(main())
