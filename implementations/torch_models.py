"""PyTorch builder: the lowered layer list as a torch.fx GraphModule.

Each layer becomes a module at its torchvision name ("layer1.0.conv1"), so `named_modules()` and
`state_dict()` keys read as torchvision's; the forward pass is code generated from the layer graph,
straight-line Python with no interpretation at run time.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.nn import functional as F

from .lowering import (
    ADAPTIVE_AVGPOOL,
    ADD,
    BN,
    CONV,
    DROPOUT,
    FLATTEN,
    GLOBAL_AVGPOOL,
    INIT_KAIMING_FAN_OUT,
    INIT_LINEAR_DEFAULT,
    INIT_NORMAL_001,
    INPUT,
    LINEAR,
    MAXPOOL,
    RELU,
    SHORTCUT_PAD,
    Layer,
    consumers,
    lower,
)
from .specs import BN_EPSILON, BN_MOMENTUM_TORCH, ModelSpec


class OptionAShortcut(nn.Module):
    """He et al. 2015 option A: subsample by the stride and zero-pad the channels; no parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.pad = (c_out - c_in) // 2
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))


def _module(layer: Layer, dropout: float, in_place: bool) -> nn.Module:
    op = layer.op
    if op == CONV:
        module = nn.Conv2d(layer.c_in, layer.c_out, layer.kernel, layer.stride, layer.padding, bias=layer.bias)
        if layer.init == INIT_KAIMING_FAN_OUT:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        return module
    if op == LINEAR:
        module = nn.Linear(layer.c_in, layer.c_out, bias=layer.bias)
        if layer.init == INIT_NORMAL_001:
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
        elif layer.init != INIT_LINEAR_DEFAULT:  # PyTorch's own default is U(-1/sqrt(fan_in), +) already
            raise ValueError(f"{layer.name}: unknown initialisation {layer.init!r}")
        return module
    if op == BN:
        return nn.BatchNorm2d(layer.c_out, eps=BN_EPSILON, momentum=BN_MOMENTUM_TORCH)  # scale 1, shift 0
    if op == RELU:
        return nn.ReLU(inplace=in_place)
    if op == MAXPOOL:
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding)
    if op == ADAPTIVE_AVGPOOL:
        return nn.AdaptiveAvgPool2d((layer.size_out, layer.size_out))
    if op == GLOBAL_AVGPOOL:
        return nn.AdaptiveAvgPool2d((1, 1))
    if op == DROPOUT:
        return nn.Dropout(dropout)
    if op == SHORTCUT_PAD:
        return OptionAShortcut(layer.c_in, layer.c_out, layer.stride)
    raise ValueError(f"{layer.name}: no PyTorch module for op {op!r}")


def _attach(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at a dotted path, creating plain containers on the way ("layer1" then "0")."""
    *path, leaf = name.split(".")
    parent = root
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(leaf, module)


def build_torch(spec: ModelSpec, num_classes: int, dropout: float, layout: str, image_size: int | None = None):
    return torch_from_layers(lower(spec, image_size, num_classes), spec.name, dropout, layout)


def torch_from_layers(layers: tuple[Layer, ...], name: str, dropout: float = 0.0, layout: str = "channels_first"):
    """A GraphModule running `layers` (a whole lowered model, or one stage of it) from INPUT."""
    readers = consumers(layers)
    root, graph = nn.Module(), fx.Graph()
    values = {INPUT: graph.placeholder("x")}
    for layer in layers:
        args = tuple(values[source] for source in layer.inputs)
        if layer.op == ADD:
            values[layer.name] = graph.call_function(operator.add, args)
        elif layer.op == FLATTEN:
            values[layer.name] = graph.call_function(torch.flatten, (args[0], 1))
        else:
            # In place only on a tensor nothing else reads (a residual block's input is read twice).
            in_place = layer.inputs[0] != INPUT and readers.get(layer.inputs[0], 0) == 1
            _attach(root, layer.name, _module(layer, dropout, in_place))
            values[layer.name] = graph.call_module(layer.name, args)
    graph.output(values[layers[-1].name])
    model = fx.GraphModule(root, graph, class_name=name.replace("-", "_"))
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model
