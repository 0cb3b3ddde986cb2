"""Gradient flow: per weight layer and step, the weight and its gradient, at initialisation and after a few
SGD steps, in every engine.

Every engine starts from the same weights (PyTorch's seeded initialisation, copied into Keras by the
project's weight transfer) and sees the same batches (seeded NumPy normal images, random labels), in
float32. A step is the training recipe (bench/backends/recipe.py: cross-entropy, backward, SGD with
momentum); the figures of step k are taken at the weights after k updates, so step 0 is the
initialisation. Layers: every convolution and linear layer's weight, in forward order (BatchNorm's scale
and shift are not weight layers here).

Per layer and step each engine computes, from its own tensors (Keras on JAX inside the jitted step): the
weight's L2 norm ||W|| and the gradient's ||g||, their per-element RMS (norm / sqrt(numel)), and the
gradient-to-weight ratio ||g|| / ||W||. Beside them: the learning rate the optimizer holds, and the first
update's size relative to the weight, lr x ||g|| / ||W|| at step 0 (SGD's momentum buffer starts empty in
both frameworks, so the first update is exactly lr x g), per layer and its maximum.
"""

from __future__ import annotations

import math

import numpy as np

from implementations import get_spec
from implementations.lowering import CONV, LINEAR, lower

MEASURES = ("weight_norm", "grad_norm", "weight_rms", "grad_rms", "grad_to_weight")  # per step, per layer


def weight_layers(name: str, image_size: int) -> list[str]:
    return [layer.name for layer in lower(get_spec(name), image_size) if layer.op in (CONV, LINEAR)]


