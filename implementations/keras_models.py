"""Keras 3 builder: turns a spec into a functional keras.Model whose layer names mirror the PyTorch
module names ("layer1.0.conv1" becomes "layer1_0_conv1"), so weight transfer is a mapping over names."""

from __future__ import annotations

import sys

import keras
import numpy as np
from keras import layers, ops

from .specs import (
    BN_EPSILON,
    BN_MOMENTUM_TORCH,
    POOL,
    VGG_HEAD_POOL,
    VGG_HEAD_WIDTH,
    CifarResNetSpec,
    ModelSpec,
    ResNetSpec,
    VGGSpec,
    cifar_shortcut_padding,
)
from .torch_models import linear_default_bound


def keras_name(torch_name: str) -> str:
    return torch_name.replace(".", "_")


class TorchBatchNorm(layers.BatchNormalization):
    """BatchNormalization computed as torch.nn.BatchNorm2d computes it in training mode:

    - the batch variance is two-pass, mean((x - mean)^2); keras.ops.moments uses E[x^2] - E[x]^2,
      which cancels catastrophically when a channel's mean is large against its spread (measured here:
      gradients 1e-2 off a float64 reference in ResNet-20, against 2e-6 for the two-pass form);
    - the moving variance is updated with the unbiased batch variance (Keras uses the biased one);
      normalisation itself uses the biased one in both frameworks."""

    def __init__(self, **kwargs):
        kwargs.setdefault("momentum", 1.0 - BN_MOMENTUM_TORCH)
        kwargs.setdefault("epsilon", BN_EPSILON)
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=False)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
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
            x, mean, variance, axis=self.axis, offset=self.beta, scale=self.gamma, epsilon=self.epsilon
        )
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
    """He et al. 2015 option A for NHWC: subsample by 2 and zero-pad the channels; no parameters."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, inputs):
        return ops.pad(inputs[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [self.pad, self.pad]])

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        half = lambda size: None if size is None else (size + 1) // 2  # noqa: E731
        return (n, half(h), half(w), c + 2 * self.pad)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def _conv_init():
    # torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (k*k*c_out))
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _conv(x, filters: int, kernel: int, stride: int, name: str, bias: bool = False):
    """A convolution padded like PyTorch's padding=kernel//2: symmetric, explicit for stride 2."""
    padding = kernel // 2
    if stride > 1 and padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        mode = "valid"
    else:
        mode = "same" if padding else "valid"
    return layers.Conv2D(
        filters, kernel, strides=stride, padding=mode, use_bias=bias, kernel_initializer=_conv_init(), name=name
    )(x)


def _bn(x, name: str):
    return TorchBatchNorm(name=name)(x)


def _relu(x, name: str):
    return layers.ReLU(name=name)(x)


def _vgg(spec: VGGSpec, inputs, num_classes: int, dropout: float):
    x, index = inputs, 0
    for item in spec.config:
        if item == POOL:
            x = layers.MaxPooling2D(2, 2, name=f"features_{index}")(x)
            index += 1
            continue
        x = _conv(x, item, 3, 1, f"features_{index}", bias=True)
        index += 1
        if spec.batch_norm:
            x = _bn(x, f"features_{index}")
            index += 1
        x = _relu(x, f"features_{index}")
        index += 1
    x = AdaptiveAveragePooling2D(VGG_HEAD_POOL, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    dense = dict(kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01), bias_initializer="zeros")
    x = layers.Dense(VGG_HEAD_WIDTH, name="classifier_0", **dense)(x)
    x = layers.Dropout(dropout, name="classifier_2")(_relu(x, "classifier_1"))
    x = layers.Dense(VGG_HEAD_WIDTH, name="classifier_3", **dense)(x)
    x = layers.Dropout(dropout, name="classifier_5")(_relu(x, "classifier_4"))
    return layers.Dense(num_classes, name="classifier_6", **dense)(x)


