"""A spec lowered once into the layer list that every consumer reads.

`lower(spec, image_size)` is the only code that walks a family's topology (stems, blocks, strides,
shortcuts). The PyTorch and Keras builders are loops over its layers, parameters and MACs are sums
over them, the per-stage breakdown groups them, and weight transfer maps their names. The names are
torchvision's module names ("features.0", "layer2.0.downsample.0", "fc"); Keras uses them with "_"
for ".". Nothing here imports a framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from .specs import (
    POOL,
    SHORTCUTS,
    VGG_HEAD_POOL,
    VGG_HEAD_WIDTH,
    ModelSpec,
    ResNetSpec,
    VGGSpec,
    check_image_size,
)

INPUT = "input"  # the name a first layer reads

# Layer operations. Each builder handles exactly these (and fails on any other).
CONV, BN, RELU, MAXPOOL, ADAPTIVE_AVGPOOL, GLOBAL_AVGPOOL = "conv", "bn", "relu", "maxpool", "adaptive_avgpool", "gap"
FLATTEN, LINEAR, DROPOUT, ADD, SHORTCUT_PAD = "flatten", "linear", "dropout", "add", "shortcut_pad"
OPS = (CONV, BN, RELU, MAXPOOL, ADAPTIVE_AVGPOOL, GLOBAL_AVGPOOL, FLATTEN, LINEAR, DROPOUT, ADD, SHORTCUT_PAD)
WEIGHTED_OPS = (CONV, BN, LINEAR)

# Initialisations, torchvision's: convolutions Kaiming normal (fan-out, ReLU gain), VGG's linear layers
# N(0, 0.01) with zero bias, ResNet's classifier PyTorch's default U(-1/sqrt(fan_in), +) for weight and bias.
INIT_KAIMING_FAN_OUT = "kaiming_normal_fan_out"
INIT_NORMAL_001 = "normal_0.01"
INIT_LINEAR_DEFAULT = "uniform_inv_sqrt_fan_in"


@dataclass(frozen=True)
class Layer:
    """One operation of a lowered model: what it reads, its shapes and its hyperparameters."""

    name: str
    op: str
    inputs: tuple[str, ...]
    c_in: int
    c_out: int
    size_in: int  # spatial side of the (first) input
    size_out: int
    kernel: int = 0
    stride: int = 1
    padding: int = 0  # symmetric, on every side
    bias: bool = False
    init: str = ""
    stage: str = ""  # "stem", "layer1".."layer4", "block1".."block5" (VGG), "head"
    block: str = ""  # the residual block it belongs to ("layer1.0"), if any

    @property
    def params(self) -> int:
        """Trainable parameters (BatchNorm: scale and shift; its running statistics are not trained)."""
        if self.op == CONV:
            return self.c_in * self.c_out * self.kernel * self.kernel + (self.c_out if self.bias else 0)
        if self.op == LINEAR:
            return self.c_in * self.c_out + (self.c_out if self.bias else 0)
        if self.op == BN:
            return 2 * self.c_out
        return 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (convolutions and linear layers only, torchvision's convention)."""
        if self.op == CONV:
            return self.size_out * self.size_out * self.c_in * self.c_out * self.kernel * self.kernel
        if self.op == LINEAR:
            return self.c_in * self.c_out
        return 0

    @property
    def activations(self) -> int:
        """Elements of its output per image."""
        return self.c_out * self.size_out * self.size_out


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def linear_default_bound(fan_in: int) -> float:
    """Bound of PyTorch's default nn.Linear initialisation, U(-b, b)."""
    return 1.0 / math.sqrt(fan_in)


