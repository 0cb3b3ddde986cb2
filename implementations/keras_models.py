"""Keras 3 builder: the lowered layer list as a functional keras.Model, NHWC, built for a static image
size. Layer names are the lowered names with "_" for "." ("layer1.0.conv1" is "layer1_0_conv1"), so
weight transfer is a mapping over names. Imports Keras only: works on any Keras backend, without torch."""

from __future__ import annotations

import sys

import keras
import numpy as np
from keras import layers, ops

from .lowering import (
    ADAPTIVE_AVGPOOL,
    ADD,
    BN,
    CONV,
    DROPOUT,
    FLATTEN,
    GLOBAL_AVGPOOL,
    INIT_LINEAR_DEFAULT,
    INIT_NORMAL_001,
    INPUT,
    LINEAR,
    MAXPOOL,
    RELU,
    SHORTCUT_PAD,
    Layer,
    linear_default_bound,
    lower,
)
from .specs import BN_EPSILON, BN_MOMENTUM_TORCH, ModelSpec


def keras_name(torch_name: str) -> str:
    return torch_name.replace(".", "_")


class TorchBatchNorm(layers.BatchNormalization):
    """BatchNormalization computed as torch.nn.BatchNorm2d computes it in training mode:

    - the batch variance is two-pass, mean((x - mean)^2); keras.ops.moments uses E[x^2] - E[x]^2,
      which cancels catastrophically when a channel's mean is large against its spread (measured here:
      gradients 1e-2 off a float64 reference in ResNet-20, against 2e-6 for the two-pass form);
    - the moving variance is updated with the unbiased batch variance (Keras uses the biased one);
      normalisation itself uses the biased one in both frameworks;
    - it computes in float32 (half inputs upcast, as Keras does) or in float64 for float64 inputs: Keras's
      own layer takes result_type(inputs, "float32"), which is float32 for float64 inputs on every backend
      but TensorFlow (measured on JAX: 1e-7 relative error where TensorFlow's float64 gave 4e-16)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("momentum", 1.0 - BN_MOMENTUM_TORCH)
        kwargs.setdefault("epsilon", BN_EPSILON)
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        dtype = "float64" if keras.backend.standardize_dtype(inputs.dtype) == "float64" else "float32"
        x = ops.cast(inputs, dtype)
        if not (training and self.trainable):
            outputs = ops.batch_normalization(
                x, ops.cast(self.moving_mean, dtype), ops.cast(self.moving_variance, dtype), axis=self.axis,
                offset=ops.cast(self.beta, dtype), scale=ops.cast(self.gamma, dtype), epsilon=self.epsilon,
            )  # fmt: skip
            return ops.cast(outputs, self.compute_dtype)
        mean = ops.mean(x, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=self._reduction_axes)
        mean = ops.squeeze(mean, axis=self._reduction_axes)
        shape = ops.shape(x)
        count = ops.cast(shape[0], x.dtype)
        for axis in self._reduction_axes[1:]:
            count = count * ops.cast(shape[axis], x.dtype)
        unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * momentum + unbiased * (1.0 - momentum))
        outputs = ops.batch_normalization(
            x, mean, variance, axis=self.axis, offset=ops.cast(self.beta, dtype), scale=ops.cast(self.gamma, dtype),
            epsilon=self.epsilon,
        )  # fmt: skip
        return ops.cast(outputs, self.compute_dtype)


class AdaptiveAveragePooling2D(layers.Layer):
    """torch.nn.AdaptiveAvgPool2d for NHWC inputs of a static size: output cell i averages input rows
    floor(i*H/out) .. ceil((i+1)*H/out) - 1, written as two small averaging matrices."""

    def __init__(self, output_size: int, **kwargs):
        super().__init__(**kwargs)
        self.output_size = output_size

    @staticmethod
    def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
        matrix = np.zeros((size_out, size_in), dtype="float32")
        for i in range(size_out):
            start = (i * size_in) // size_out
            end = -((-(i + 1) * size_in) // size_out)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def build(self, input_shape):
        _, height, width, _ = input_shape
        self.identity = height == width == self.output_size
        self.rows = self._pool_matrix(height, self.output_size)
        self.cols = self._pool_matrix(width, self.output_size)

    def call(self, inputs):
        if self.identity:
            return inputs
        rows = ops.cast(self.rows, inputs.dtype)
        cols = ops.cast(self.cols, inputs.dtype)
        return ops.einsum("nhwc,ih,jw->nijc", inputs, rows, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


class OptionAShortcut(layers.Layer):
    """He et al. 2015 option A for NHWC: subsample by the stride and zero-pad the channels; no parameters."""

    def __init__(self, pad: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad
        self.stride = stride

    def call(self, inputs):
        s = self.stride
        return ops.pad(inputs[:, ::s, ::s, :], [[0, 0], [0, 0], [0, 0], [self.pad, self.pad]])

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        part = lambda size: None if size is None else -(-size // self.stride)  # noqa: E731
        return (n, part(h), part(w), c + 2 * self.pad)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "stride": self.stride}


def _conv_init():
    # torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (k*k*c_out))
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _dense_init(layer: Layer) -> dict:
    if layer.init == INIT_NORMAL_001:
        return dict(kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01), bias_initializer="zeros")
    if layer.init == INIT_LINEAR_DEFAULT:
        bound = linear_default_bound(layer.c_in)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        return dict(kernel_initializer=uniform, bias_initializer=uniform)
    raise ValueError(f"{layer.name}: unknown initialisation {layer.init!r}")


def _padded(x, layer: Layer, name: str):
    """PyTorch pads symmetrically: with a stride above 1, explicit zero padding and 'valid', never 'same'
    (which pads the bottom/right more on even inputs). Zeros before a max-pool equal PyTorch's -inf
    padding here: every padded max-pool reads a ReLU's output."""
    if layer.padding and (layer.stride > 1 or layer.op == MAXPOOL):
        return layers.ZeroPadding2D(layer.padding, name=f"{name}_pad")(x), "valid"
    return x, ("same" if layer.padding else "valid")