def batches(request: dict, classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(NCHW float32 images, int labels) for each step, the same in every engine."""
    rng = np.random.default_rng(request["seed"])
    size, batch = request["image_size"], request["batch_size"]
    return [
        (rng.standard_normal((batch, 3, size, size)).astype(np.float32), rng.integers(0, classes, batch))
        for _ in range(request["steps"] + 1)
    ]


def torch_model(name: str, image_size: int, seed: int):
    import torch

    from implementations import build

    torch.manual_seed(seed)
    return build(name, "torch", image_size=image_size, layout="channels_first")


def _record(layers, sizes, dtype: str, learning_rate: float, losses, steps) -> dict:
    """One network's run: `steps` is, per step, the engine's (weight_norm, grad_norm, weight_rms, grad_rms,
    grad_to_weight) arrays over the layers."""
    run = {"layers": layers, "sizes": sizes, "dtype": dtype, "learning_rate": learning_rate,
           "loss": [float(x) for x in losses]}  # fmt: skip
    for index, key in enumerate(MEASURES):
        run[key] = [[float(x) for x in np.asarray(step[index])] for step in steps]
    run["first_update"] = [learning_rate * r for r in run["grad_to_weight"][0]]
    finite = [u for u in run["first_update"] if math.isfinite(u)]
    run["first_update_max"] = max(finite) if len(finite) == len(run["first_update"]) else math.nan
    return run


def torch_measures(weights) -> tuple:
    """MEASURES of PyTorch weights holding their gradients, as float64 NumPy arrays over the layers."""
    import torch

    with torch.no_grad():
        w = torch.stack([p.detach().norm() for p in weights]).double()
        g = torch.stack([p.grad.detach().norm() for p in weights]).double()
        root = torch.tensor([math.sqrt(p.numel()) for p in weights], dtype=torch.float64)
        return tuple(x.numpy() for x in (w, g, w / root, g / root, g / w))


def _torch_run(name: str, request: dict) -> dict:
    import torch

    from bench.backends.torch_backend import loss_of, make_optimizer

    model = torch_model(name, request["image_size"], request["seed"])
    model.train()
    layers = weight_layers(name, request["image_size"])
    weights = [model.get_submodule(layer).weight for layer in layers]
    optimizer = make_optimizer(model.parameters(), request["lr_scale"])
    steps, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(torch.from_numpy(images)), torch.from_numpy(labels))
        loss.backward()
        steps.append(torch_measures(weights))
        losses.append(float(loss.detach()))
        optimizer.step()
    dtype = str(weights[0].dtype).removeprefix("torch.")
    lr = float(optimizer.param_groups[0]["lr"])
    return _record(layers, [w.numel() for w in weights], dtype, lr, losses, steps)


def _keras_measures(weights, grads, sizes):
    """MEASURES of Keras tensors in the process's backend, inside the step that calls it (tf.function or
    jax.jit), in float32."""
    from keras import ops

    w = ops.stack([ops.sqrt(ops.sum(ops.square(x))) for x in weights])
    g = ops.stack([ops.sqrt(ops.sum(ops.square(x))) for x in grads])
    root = ops.convert_to_tensor(np.sqrt(np.asarray(sizes, np.float64)).astype(np.float32))
    return w, g, w / root, g / root, g / w


def _keras_learning_rate(optimizer) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _keras_run(name: str, request: dict) -> dict:
    import keras
    import tensorflow as tf

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from implementations import build, torch_to_keras
    from implementations.keras_models import keras_name

    keras.mixed_precision.set_global_policy("float32")
    model = build(name, "keras-tensorflow", image_size=request["image_size"])
    torch_to_keras(torch_model(name, request["image_size"], request["seed"]), model)
    layers = weight_layers(name, request["image_size"])
    kernels = [model.get_layer(keras_name(layer)).kernel for layer in layers]
    sizes = [int(np.prod(k.shape)) for k in kernels]
    variables = model.trainable_variables
    optimizer = make_optimizer(request["lr_scale"])
    loss_fn = loss_function()

    @tf.function
    def step(images, labels):
        before = [tf.identity(k) for k in kernels]  # the weights this step's gradient is taken at
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, variables + kernels)
        measures = _keras_measures(before, grads[len(variables) :], sizes)
        with tf.control_dependencies(list(measures)):
            optimizer.apply_gradients(zip(grads[: len(variables)], variables))
        return loss, measures

    steps, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        loss, measures = step(tf.constant(images.transpose(0, 2, 3, 1)), tf.constant(labels, tf.int32))
        steps.append([m.numpy() for m in measures])
        losses.append(float(loss))
    return _record(layers, sizes, kernels[0].dtype, _keras_learning_rate(optimizer), losses, steps)


def _jax_run(name: str, request: dict) -> dict:
    """Keras on JAX: the Keras 3 stateless pattern (stateless_call under jax.value_and_grad, the optimizer's
    stateless_apply), jitted, from the same transferred weights; the measures are computed inside the step."""
    import jax
    import keras

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from implementations import build, torch_to_keras
    from implementations.keras_models import keras_name

    keras.mixed_precision.set_global_policy("float32")
    model = build(name, "keras-jax", image_size=request["image_size"])
    torch_to_keras(torch_model(name, request["image_size"], request["seed"]), model)
    layers = weight_layers(name, request["image_size"])
    kernels = [model.get_layer(keras_name(layer)).kernel for layer in layers]
    sizes = [int(np.prod(k.shape)) for k in kernels]
    index = [next(i for i, v in enumerate(model.trainable_variables) if v is kernel) for kernel in kernels]
    optimizer = make_optimizer(request["lr_scale"])
    optimizer.build(model.trainable_variables)
    loss_fn = loss_function()

    def loss_and_state(trainable, non_trainable, images, labels):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        return loss_fn(labels, logits), non_trainable

    @jax.jit
    def step(state, images, labels):
        trainable, non_trainable, optimizer_state = state
        (loss, non_trainable), grads = jax.value_and_grad(loss_and_state, has_aux=True)(
            trainable, non_trainable, images, labels
        )
        measures = _keras_measures([trainable[i] for i in index], [grads[i] for i in index], sizes)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return loss, measures, [trainable, non_trainable, optimizer_state]

    state = [[v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables]]  # fmt: skip
    steps, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        loss, measures, state = step(state, images.transpose(0, 2, 3, 1), labels.astype("int32"))
        steps.append([np.asarray(m) for m in measures])
        losses.append(float(loss))
    dtype = str(state[0][index[0]].dtype)
    return _record(layers, sizes, dtype, _keras_learning_rate(optimizer), losses, steps)


def gradient_flow(request: dict, engine: str) -> dict:
    run = {"torch": _torch_run, "keras-tensorflow": _keras_run, "keras-jax": _jax_run}[engine]
    return {"engine": engine, "models": {name: run(name, request) for name in request["models"]}}