class _Graph:
    """Appends layers, tracking each output's channels and size so every shape is derived once."""

    def __init__(self, channels: int, size: int):
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple[int, int]] = {INPUT: (channels, size)}
        self.last = INPUT
        self.stage = ""
        self.block = ""

    def add(self, name: str, op: str, *, inputs: tuple[str, ...] | None = None, c_out: int | None = None,
            kernel: int = 0, stride: int = 1, padding: int = 0, bias: bool = False, init: str = "",
            size_out: int | None = None) -> str:  # fmt: skip
        inputs = inputs or (self.last,)
        c_in, size = self.shapes[inputs[0]]
        if op == ADD and len({self.shapes[i] for i in inputs}) != 1:
            raise ValueError(f"{name}: adding tensors of shapes {[self.shapes[i] for i in inputs]}")
        if op in (CONV, MAXPOOL, SHORTCUT_PAD):
            size_out = conv_out(size, kernel, stride, padding)
        elif op in (GLOBAL_AVGPOOL, FLATTEN, LINEAR):
            size_out = 1
        elif op != ADAPTIVE_AVGPOOL:
            size_out = size
        if op == FLATTEN:
            c_out = c_in * size * size
        c_out = c_in if c_out is None else c_out
        layer = Layer(name, op, inputs, c_in, c_out, size, size_out, kernel, stride, padding, bias, init,
                      self.stage, self.block)  # fmt: skip
        self.layers.append(layer)
        self.shapes[name] = (c_out, size_out)
        self.last = name
        return name

    def conv(self, name: str, c_out: int, kernel: int, stride: int = 1, bias: bool = False, source: str = "") -> str:
        return self.add(name, CONV, inputs=(source,) if source else None, c_out=c_out, kernel=kernel, stride=stride,
                        padding=kernel // 2, bias=bias, init=INIT_KAIMING_FAN_OUT)  # fmt: skip


def _vgg(spec: VGGSpec, graph: _Graph, num_classes: int) -> None:
    index, block = 0, 1
    for item in spec.config:
        graph.stage = f"block{block}"
        if item == POOL:
            graph.add(f"features.{index}", MAXPOOL, kernel=2, stride=2)
            index, block = index + 1, block + 1
            continue
        width, kernel = item
        graph.conv(f"features.{index}", width, kernel, bias=True)  # biased even before BN, as torchvision
        index += 1
        if spec.batch_norm:
            graph.add(f"features.{index}", BN)
            index += 1
        graph.add(f"features.{index}", RELU)
        index += 1
    graph.stage = "head"
    graph.add("avgpool", ADAPTIVE_AVGPOOL, size_out=VGG_HEAD_POOL)
    graph.add("flatten", FLATTEN)
    for index, width in ((0, VGG_HEAD_WIDTH), (3, VGG_HEAD_WIDTH), (6, num_classes)):
        graph.add(f"classifier.{index}", LINEAR, c_out=width, bias=True, init=INIT_NORMAL_001)
        if index < 6:
            graph.add(f"classifier.{index + 1}", RELU)
            graph.add(f"classifier.{index + 2}", DROPOUT)


def residual_blocks(spec: ResNetSpec):
    """(stage, index, width, stride) of every block: the first block of each stage after the first
    halves the size. The one walk of a ResNet's stages."""
    for stage, (width, blocks) in enumerate(zip(spec.widths, spec.layers)):
        for index in range(blocks):
            yield stage, index, width, (2 if stage > 0 and index == 0 else 1)


def _resnet(spec: ResNetSpec, graph: _Graph, num_classes: int) -> None:
    stem = spec.stem
    graph.stage = "stem"
    norm = spec.batch_norm
    graph.conv("conv1", stem.width, stem.kernel, stem.stride)
    if norm:
        graph.add("bn1", BN)
    graph.add("relu", RELU)
    if stem.pool_kernel:
        graph.add("maxpool", MAXPOOL, kernel=stem.pool_kernel, stride=stem.pool_stride, padding=stem.pool_kernel // 2)
    for stage, index, width, stride in residual_blocks(spec):
        graph.stage, graph.block = f"layer{stage + 1}", f"layer{stage + 1}.{index}"
        name, block_input = graph.block, graph.last
        c_in, c_out = graph.shapes[block_input][0], width * spec.expansion
        if spec.block == "bottleneck":  # v1.5: the stride on the 3x3
            convs = ((width, 1, 1), (width, 3, stride), (c_out, 1, 1))
        else:
            convs = ((width, 3, stride), (width, 3, 1))
        for number, (channels, kernel, conv_stride) in enumerate(convs, 1):
            graph.conv(f"{name}.conv{number}", channels, kernel, conv_stride)
            if norm:
                graph.add(f"{name}.bn{number}", BN)
            if number < len(convs):
                graph.add(f"{name}.relu{number}", RELU)
        main = graph.last
        reshaped = stride != 1 or c_in != c_out
        if spec.shortcut == "projection":
            shortcut = block_input
            if reshaped:
                shortcut = graph.conv(f"{name}.downsample.0", c_out, 1, stride, source=block_input)
                if norm:
                    shortcut = graph.add(f"{name}.downsample.1", BN)
        elif spec.shortcut == "option_a":
            shortcut = block_input
            if reshaped:  # subsample by 2, zero-pad the channels: no parameters
                shortcut = graph.add(f"{name}.shortcut", SHORTCUT_PAD, inputs=(block_input,), c_out=c_out, kernel=1,
                                     stride=stride)  # fmt: skip
        else:
            shortcut = ""
        if shortcut:
            graph.add(f"{name}.add", ADD, inputs=(main, shortcut))
        graph.add(f"{name}.relu", RELU)
    graph.stage, graph.block = "head", ""
    graph.add("avgpool", GLOBAL_AVGPOOL)
    graph.add("flatten", FLATTEN)
    graph.add("fc", LINEAR, c_out=num_classes, bias=True, init=INIT_LINEAR_DEFAULT)


@lru_cache(maxsize=256)
def lower(spec: ModelSpec, image_size: int | None = None, num_classes: int | None = None) -> tuple[Layer, ...]:
    """The spec's layers in execution order, for images of `image_size` px (default: the spec's)."""
    if isinstance(spec, VGGSpec):
        walk = _vgg
    elif isinstance(spec, ResNetSpec):
        if spec.shortcut not in SHORTCUTS:
            raise ValueError(f"{spec.name}: unknown shortcut kind {spec.shortcut!r}; valid: {', '.join(SHORTCUTS)}")
        walk = _resnet
    else:
        raise TypeError(f"no lowering for a {type(spec).__name__}")
    size = spec.default_image_size if image_size is None else image_size
    check_image_size(spec, size)
    graph = _Graph(3, size)
    walk(spec, graph, spec.default_classes if num_classes is None else num_classes)
    return tuple(graph.layers)


def params_count(spec: ModelSpec, num_classes: int | None = None) -> int:
    """Trainable parameters (every builder's count must equal this)."""
    return sum(layer.params for layer in lower(spec, None, num_classes))


def macs_per_image(spec: ModelSpec, image_size: int | None = None, num_classes: int | None = None) -> int:
    """Multiply-accumulates of one image's forward pass."""
    return sum(layer.macs for layer in lower(spec, image_size, num_classes))


def flops_per_image(spec: ModelSpec, image_size: int | None = None, num_classes: int | None = None) -> int:
    """Forward FLOPs for one image (2 per multiply-accumulate)."""
    return 2 * macs_per_image(spec, image_size, num_classes)


@dataclass(frozen=True)
class StageCost:
    stage: str
    layers: int
    params: int
    macs: int  # per image, forward
    activations: int  # output elements per image, summed over the stage's layers


def stage_costs(layers: tuple[Layer, ...]) -> list[StageCost]:
    """Parameters, MACs and activation elements per stage, in execution order."""
    return [
        StageCost(
            stage,
            len(members),
            sum(m.params for m in members),
            sum(m.macs for m in members),
            sum(m.activations for m in members),
        )  # fmt: skip
        for stage, members in _grouped(layers).items()
    ]


def stage_slices(layers: tuple[Layer, ...]) -> list[tuple[str, tuple[Layer, ...]]]:
    """Each stage's layers as a model of their own: the one tensor a stage reads from before it becomes
    INPUT, so a builder makes the stage's sub-model and it runs on the previous stage's output shape.
    Raises if a stage reads more than one earlier tensor (the stages of these families never do)."""
    slices, seen = [], {INPUT}
    for stage, members in _grouped(layers).items():
        names = {m.name for m in members}
        outside = {source for m in members for source in m.inputs if source not in names}
        if len(outside) != 1:
            raise ValueError(f"stage {stage!r} reads {sorted(outside)}: a stage must read exactly one tensor")
        (source,) = outside
        if source not in seen:
            raise ValueError(f"stage {stage!r} reads {source!r} before it is computed")
        rewired = tuple(
            replace(m, inputs=tuple(INPUT if i == source else i for i in m.inputs)) for m in members
        )  # fmt: skip
        slices.append((stage, rewired))
        seen |= names
    return slices


def _grouped(layers: tuple[Layer, ...]) -> dict[str, list[Layer]]:
    stages: dict[str, list[Layer]] = {}
    for layer in layers:
        stages.setdefault(layer.stage, []).append(layer)
    return stages


def consumers(layers: tuple[Layer, ...]) -> dict[str, int]:
    """How many layers read each output (a ReLU may run in place only on a tensor nothing else reads)."""
    counts: dict[str, int] = {}
    for layer in layers:
        for source in layer.inputs:
            counts[source] = counts.get(source, 0) + 1
    return counts
