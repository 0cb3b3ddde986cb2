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
    import torch.nn.functional as F

    from ..backends.torch_backend import LEARNING_RATE

    model = torch_model(name, request["image_size"], request["seed"])
    model.train()
    layers = weight_layers(name, request["image_size"])
    weights = [model.get_submodule(layer).weight for layer in layers]
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE * request["lr_scale"], momentum=0.9)
    norms, losses = [], []
    for images, labels in batches(request, get_spec(name).default_classes):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(torch.from_numpy(images)), torch.from_numpy(labels))
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

    keras.mixed_precision.set_global_policy("float32")
    model = build(name, "keras-tensorflow", image_size=request["image_size"])
    torch_to_keras(torch_model(name, request["image_size"], request["seed"]), model)
    layers = weight_layers(name, request["image_size"])
    kernels = [model.get_layer(keras_name(layer)).kernel for layer in layers]
    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(learning_rate=0.01 * request["lr_scale"], momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

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


def gradient_flow(request: dict, engine: str) -> dict:
    run = _torch_run if engine == "torch" else _keras_run
    return {"engine": engine, "models": {name: run(name, request) for name in request["models"]}}
