"""PyTorch builder: turns a spec into an nn.Module with torchvision's module names and shapes."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

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


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM_TORCH)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class VGG(nn.Module):
    def __init__(self, spec: VGGSpec, num_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in spec.config:
            if item == POOL:
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c_in, item, 3, padding=1))  # biased even before BN, as torchvision
            if spec.batch_norm:
                layers.append(_bn(item))
            layers.append(nn.ReLU(inplace=True))
            c_in = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((VGG_HEAD_POOL, VGG_HEAD_POOL))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * VGG_HEAD_POOL * VGG_HEAD_POOL, VGG_HEAD_WIDTH),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(VGG_HEAD_WIDTH, VGG_HEAD_WIDTH),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(VGG_HEAD_WIDTH, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv3x3(c_in, width, stride)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = _bn(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv1x1(c_in, width)
        self.bn1 = _bn(width)
        self.conv2 = _conv3x3(width, width, stride)  # v1.5: stride on the 3x3
        self.bn2 = _bn(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = _bn(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, spec: ResNetSpec, num_classes: int):
        super().__init__()
        block = Bottleneck if spec.block == "bottleneck" else BasicBlock
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = 64
        for stage, (width, blocks) in enumerate(zip(spec.widths, spec.layers)):
            stage_blocks = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                c_out = width * block.expansion
                downsample = None
                if stride != 1 or c_in != c_out:
                    downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), _bn(c_out))
                stage_blocks.append(block(c_in, width, stride, downsample))
                c_in = c_out
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, num_classes)  # PyTorch's default init, as torchvision
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class OptionAShortcut(nn.Module):
    """He et al. 2015 option A: subsample by 2 and zero-pad the channels; no parameters."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.pad = cifar_shortcut_padding(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarBlock(BasicBlock):
    """A basic block whose shortcut is option A (or absent, for the plain twin) instead of a projection."""

    def __init__(self, c_in: int, width: int, stride: int, shortcut: bool):
        super().__init__(c_in, width, stride, downsample=None)
        self.shortcut = None
        if shortcut:
            self.shortcut = nn.Identity() if stride == 1 and c_in == width else OptionAShortcut(c_in, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, spec: CifarResNetSpec, num_classes: int):
        super().__init__()
        c_in = spec.widths[0]
        self.conv1 = _conv3x3(3, c_in)
        self.bn1 = _bn(c_in)
        self.relu = nn.ReLU(inplace=True)
        for stage, width in enumerate(spec.widths):
            blocks = []
            for index in range(spec.blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(CifarBlock(c_in, width, stride, spec.shortcut))
                c_in = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c_in, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _init_conv_bn(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_torch(spec: ModelSpec, num_classes: int, dropout: float, layout: str) -> nn.Module:
    if isinstance(spec, VGGSpec):
        model = VGG(spec, num_classes, dropout)
    elif isinstance(spec, ResNetSpec):
        model = ResNet(spec, num_classes)
    else:
        model = CifarResNet(spec, num_classes)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


def linear_default_bound(fan_in: int) -> float:
    """Bound of PyTorch's default nn.Linear initialisation, U(-b, b)."""
    return 1.0 / math.sqrt(fan_in)
