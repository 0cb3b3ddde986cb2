"""Gradient flow: the gradient norm of every weight layer, at initialisation and after a few SGD steps.

Both engines start from the same weights (PyTorch's seeded initialisation, copied into Keras by the
project's weight transfer) and see the same batches (seeded NumPy normal images, random labels). A step
is cross-entropy, backward, then SGD (momentum 0.9); the norms of step k are the gradients at the weights
after k updates, so step 0 is the initialisation. Layers: every convolution and linear layer's weight,
in forward order (BatchNorm's scale and shift are not weight layers here).
"""

from __future__ import annotations

import numpy as np

from implementations import get_spec
from implementations.lowering import CONV, LINEAR, lower


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


def _torch_run(name: str, request: dict) -> dict:
    import torch

    from ..backends.torch_backend import loss_of, make_optimizer

    model = torch_model(name, request["image_size"], request["seed"])
    model.train()
    layers = weight_layers(name, request["image_size"])
    weights = [model.get_submodule(layer).weight for layer in layers]
    optimizer = make_optimizer(model.parameters(), request["lr_scale"])
    norms, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(torch.from_numpy(images)), torch.from_numpy(labels))
        loss.backward()
        norms.append([float(w.grad.norm()) for w in weights])
        losses.append(float(loss))
        optimizer.step()
    return {"layers": layers, "norms": norms, "loss": losses}


def _keras_run(name: str, request: dict) -> dict:
    import keras
    import tensorflow as tf

    from implementations import build, torch_to_keras
    from implementations.keras_models import keras_name

    from ..backends.keras_recipe import loss_function, make_optimizer

    keras.mixed_precision.set_global_policy("float32")
    model = build(name, "keras-tensorflow", image_size=request["image_size"])
    torch_to_keras(torch_model(name, request["image_size"], request["seed"]), model)
    layers = weight_layers(name, request["image_size"])
    kernels = [model.get_layer(keras_name(layer)).kernel for layer in layers]
    variables = model.trainable_variables
    optimizer = make_optimizer(request["lr_scale"])
    loss_fn = loss_function()

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, variables + kernels)
        optimizer.apply_gradients(zip(grads[: len(variables)], variables))
        return loss, [tf.norm(g) for g in grads[len(variables) :]]

    norms, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        loss, layer_norms = step(tf.constant(images.transpose(0, 2, 3, 1)), tf.constant(labels, tf.int32))
        norms.append([float(n) for n in layer_norms])
        losses.append(float(loss))
    return {"layers": layers, "norms": norms, "loss": losses}


def _jax_run(name: str, request: dict) -> dict:
    """Keras on JAX: the Keras 3 stateless pattern (stateless_call under jax.value_and_grad, the optimizer's
    stateless_apply), jitted, from the same transferred weights."""
    import jax
    import keras

    from implementations import build, torch_to_keras
    from implementations.keras_models import keras_name

    from ..backends.keras_recipe import loss_function, make_optimizer

    keras.mixed_precision.set_global_policy("float32")
    model = build(name, "keras-jax", image_size=request["image_size"])
    torch_to_keras(torch_model(name, request["image_size"], request["seed"]), model)
    layers = weight_layers(name, request["image_size"])
    kernels = [model.get_layer(keras_name(layer)).kernel for layer in layers]
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
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return (
            loss,
            [jax.numpy.linalg.norm(grads[i].ravel()) for i in index],
            [trainable, non_trainable, optimizer_state],
        )

    state = [[v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables]]  # fmt: skip
    norms, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        loss, layer_norms, state = step(state, images.transpose(0, 2, 3, 1), labels.astype("int32"))
        norms.append([float(n) for n in layer_norms])
        losses.append(float(loss))
    return {"layers": layers, "norms": norms, "loss": losses}


def gradient_flow(request: dict, engine: str) -> dict:
    run = {"torch": _torch_run, "keras-tensorflow": _keras_run, "keras-jax": _jax_run}[engine]
    return {"engine": engine, "models": {name: run(name, request) for name in request["models"]}}