def _layer(layer: Layer, args: list, dropout: float):
    name, op = keras_name(layer.name), layer.op
    if op == CONV:
        x, padding = _padded(args[0], layer, name)
        return layers.Conv2D(layer.c_out, layer.kernel, strides=layer.stride, padding=padding, use_bias=layer.bias,
                             kernel_initializer=_conv_init(), name=name)(x)  # fmt: skip
    if op == BN:
        return TorchBatchNorm(name=name)(args[0])
    if op == RELU:
        return layers.ReLU(name=name)(args[0])
    if op == MAXPOOL:
        x, padding = _padded(args[0], layer, name)
        return layers.MaxPooling2D(layer.kernel, layer.stride, padding=padding, name=name)(x)
    if op == ADAPTIVE_AVGPOOL:
        return AdaptiveAveragePooling2D(layer.size_out, name=name)(args[0])
    if op == GLOBAL_AVGPOOL:
        return layers.GlobalAveragePooling2D(keepdims=True, name=name)(args[0])
    if op == FLATTEN:
        return layers.Flatten(name=name)(args[0])
    if op == LINEAR:
        return layers.Dense(layer.c_out, use_bias=layer.bias, name=name, **_dense_init(layer))(args[0])
    if op == DROPOUT:
        return layers.Dropout(dropout, name=name)(args[0])
    if op == ADD:
        return layers.Add(name=name)(args)
    if op == SHORTCUT_PAD:
        return OptionAShortcut((layer.c_out - layer.c_in) // 2, layer.stride, name=name)(args[0])
    raise ValueError(f"{layer.name}: no Keras layer for op {op!r}")


def build_keras(spec: ModelSpec, num_classes: int, dropout: float, image_size: int) -> keras.Model:
    return keras_from_layers(lower(spec, image_size, num_classes), spec.name, dropout)


def keras_from_layers(layers: tuple[Layer, ...], name: str, dropout: float = 0.0) -> keras.Model:
    """A functional model running `layers` (a whole lowered model, or one stage of it) from INPUT."""
    # Keras walks the functional graph recursively: ResNet-1202's ~4,000 layers need a deeper stack.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    # A functional model casts its inputs to its Input's dtype, float32 unless told: under a float64 policy
    # that rounded float64 images to float32 before the first layer.
    policy = keras.config.dtype_policy()
    input_dtype = "float64" if policy.variable_dtype == "float64" else "float32"
    first = layers[0]
    values = {INPUT: keras.Input(shape=(first.size_in, first.size_in, first.c_in), name="images", dtype=input_dtype)}
    for layer in layers:
        values[layer.name] = _layer(layer, [values[source] for source in layer.inputs], dropout)
    return keras.Model(values[INPUT], values[layers[-1].name], name=name)
