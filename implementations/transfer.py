"""Weight transfer between the PyTorch and Keras builds of one spec, in both directions.

The two builders share their vocabulary (torch "layer1.0.conv1" is Keras "layer1_0_conv1"), so the
transfer walks PyTorch's parametrised modules and converts each tensor's layout:
convolution OIHW <-> HWIO, linear (out, in) <-> (in, out), BatchNorm's four tensors as they are.
VGG's first linear layer also reorders its inputs: PyTorch flattens (C, 7, 7), Keras (7, 7, C).
"""

from __future__ import annotations

import numpy as np
import torch  # imported before Keras/TensorFlow on purpose (see implementations.frameworks)
from torch import nn

from .keras_models import keras_name
from .specs import VGG_HEAD_POOL

_FLATTENED_LINEAR = "classifier.0"  # VGG's first linear layer reads the flattened 7x7 feature map


def _parametrised(torch_model: nn.Module):
    for name, module in torch_model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            yield name, module


def _linear_to_keras(name: str, weight: np.ndarray) -> np.ndarray:
    if name == _FLATTENED_LINEAR:
        out_features = weight.shape[0]
        channels = weight.shape[1] // (VGG_HEAD_POOL * VGG_HEAD_POOL)
        weight = weight.reshape(out_features, channels, VGG_HEAD_POOL, VGG_HEAD_POOL)
        weight = weight.transpose(0, 2, 3, 1).reshape(out_features, -1)
    return weight.T


def _linear_to_torch(name: str, kernel: np.ndarray) -> np.ndarray:
    weight = kernel.T
    if name == _FLATTENED_LINEAR:
        out_features = weight.shape[0]
        channels = weight.shape[1] // (VGG_HEAD_POOL * VGG_HEAD_POOL)
        weight = weight.reshape(out_features, VGG_HEAD_POOL, VGG_HEAD_POOL, channels)
        weight = weight.transpose(0, 3, 1, 2).reshape(out_features, -1)
    return weight


def _check_coverage(torch_model: nn.Module, keras_model) -> None:
    mapped = {keras_name(name) for name, _ in _parametrised(torch_model)}
    with_weights = {layer.name for layer in keras_model.layers if layer.weights}
    if mapped != with_weights:
        raise ValueError(
            f"models do not line up: only in PyTorch {sorted(mapped - with_weights)}, "
            f"only in Keras {sorted(with_weights - mapped)}"
        )


def torch_to_keras(torch_model: nn.Module, keras_model) -> None:
    """Copy every parameter and BatchNorm statistic of `torch_model` into `keras_model`."""
    _check_coverage(torch_model, keras_model)
    for name, module in _parametrised(torch_model):
        layer = keras_model.get_layer(keras_name(name))
        if isinstance(module, nn.BatchNorm2d):
            tensors = [module.weight, module.bias, module.running_mean, module.running_var]
            layer.set_weights([t.detach().cpu().numpy() for t in tensors])
            continue
        weight = module.weight.detach().cpu().float().numpy()
        kernel = weight.transpose(2, 3, 1, 0) if isinstance(module, nn.Conv2d) else _linear_to_keras(name, weight)
        values = [kernel]
        if module.bias is not None:
            values.append(module.bias.detach().cpu().numpy())
        layer.set_weights(values)


def keras_to_torch(keras_model, torch_model: nn.Module) -> None:
    """Copy every weight and BatchNorm statistic of `keras_model` into `torch_model`."""
    _check_coverage(torch_model, keras_model)
    with torch.no_grad():
        for name, module in _parametrised(torch_model):
            values = [np.asarray(v) for v in keras_model.get_layer(keras_name(name)).get_weights()]
            if isinstance(module, nn.BatchNorm2d):
                targets = [module.weight, module.bias, module.running_mean, module.running_var]
            else:
                kernel = values[0]
                values[0] = (
                    kernel.transpose(3, 2, 0, 1) if isinstance(module, nn.Conv2d) else _linear_to_torch(name, kernel)
                )
                targets = [module.weight] + ([module.bias] if module.bias is not None else [])
            for target, value in zip(targets, values, strict=True):
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