def _resnet_block(x, spec: ResNetSpec, c_in: int, width: int, stride: int, name: str):
    c_out = width * spec.expansion
    identity = x
    if stride != 1 or c_in != c_out:
        identity = _conv(x, c_out, 1, stride, f"{name}_downsample_0")
        identity = _bn(identity, f"{name}_downsample_1")
    if spec.block == "basic":
        out = _relu(_bn(_conv(x, width, 3, stride, f"{name}_conv1"), f"{name}_bn1"), f"{name}_relu1")
        out = _bn(_conv(out, width, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    else:
        out = _relu(_bn(_conv(x, width, 1, 1, f"{name}_conv1"), f"{name}_bn1"), f"{name}_relu1")
        out = _relu(_bn(_conv(out, width, 3, stride, f"{name}_conv2"), f"{name}_bn2"), f"{name}_relu2")
        out = _bn(_conv(out, c_out, 1, 1, f"{name}_conv3"), f"{name}_bn3")
    out = layers.Add(name=f"{name}_add")([out, identity])
    return _relu(out, f"{name}_relu")


def _resnet(spec: ResNetSpec, inputs, num_classes: int):
    x = _relu(_bn(_conv(inputs, 64, 7, 2, "conv1"), "bn1"), "relu")
    # Zero padding before the max-pool equals PyTorch's -inf padding here: inputs are post-ReLU.
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, 2, name="maxpool")(x)
    c_in = 64
    for stage, (width, blocks) in enumerate(zip(spec.widths, spec.layers)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x = _resnet_block(x, spec, c_in, width, stride, f"layer{stage + 1}_{index}")
            c_in = width * spec.expansion
    return _head(x, c_in, num_classes)


def _head(x, c_in: int, num_classes: int):
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    bound = linear_default_bound(c_in)
    uniform = keras.initializers.RandomUniform(-bound, bound)
    return layers.Dense(num_classes, kernel_initializer=uniform, bias_initializer=uniform, name="fc")(x)


def _cifar(spec: CifarResNetSpec, inputs, num_classes: int):
    c_in = spec.widths[0]
    x = _relu(_bn(_conv(inputs, c_in, 3, 1, "conv1"), "bn1"), "relu")
    for stage, width in enumerate(spec.widths):
        for index in range(spec.blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            name = f"layer{stage + 1}_{index}"
            out = _relu(_bn(_conv(x, width, 3, stride, f"{name}_conv1"), f"{name}_bn1"), f"{name}_relu1")
            out = _bn(_conv(out, width, 3, 1, f"{name}_conv2"), f"{name}_bn2")
            if spec.shortcut:
                shortcut = x
                if stride != 1 or c_in != width:
                    pad = cifar_shortcut_padding(c_in, width)
                    shortcut = OptionAShortcut(pad, name=f"{name}_shortcut")(x)
                out = layers.Add(name=f"{name}_add")([out, shortcut])
            x = _relu(out, f"{name}_relu")
            c_in = width
    return _head(x, c_in, num_classes)


def build_keras(spec: ModelSpec, num_classes: int, dropout: float, image_size: int) -> keras.Model:
    # Keras walks the functional graph recursively: ResNet-1202's ~4,000 layers need a deeper stack.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    # A functional model casts its inputs to its Input's dtype, float32 unless told: under a float64 policy
    # that rounded float64 images to float32 before the first layer.
    policy = keras.config.dtype_policy()
    input_dtype = "float64" if policy.variable_dtype == "float64" else "float32"
    inputs = keras.Input(shape=(image_size, image_size, 3), name="images", dtype=input_dtype)
    if isinstance(spec, VGGSpec):
        outputs = _vgg(spec, inputs, num_classes, dropout)
    elif isinstance(spec, ResNetSpec):
        outputs = _resnet(spec, inputs, num_classes)
    else:
        outputs = _cifar(spec, inputs, num_classes)
    return keras.Model(inputs, outputs, name=spec.name)
