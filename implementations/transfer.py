"""Weight transfer between the PyTorch and Keras builds of one spec, in both directions.

Both builds come from the same lowered layer list, so transfer walks its weighted layers by name
(torch "layer1.0.conv1" is Keras "layer1_0_conv1") and converts each tensor's layout: convolution
OIHW <-> HWIO, linear (out, in) <-> (in, out), BatchNorm's four tensors as they are. A linear layer
that reads a flattened feature map larger than 1x1 (VGG's first) also reorders its inputs: PyTorch
flattens (C, H, W), Keras (H, W, C).
"""

from __future__ import annotations

import numpy as np
import torch  # imported before Keras/TensorFlow on purpose (see implementations.frameworks)

from .keras_models import keras_name
from .lowering import BN, CONV, FLATTEN, LINEAR, Layer, lower
from .specs import get_spec


def _weighted(keras_model) -> list[tuple[Layer, tuple[int, int] | None]]:
    """The weighted layers of the model's spec, each with the (channels, size) of a flattened map it reads."""
    spec = get_spec(keras_model.name)
    image_size = int(keras_model.input_shape[1])
    lowered = lower(spec, image_size, int(keras_model.output_shape[-1]))
    by_name = {layer.name: layer for layer in lowered}
    weighted = []
    for layer in lowered:
        if layer.op in (CONV, BN, LINEAR):
            source = by_name.get(layer.inputs[0])
            flattened = source is not None and source.op == FLATTEN and source.size_in > 1
            weighted.append((layer, (source.c_in, source.size_in) if flattened else None))
    return weighted


def _check_coverage(torch_model, keras_model, weighted) -> None:
    mapped = {keras_name(layer.name) for layer, _ in weighted}
    with_weights = {layer.name for layer in keras_model.layers if layer.weights}
    in_torch = {name for name, module in torch_model.named_modules() if list(module.parameters(recurse=False))}
    if mapped != with_weights or {layer.name for layer, _ in weighted} != in_torch:
        raise ValueError(
            f"models do not line up with their lowered spec: only in Keras {sorted(with_weights - mapped)}, "
            f"only in PyTorch {sorted(in_torch - {layer.name for layer, _ in weighted})}"
        )


def _linear_to_keras(weight: np.ndarray, flattened: tuple[int, int] | None) -> np.ndarray:
    if flattened:
        channels, size = flattened
        weight = weight.reshape(-1, channels, size, size).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return weight.T


def _linear_to_torch(kernel: np.ndarray, flattened: tuple[int, int] | None) -> np.ndarray:
    weight = kernel.T
    if flattened:
        channels, size = flattened
        weight = weight.reshape(-1, size, size, channels).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
    return weight


def _host_copy(tensor) -> np.ndarray:
    """A NumPy copy that owns its memory: JAX on a CPU can adopt a NumPy buffer without copying, and
    PyTorch's in-place updates of the source would then change the Keras model too."""
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def torch_to_keras(torch_model, keras_model) -> None:
    """Copy every parameter and BatchNorm statistic of `torch_model` into `keras_model`."""
    weighted = _weighted(keras_model)
    _check_coverage(torch_model, keras_model, weighted)
    for layer, flattened in weighted:
        module = torch_model.get_submodule(layer.name)
        target = keras_model.get_layer(keras_name(layer.name))
        if layer.op == BN:
            tensors = [module.weight, module.bias, module.running_mean, module.running_var]
            target.set_weights([_host_copy(t) for t in tensors])
            continue
        weight = _host_copy(module.weight)
        values = [weight.transpose(2, 3, 1, 0) if layer.op == CONV else _linear_to_keras(weight, flattened)]
        if module.bias is not None:
            values.append(_host_copy(module.bias))
        target.set_weights(values)


def keras_to_torch(keras_model, torch_model) -> None:
    """Copy every weight and BatchNorm statistic of `keras_model` into `torch_model`."""
    weighted = _weighted(keras_model)
    _check_coverage(torch_model, keras_model, weighted)
    with torch.no_grad():
        for layer, flattened in weighted:
            module = torch_model.get_submodule(layer.name)
            values = [np.asarray(v) for v in keras_model.get_layer(keras_name(layer.name)).get_weights()]
            if layer.op == BN:
                targets = [module.weight, module.bias, module.running_mean, module.running_var]
            else:
                kernel = values[0]
                values[0] = kernel.transpose(3, 2, 0, 1) if layer.op == CONV else _linear_to_torch(kernel, flattened)
                targets = [module.weight] + ([module.bias] if module.bias is not None else [])
            for target, value in zip(targets, values, strict=True):
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
