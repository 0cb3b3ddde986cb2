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
import keras

from implementations.keras_models import keras_name

from .gradients import gradient_flow as _gradient_flow
from .keras_stages import keras_profile_setup
from .measure import profile_result, time_returning
from .xplane import categories_from_trace

PROFILED_STEPS = 3
LEARNING_RATE = 0.01


def _touch(tree):
    """One element of each array: computed, not copied out."""
    return jax.numpy.stack([leaf.ravel()[0].astype("float32") for leaf in jax.tree_util.tree_leaves(tree)])


def profile(request: dict) -> dict:
    train = request["mode"] == "train"
    lowered, model, stages, images, labels, rng = keras_profile_setup(request)
    images, labels = jax.numpy.asarray(images), jax.numpy.asarray(labels)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def state(m):
        return [v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables]

    functions, x = {}, images
    head = len(stages) - 1
    for index, (name, stage) in enumerate(stages):
        trainable, non_trainable = state(stage)
        source = x
        x = jax.block_until_ready(stage.stateless_call(trainable, non_trainable, x, training=False)[0])
        gradient = jax.numpy.asarray(rng.standard_normal(x.shape), x.dtype)
        functions.update(_stage_functions(name, stage, trainable, non_trainable, source, gradient, labels, loss_fn,
                                          train, last=index == head))  # fmt: skip
    functions.update(_whole_functions(model, images, labels, loss_fn, train))
    timed = time_returning(functions, jax.block_until_ready, windows=request["windows"],
                           min_window_s=request["min_window_s"])  # fmt: skip
    result = profile_result("keras-jax", "channels_last", timed, [name for name, _ in stages])
    if request["ops"] or request["trace"]:
        result.update(_operator_profile(stages, lowered, images, labels, loss_fn, train, request))
    return result


def _stage_functions(name, stage, trainable, non_trainable, source, gradient, labels, loss_fn, train, last):
    def forward_of(weights, x):
        return stage.stateless_call(weights, non_trainable, x, training=train)[0]

    forward = jax.jit(forward_of)
    if not train:
        return {f"{name}/forward": lambda: forward(trainable, source)}

    @jax.jit
    def forward_backward(weights, x):
        if last:
            return _touch(
                jax.grad(lambda w, v: loss_fn(labels, forward_of(w, v).astype("float32")), (0, 1))(weights, x)
            )
        _, pullback = jax.vjp(forward_of, weights, x)
        return _touch(pullback(gradient))

    return {
        f"{name}/forward": lambda: forward(trainable, source),
        f"{name}/forward_backward": lambda: forward_backward(trainable, source),
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
    optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE, momentum=0.9)
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


def gradient_flow(request: dict) -> dict:
    return _gradient_flow(request, "keras-jax")
