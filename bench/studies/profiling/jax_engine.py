"""The Keras-on-JAX side of a profile and of a gradient-flow study (the JAX worker imports only this).

The same stage sub-models as the TensorFlow side, run by the Keras 3 stateless pattern under `jax.jit`:
forward is `stateless_call`; forward+backward is `jax.vjp` of it with a random upstream gradient (the
head: `jax.value_and_grad` of the loss), returning one element of each gradient so the gradients are
computed but not copied out; the optimizer alone is `stateless_apply` on copies of the weights. JAX
dispatches asynchronously: every timed call blocks on its result. A jax.profiler trace of the chained
stages is saved; on a CPU JAX's profile holds no per-operator statistics, so categories are unavailable
there (the report says so).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax

from bench.backends.keras_recipe import loss_function, make_optimizer
from bench.backends.xplane import categories_from_trace
from bench.studies.gradient_flow.gradients import gradient_flow as _gradient_flow
from bench.studies.profiling.data import nchw, nchw_shape, nhwc, summary
from bench.studies.profiling.keras_stages import gradient_names, keras_profile_setup
from bench.studies.profiling.measure import profile_result, time_returning
from implementations.keras_models import keras_name

PROFILED_STEPS = 3


def _touch(tree):
    """One element of each array: computed, not copied out."""
    return jax.numpy.stack([leaf.ravel()[0].astype("float32") for leaf in jax.tree_util.tree_leaves(tree)])


def _float32_if_half(logits):
    return logits.astype("float32") if logits.dtype in (jax.numpy.float16, jax.numpy.bfloat16) else logits


class _Setup:
    """The whole model, its stages (with their weights as arrays), and each stage's real input and upstream
    gradient, on the profile's data."""

    def __init__(self, request: dict, float64: bool = False):
        if float64:
            from bench.backends.jax_backend import _float64_everywhere

            _float64_everywhere()
        self.train = request["mode"] == "train"
        self.lowered, self.model, self.stages, data = keras_profile_setup(request, float64)
        self.images = jax.numpy.asarray(nhwc(data.images))
        self.labels = jax.numpy.asarray(data.labels.astype("int32"))
        self.loss_fn = loss_function("float64" if float64 else "float32")
        self.weights, self.inputs, self.upstream, x = [], [], [], self.images
        for index, (_, stage) in enumerate(self.stages):
            trainable = [v.value for v in stage.trainable_variables]
            non_trainable = [v.value for v in stage.non_trainable_variables]
            self.weights.append((trainable, non_trainable))
            self.inputs.append(x)
            x = jax.block_until_ready(stage.stateless_call(trainable, non_trainable, x, training=self.train)[0])
            last = index == len(self.stages) - 1
            self.upstream.append(None if last else jax.numpy.asarray(nhwc(data.upstream(nchw_shape(x.shape))), x.dtype))


def profile(request: dict, context=None) -> dict:
    setup = _Setup(request)
    functions = {}
    for index, (name, _) in enumerate(setup.stages):
        functions.update(_stage_functions(name, index, setup))
    functions.update(_whole_functions(setup.model, setup.images, setup.labels, setup.loss_fn, setup.train))
    timed = time_returning(functions, jax.block_until_ready, windows=request["windows"],
                           min_window_s=request["min_window_s"])  # fmt: skip
    result = profile_result("keras-jax", "channels_last", timed, [name for name, _ in setup.stages])
    if request["ops"] or request["trace"]:
        result.update(_operator_profile(setup.stages, setup.lowered, setup.images, setup.labels, setup.loss_fn,
                                        setup.train, request))  # fmt: skip
    return result


def stage_gradients(index: int, setup: _Setup):
    """One stage's forward and backward, jitted, the work its profile times: weights, input -> (output,
    gradients of the stage's trainable weights and, for every stage but the first, of its input). The head
    takes the recipe's loss, the others their upstream gradient."""
    _, stage = setup.stages[index]
    _, non_trainable = setup.weights[index]
    gradient, labels, loss_fn, train = setup.upstream[index], setup.labels, setup.loss_fn, setup.train

    def forward_of(weights, x):
        return stage.stateless_call(weights, non_trainable, x, training=train)[0]

    arguments = (0, 1) if index > 0 else (0,)

    @jax.jit
    def run(weights, x):
        if gradient is None:
            out = forward_of(weights, x)
            grads = jax.grad(lambda *a: loss_fn(labels, _float32_if_half(forward_of(*a))), arguments)(weights, x)
            return out, grads
        out, pullback = jax.vjp(forward_of, weights, x)
        grads = pullback(gradient)
        return out, grads if index > 0 else grads[:1]

    return run


