"""The Keras-on-TensorFlow side of a profile: stage timings, step split, operator categories from
TensorFlow's profiler (read with xprof), and a trace in TensorBoard's profile format."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import tensorflow as tf

from implementations.keras_models import keras_name

from .gradients import gradient_flow as _gradient_flow
from .keras_stages import keras_profile_setup
from .measure import profile_result, time_returning
from .xplane import categories_from_trace

PROFILED_STEPS = 3
LEARNING_RATE = 0.01  # the harness's (the Keras optimizer keeps it in float32)


def profile(request: dict) -> dict:
    train = request["mode"] == "train"
    device = "/GPU:0" if request["device"] == "cuda" else "/CPU:0"
    with tf.device(device):
        lowered, model, stages, images, labels, rng = keras_profile_setup(request)
        images, labels = tf.constant(images), tf.constant(labels)
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

    def block(value):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, value)

    timed = time_returning(functions, block, windows=request["windows"], min_window_s=request["min_window_s"])
    result = profile_result("keras-tensorflow", "channels_last", timed, [name for name, _ in stages])
    if request["ops"] or request["trace"]:
        with tf.device(device):
            result.update(_operator_profile(stages, lowered, images, labels, loss_fn, train, request))
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


def _operator_profile(stages, lowered, images, labels, loss_fn, train, request) -> dict:
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
        result.update(categories_from_trace(logdir, layer_ops, PROFILED_STEPS))
    return result


def gradient_flow(request: dict) -> dict:
    return _gradient_flow(request, "keras-tensorflow")
