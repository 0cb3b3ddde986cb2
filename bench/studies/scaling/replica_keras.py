"""Keras-on-TensorFlow replicas of a data-parallel measurement, through tf.distribute: the `replica` task of the
one task entry (one process for every replica under MirroredStrategy; one per worker under the multi-worker one).

    python -m bench.execute.launch bench.execute.tasks keras-tensorflow replica REQUEST.json 'RESULT-{rank}.json'

`mirrored`: one process, MirroredStrategy over N devices (on a CPU, N logical CPU devices sharing the
process's thread pool). `multi-worker`: one process per worker, MultiWorkerMirroredStrategy configured
by TF_CONFIG (set by the driver), each worker one device. The step is the harness's own
(`TensorFlowBackend.prepare` with the strategy as its data-parallel wrapping): the model and optimizer built under
the strategy's scope, the step run in every replica, Keras's optimizer all-reducing the gradients. The step
without gradient exchange (`Prepared.no_exchange`) is the same forward and backward in every replica (gradients
computed, not reduced) plus the optimizer alone on a copy of the weights; the difference is the exposed
communication. Each worker returns its window times (the task entry writes them to the worker's own file); the driver takes the
slowest per window.
"""

from __future__ import annotations

import os
import resource
import time


def replica(request: dict, context) -> dict:
    """The task: this worker's part of the job; the task entry has set the process up (thread pools, memory
    growth, TF32: the backend's own set-up, as in every other TensorFlow path) and picked Keras's backend."""
    import tensorflow as tf

    from bench.config import Config, Settings
    from bench.execute.tasks import rank
    from bench.measure.timing import alternating

    backend, task = context.backend, rank()
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

    # The harness's own training step (bench/backends/tf_backend.py, proven by tests/test_timed_steps.py, and under
    # a strategy by tests/test_scaling.py), its replicas under the strategy: the same recipe, inputs and layout as a
    # `bench run` cell of this configuration, with the spec's dropout. One seed for the weights on every worker; each
    # replica draws its own inputs (by its number in the sync group, across workers).
    config = Config("keras-tensorflow", request["model"], request["batch_size"], "train", layout="channels_last",
                    image_size=request["image_size"], device=request["device"])  # fmt: skip
    settings = Settings(threads=request["threads"], tf32=request.get("tf32", True), seed=request["seed"])
    prepared = backend.prepare(config, settings, wrap=strategy)
    no_exchange = prepared.no_exchange
    assert no_exchange is not None

    def step():
        prepared.step()
        prepared.sync()

    def window(function, steps):
        start = time.perf_counter()
        for _ in range(steps):
            function()
        return time.perf_counter() - start

    first = window(step, 1)
    for _ in range(request["warmup_steps"]):
        step()
        no_exchange()
    probe = window(step, 2) / 2
    steps = max(1, int(request["min_window_s"] / max(probe, 1e-6)) + 1)
    # Every worker must run the same number of collective steps: agree on the mean (tf.distribute has no MAX).
    agreed = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(lambda: tf.constant(float(steps))), axis=None)
    steps = max(1, round(float(agreed)))
    full, local_times = [], []
    for _, name in alternating(("full", "local"), request["windows"]):
        if name == "full":
            full.append(window(step, steps))
        else:
            local_times.append(window(no_exchange, steps))
    strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1)), axis=None
    )  # no worker leaves mid-collective
    return {
        "task": task, "first_step_s": first, "steps_per_window": steps, "full_window_s": full,
        "local_window_s": local_times, "world_size": strategy.num_replicas_in_sync,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "collective": _collective(strategy),
        "tf_version": tf.__version__, "process_env": context.env,
    }  # fmt: skip


def _collective(strategy) -> str:
    """The strategy and how it reduces across devices, as far as TensorFlow says."""
    ops = getattr(strategy.extended, "_cross_device_ops", None) or getattr(strategy.extended, "_collective_ops", None)
    return type(strategy).__name__ + (f" ({type(ops).__name__})" if ops is not None else "")