def _stage_functions(name, index: int, setup: _Setup) -> dict:
    _, stage = setup.stages[index]
    trainable, non_trainable = setup.weights[index]
    source, train = setup.inputs[index], setup.train
    forward = jax.jit(lambda w, x: stage.stateless_call(w, non_trainable, x, training=train)[0])
    if not train:
        return {f"{name}/forward": lambda: forward(trainable, source)}
    gradients = stage_gradients(index, setup)
    touched = jax.jit(lambda w, x: _touch(gradients(w, x)[1]))
    return {
        f"{name}/forward": lambda: forward(trainable, source),
        f"{name}/forward_backward": lambda: touched(trainable, source),
    }


def _whole_functions(model, images, labels, loss_fn, train):
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(weights):
        logits, _ = model.stateless_call(weights, non_trainable, images, training=train)
        return loss_fn(labels, logits.astype("float32"))

    forward = jax.jit(loss_of)
    if not train:
        return {"whole/forward": lambda: forward(trainable)}
    forward_backward = jax.jit(lambda w: _touch(jax.grad(loss_of)(w)))
    optimizer = make_optimizer()
    optimizer.build(model.trainable_variables)
    optimizer_state = [v.value for v in optimizer.variables]
    gradients = jax.jit(jax.grad(loss_of))(trainable)
    apply = jax.jit(lambda o, g, w: optimizer.stateless_apply(o, g, w))

    @jax.jit
    def step(weights, opt_state):
        grads = jax.grad(loss_of)(weights)
        return optimizer.stateless_apply(opt_state, grads, weights)

    current = {"weights": trainable, "optimizer": optimizer_state}

    def train_step():
        current["weights"], current["optimizer"] = step(current["weights"], current["optimizer"])
        return current["weights"]

    return {
        "whole/forward": lambda: forward(trainable),
        "whole/forward_backward": lambda: forward_backward(trainable),
        "whole/step": train_step,
        "whole/optimizer": lambda: apply(optimizer_state, gradients, trainable),  # on copies: nothing kept
    }


def equal_work(request: dict, context=None) -> dict:
    """For the equal-work test: each stage's output and gradients, in float64, from PyTorch's seeded weights,
    for each model of request["models"]."""
    return {"engine": "keras-jax", "models": {m: _equal_work(dict(request, model=m)) for m in request["models"]}}


def _equal_work(request: dict) -> dict:
    import numpy as np

    setup = _Setup(request, float64=True)
    stages = {}
    for index, (name, stage) in enumerate(setup.stages):
        trainable, _ = setup.weights[index]
        out, grads = stage_gradients(index, setup)(trainable, setup.inputs[index])
        leaves = [*grads[0]] + ([grads[1]] if index > 0 else [])
        names = gradient_names(stage, setup.lowered, index > 0)
        arrays = {"output": nchw(np.asarray(out))}
        arrays.update({key: np.asarray(g) for key, g in zip(names, leaves, strict=True)})
        stages[name] = summary(arrays)
    return stages


def _operator_profile(stages, lowered, images, labels, loss_fn, train, request) -> dict:
    """jax.profiler over PROFILED_STEPS steps of the stage-by-stage model, each stage under a named scope."""
    weights = [[v.value for v in stage.trainable_variables] for _, stage in stages]
    fixed = [[v.value for v in stage.non_trainable_variables] for _, stage in stages]

    def loss_of(all_weights):
        x = images
        for (name, stage), w, n in zip(stages, all_weights, fixed):
            with jax.named_scope(f"stage_{name}"):
                x = stage.stateless_call(w, n, x, training=train)[0]
        return loss_fn(labels, x.astype("float32"))

    step = jax.jit(jax.grad(loss_of) if train else loss_of)
    jax.block_until_ready(step(weights))
    logdir = Path(request["out"]) / "jax_trace"
    shutil.rmtree(logdir, ignore_errors=True)
    jax.profiler.start_trace(str(logdir))
    try:
        for _ in range(PROFILED_STEPS):
            jax.block_until_ready(step(weights))
    finally:
        jax.profiler.stop_trace()
    result = {"trace": logdir.name} if request["trace"] else {}
    if request["ops"]:
        layer_ops = {keras_name(layer.name): layer.op for layer in lowered}
        found = categories_from_trace(logdir, layer_ops, PROFILED_STEPS)
        if "categories" in found and not any(found["categories"].values()):
            found = {"categories_unavailable": "JAX's profile on this device holds no per-operator statistics"}
        result.update(found)
    return result


def gradient_flow(request: dict, context=None) -> dict:
    return _gradient_flow(request, "keras-jax")
