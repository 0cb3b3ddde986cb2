"""The Keras-on-TensorFlow side of a profile: stage timings, step split, operator categories from
TensorFlow's profiler (read with xprof), and a trace in TensorBoard's profile format."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from implementations import get_spec
from implementations.keras_models import keras_from_layers, keras_name
from implementations.lowering import lower, stage_slices

from .categories import CATEGORIES, tf_category
from .gradients import gradient_flow as _gradient_flow
from .measure import time_in_rounds

PROFILED_STEPS = 3
LEARNING_RATE = 0.01  # the harness's (the Keras optimizer keeps it in float32)


def profile(request: dict) -> dict:
    spec = get_spec(request["model"])
    size, batch, train = request["image_size"], request["batch_size"], request["mode"] == "train"
    classes = spec.default_classes
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if request["precision"] == "bf16" else "float32")
    keras.utils.set_random_seed(request["seed"])
    device = "/GPU:0" if request["device"] == "cuda" else "/CPU:0"
    rng = np.random.default_rng(request["seed"])
    with tf.device(device):
        lowered = lower(spec, size, classes)
        model = keras_from_layers(lowered, spec.name)
        stages = []
        for name, layers in stage_slices(lowered):
            stage = keras_from_layers(layers, f"{spec.name}_{name}")
            for layer in layers:  # the whole model's weights, by layer name
                weights = model.get_layer(keras_name(layer.name)).get_weights()
                if weights:
                    stage.get_layer(keras_name(layer.name)).set_weights(weights)
            stages.append((name, stage))
        images = tf.constant(rng.standard_normal((batch, size, size, 3)), tf.float32)
        labels = tf.constant(rng.integers(0, classes, batch), tf.int32)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        inputs, upstream, x = [], [], images
        for _, stage in stages:
            inputs.append(x)
            x = tf.cast(stage(x, training=False), tf.float32)
            upstream.append(tf.constant(rng.standard_normal(x.shape.as_list()), x.dtype))
        functions = {}
        for index, (name, stage) in enumerate(stages):
            functions.update(_stage_functions(name, stage, inputs[index], upstream[index], labels, loss_fn, train,
                                              last=index == len(stages) - 1))  # fmt: skip
        functions.update(_whole_functions(model, images, labels, loss_fn, train))
    result_box = {}

    def sync():
        value = result_box.get("last")
        if value is not None:
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, value)

    def keep(function):
        def call():
            result_box["last"] = function()

        return call

    timed = time_in_rounds(
        {name: keep(f) for name, f in functions.items()},
        sync,
        windows=request["windows"],
        min_window_s=request["min_window_s"],
    )
    result = {
        "engine": "keras-tensorflow",
        "layout": "channels_last",
        "timings": {name: asdict(t) for name, t in timed.items()},
        "saved_activation_bytes": {},
        "stages": [name for name, _ in stages],
    }
    if request["ops"] or request["trace"]:
        with tf.device(device):
            result.update(_operator_profile(spec, stages, lowered, images, labels, loss_fn, train, request))
    return result


def _touch(gradients):
    """One element of each gradient: the gradients must be computed, but a function that returned them all
    would copy every one out (hundreds of MB for VGG's head), which the training step never does."""
    return tf.stack([tf.reshape(g, [-1])[0] for g in gradients])


def _cast(logits):
    return tf.cast(logits, tf.float32) if logits.dtype != tf.float32 else logits


def _stage_functions(name, stage, source, gradient, labels, loss_fn, train, last):
    if not train:
        forward = tf.function(lambda: stage(source, training=False))
        return {f"{name}/forward": forward}
    variables = stage.trainable_variables

    @tf.function
    def forward():
        return stage(source, training=True)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(source)
            out = stage(source, training=True)
            if last:
                out = loss_fn(labels, _cast(out))
        if last:
            return _touch(tape.gradient(out, variables + [source]))
        return _touch(tape.gradient(out, variables + [source], output_gradients=tf.cast(gradient, out.dtype)))

    return {f"{name}/forward": forward, f"{name}/forward_backward": forward_backward}


def _whole_functions(model, images, labels, loss_fn, train):
    if not train:
        return {"whole/forward": tf.function(lambda: model(images, training=False))}
    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=0.9)

    @tf.function
    def forward():
        return loss_fn(labels, _cast(model(images, training=True)))

    @tf.function
    def gradients_of_the_batch():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, _cast(model(images, training=True)))
        return tape.gradient(loss, variables)

    @tf.function
    def forward_backward():
        return _touch(gradients_of_the_batch())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, _cast(model(images, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    # The optimizer alone, on copies of the weights holding real gradients (applying the same gradients
    # to the model itself, window after window, would walk its weights away).
    gradients = [tf.constant(g) for g in gradients_of_the_batch()]
    copies = [keras.Variable(v.numpy(), name=f"copy_{i}") for i, v in enumerate(variables)]
    apart = keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=0.9)
    apart.build(copies)

    @tf.function
    def optimizer_only():
        apart.apply_gradients(zip(gradients, copies))
        return apart.iterations

    return {
        "whole/forward": forward,
        "whole/forward_backward": forward_backward,
        "whole/step": step,
        "whole/optimizer": optimizer_only,
    }


def _operator_profile(spec, stages, lowered, images, labels, loss_fn, train, request) -> dict:
    """TensorFlow's profiler over PROFILED_STEPS steps of the stage-by-stage model, each stage under a name
    scope and each step under a trace annotation; categories from xprof's framework_op_stats."""
    variables = [v for _, stage in stages for v in stage.trainable_variables]
    optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=0.9)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            x = images
            for name, stage in stages:
                with tf.name_scope(f"stage_{name}"):
                    x = stage(x, training=train)
            loss = loss_fn(labels, _cast(x))
        if train:
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    step().numpy()  # traced and warm
    logdir = Path(request["out"]) / "tf_trace"
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(str(logdir))
    try:
        for number in range(PROFILED_STEPS):
            with tf.profiler.experimental.Trace("train" if train else "infer", step_num=number, _r=1):
                step().numpy()
    finally:
        tf.profiler.experimental.stop()
    result = {}
    if request["trace"]:
        result["trace"] = logdir.name
    if request["ops"]:
        layer_ops = {keras_name(layer.name): layer.op for layer in lowered}
        try:
            result["categories"] = _categories(sorted(logdir.rglob("*.xplane.pb")), layer_ops)
            result["profiled_steps"] = PROFILED_STEPS
        except ImportError:
            result["categories_unavailable"] = "xprof is not installed (pip install xprof): no operator categories"
    return result


def _categories(paths, layer_ops) -> dict[str, float]:
    """Seconds per step in each category: xprof's framework_op_stats, self time of every op (device ops
    on a GPU, host ops otherwise), IDLE left out."""
    from xprof.convert import raw_to_tool_data

    data, _ = raw_to_tool_data.xspace_to_tool_data([str(p) for p in paths], "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"]))) for row in table["rows"]]
    on_device = any(r["host_or_device"] == "Device" for r in rows)
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for row in rows:
        if row["type"] == "IDLE" or (row["host_or_device"] == "Device") != on_device:
            continue
        category = tf_category(row["operation"], row["type"], layer_ops)
        totals[category] += row["total_self_time"] / 1e6 / PROFILED_STEPS
    return totals


def gradient_flow(request: dict) -> dict:
    return _gradient_flow(request, "keras-tensorflow")
