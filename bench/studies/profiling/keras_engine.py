"""The Keras-on-TensorFlow side of a profile: stage timings, step split, operator categories from
TensorFlow's profiler (read with xprof), and a trace in TensorBoard's profile format."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import tensorflow as tf

from bench.backends.keras_recipe import loss_function, make_optimizer
from bench.backends.xplane import categories_from_trace
from bench.studies.gradient_flow.gradients import gradient_flow as _gradient_flow
from bench.studies.profiling.data import nchw, nchw_shape, nhwc, summary
from bench.studies.profiling.keras_stages import gradient_names, keras_profile_setup
from bench.studies.profiling.measure import profile_result, time_returning
from implementations.keras_models import keras_name

PROFILED_STEPS = 3


class _Setup:
    """The whole model, its stages, and each stage's real input and upstream gradient, on the profile's data."""

    def __init__(self, request: dict, float64: bool = False):
        self.train = request["mode"] == "train"
        self.lowered, self.model, self.stages, data = keras_profile_setup(request, float64)
        dtype = tf.float64 if float64 else tf.float32
        self.images = tf.constant(nhwc(data.images), dtype)
        self.labels = tf.constant(data.labels, tf.int32)
        self.loss_fn = loss_function("float64" if float64 else "float32")
        self.inputs, self.upstream, x = [], [], self.images
        for index, (_, stage) in enumerate(self.stages):
            self.inputs.append(x)
            x = stage(x, training=self.train)  # as PyTorch's stages in their mode
            last = index == len(self.stages) - 1
            self.upstream.append(None if last else tf.constant(nhwc(data.upstream(nchw_shape(x.shape))), x.dtype))


def profile(request: dict, context=None) -> dict:
    device = "/GPU:0" if request["device"] == "cuda" else "/CPU:0"
    with tf.device(device):
        setup = _Setup(request)
        functions = {}
        for index, (name, stage) in enumerate(setup.stages):
            functions.update(_stage_functions(name, stage, index, setup))
        functions.update(_whole_functions(setup.model, setup.images, setup.labels, setup.loss_fn, setup.train))

    def block(value):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, value)

    timed = time_returning(functions, block, windows=request["windows"], min_window_s=request["min_window_s"])
    result = profile_result("keras-tensorflow", "channels_last", timed, [name for name, _ in setup.stages])
    if request["ops"] or request["trace"]:
        with tf.device(device):
            result.update(
                _operator_profile(setup.stages, setup.lowered, setup.images, setup.labels, setup.loss_fn,
                                  setup.train, request)
            )  # fmt: skip
    return result


def _touch(gradients):
    """One element of each gradient: the gradients must be computed, but a function that returned them all
    would copy every one out (hundreds of MB for VGG's head), which the training step never does."""
    return tf.stack([tf.reshape(g, [-1])[0] for g in gradients])


def _cast(logits):
    return tf.cast(logits, tf.float32) if logits.dtype not in (tf.float32, tf.float64) else logits


def stage_gradients(stage, index: int, setup: _Setup):
    """One stage's forward and backward as a tf.function, the work its profile times: (output, gradients of
    the stage's trainable variables and, for every stage but the first, of its input). The head takes the
    recipe's loss, the others their upstream gradient."""
    source, gradient, labels, loss_fn = setup.inputs[index], setup.upstream[index], setup.labels, setup.loss_fn
    with_input = index > 0
    variables = stage.trainable_variables

    @tf.function
    def run():
        with tf.GradientTape() as tape:
            if with_input:
                tape.watch(source)
            out = stage(source, training=True)
            target = loss_fn(labels, _cast(out)) if gradient is None else out
        targets = variables + ([source] if with_input else [])
        upstream = None if gradient is None else tf.cast(gradient, out.dtype)
        return out, tape.gradient(target, targets, output_gradients=upstream)

    return run


def _stage_functions(name, stage, index: int, setup: _Setup) -> dict:
    source = setup.inputs[index]
    if not setup.train:
        return {f"{name}/forward": tf.function(lambda: stage(source, training=False))}
    gradients = stage_gradients(stage, index, setup)
    return {
        f"{name}/forward": tf.function(lambda: stage(source, training=True)),
        f"{name}/forward_backward": tf.function(lambda: _touch(gradients()[1])),
    }


def _whole_functions(model, images, labels, loss_fn, train):
    if not train:
        return {"whole/forward": tf.function(lambda: model(images, training=False))}
    variables = model.trainable_variables
    optimizer = make_optimizer()

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
    apart = make_optimizer()
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


def equal_work(request: dict, context=None) -> dict:
    """For the equal-work test: each stage's output and gradients, in float64, from PyTorch's seeded weights,
    for each model of request["models"]."""
    return {"engine": "keras-tensorflow", "models": {m: _equal_work(dict(request, model=m)) for m in request["models"]}}


def _equal_work(request: dict) -> dict:
    setup = _Setup(request, float64=True)
    stages = {}
    for index, (name, stage) in enumerate(setup.stages):
        out, grads = stage_gradients(stage, index, setup)()
        names = gradient_names(stage, setup.lowered, index > 0)
        arrays = {"output": nchw(out.numpy())}
        arrays.update({key: g.numpy() for key, g in zip(names, grads, strict=True)})
        stages[name] = summary(arrays)
    return stages


def _operator_profile(stages, lowered, images, labels, loss_fn, train, request) -> dict:
    """TensorFlow's profiler over PROFILED_STEPS steps of the stage-by-stage model, each stage under a name
    scope and each step under a trace annotation; categories from xprof's framework_op_stats."""
    variables = [v for _, stage in stages for v in stage.trainable_variables]
    optimizer = make_optimizer()

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


def gradient_flow(request: dict, context=None) -> dict:
    return _gradient_flow(request, "keras-tensorflow")
