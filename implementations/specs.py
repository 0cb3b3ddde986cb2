"""Framework-neutral architecture specs for VGG and ResNet, and the model registry.

A spec is data: widths, kernels, the stem, the block kind and the shortcut kind. `lowering.lower`
turns it into the one layer list that both builders, the parameter and FLOP counts and weight
transfer read; nothing here imports a framework. Equivalence choices, stated once for every engine:

- ResNet convolutions have no bias (a BatchNorm follows each); VGG convolutions keep their bias
  even in the _bn variants, as torchvision's do.
- BatchNorm: epsilon 1e-5, PyTorch momentum 0.1 (Keras momentum 0.9), running variance updated with
  the unbiased batch variance in both frameworks (PyTorch's rule; Keras gets a small subclass).
- Padding is symmetric everywhere: a stride-2 layer in Keras gets an explicit ZeroPadding2D and
  'valid' padding, never padding='same' (which pads the bottom/right more on even inputs).
- ResNet-50/101/152 are torchvision's "v1.5": the stride of a bottleneck sits on its 3x3 convolution.
- VGG's `_5x5` variants replace each pair of 3x3 convolutions in a block by one 5x5 of the same
  width (the tutorial's 18 vs 25 weights per channel pair), a leftover single 3x3 staying.
- VGG keeps torchvision's 7x7 adaptive average pool before its 4096-4096-classes head, so any input
  of at least 32 px works.
- CIFAR ResNets (He et al. 2015, section 4.2) use parameter-free option-A shortcuts: identity, or
  subsample by 2 and zero-pad the channels when the shape changes. Their plain twins drop the shortcut;
  the `_nobn` variants of both drop every BatchNorm and change nothing else.
- Initialisation follows torchvision: Kaiming normal (fan-out, ReLU gain) for convolutions, BN scale
  1 and shift 0, VGG linear layers N(0, 0.01) with zero bias, ResNet's final linear layer PyTorch's
  default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Union

POOL = "M"
KERNEL_3X3 = 3
KERNEL_5X5 = 5

# torchvision's VGG configurations (Simonyan & Zisserman 2014, Table 1): widths, "M" = 2x2 max-pool.
VGG_CONFIGS: dict[int, tuple] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    13: (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    19: (
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL,
    ),
}  # fmt: skip

# He et al. 2015, Table 1: block kind and blocks per stage.
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
CIFAR_NOBN_DEPTHS = (20, 56, 110)  # the gradient-flow study's depths (any 6n+2 depth builds by name)
VGG_HEAD_POOL = 7  # torchvision's AdaptiveAvgPool2d((7, 7))
VGG_HEAD_WIDTH = 4096
BN_EPSILON = 1e-5
BN_MOMENTUM_TORCH = 0.1  # weight of the new batch; Keras's momentum is 1 - this


class ModelNotFoundError(ValueError):
    """Raised for a model name the registry does not know; the message lists the valid names."""


@dataclass(frozen=True)
class Stem:
    """A ResNet's first convolution (padded by kernel // 2) and its optional max-pool."""

    width: int
    kernel: int
    stride: int
    pool_kernel: int = 0  # 0: no max-pool
    pool_stride: int = 1


IMAGENET_STEM = Stem(width=64, kernel=7, stride=2, pool_kernel=3, pool_stride=2)
CIFAR_STEM = Stem(width=16, kernel=KERNEL_3X3, stride=1)


@dataclass(frozen=True)
class VGGSpec:
    name: str
    depth: int
    config: tuple  # (width, kernel) per convolution, POOL per 2x2 max-pool
    batch_norm: bool
    family: str
    default_classes: int = 1000
    default_image_size: int = 224
    min_image_size: int = 32  # five 2x2 pools need at least 32 px for a 1x1 map


@dataclass(frozen=True)
class ResNetSpec:
    name: str
    depth: int
    block: str  # "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1 at 4x width)
    layers: tuple[int, ...]  # blocks per stage
    family: str
    widths: tuple[int, ...]
    stem: Stem
    shortcut: str  # "projection" (1x1 conv + BN when the shape changes), "option_a" (parameter-free), "none" (plain)
    batch_norm: bool = True  # False: the same network without any BatchNorm (the gradient-flow study's control)
    default_classes: int = 1000
    default_image_size: int = 224
    min_image_size: int = 32

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


ModelSpec = Union[VGGSpec, ResNetSpec]  # noqa: UP007  (a runtime alias, valid on 3.10)
SHORTCUTS = ("projection", "option_a", "none")


def merge_3x3_pairs(config: tuple) -> tuple:
    """The tutorial's 5x5 comparison as data: inside each block (the convolutions between two pools),
    every consecutive pair of 3x3 convolutions becomes one 5x5 of the same width, with the same
    receptive field; a leftover single 3x3 stays (a block of three becomes 5x5 + 3x3)."""
    merged: list = []
    block: list[int] = []
    for item in (*config, None):
        if item == POOL or item is None:
            for index in range(0, len(block) - 1, 2):
                merged.append((block[index], KERNEL_5X5))
            if len(block) % 2:
                merged.append((block[-1], KERNEL_3X3))
            block = []
            if item == POOL:
                merged.append(POOL)
        else:
            block.append(item)
    return tuple(merged)


def vgg_spec(depth: int, batch_norm: bool, kernel: int = KERNEL_3X3) -> VGGSpec:
    suffix = ("_bn" if batch_norm else "") + ("_5x5" if kernel == KERNEL_5X5 else "")
    widths = VGG_CONFIGS[depth]
    config = (
        merge_3x3_pairs(widths)
        if kernel == KERNEL_5X5
        else tuple(item if item == POOL else (item, KERNEL_3X3) for item in widths)
    )
    return VGGSpec(name=f"vgg{depth}{suffix}", depth=depth, config=config, batch_norm=batch_norm, family=f"vgg{suffix}")


def resnet_spec(depth: int) -> ResNetSpec:
    block, layers = RESNET_LAYOUTS[depth]
    return ResNetSpec(
        name=f"resnet{depth}",
        depth=depth,
        block=block,
        layers=layers,
        family="resnet",
        widths=(64, 128, 256, 512),
        stem=IMAGENET_STEM,
        shortcut="projection",
    )


def cifar_spec(depth: int, shortcut: bool = True, batch_norm: bool = True) -> ResNetSpec:
    """A CIFAR-style network of depth 6n+2 (He et al. 2015, section 4.2); shortcut=False gives the plain twin,
    batch_norm=False the same network with every BatchNorm removed (`_nobn`: convolutions stay bias-free)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR-style ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...); got {depth}"
        )
    prefix = "resnet" if shortcut else "plain"
    suffix = "" if batch_norm else "_nobn"
    n = (depth - 2) // 6
    return ResNetSpec(
        name=f"{prefix}{depth}_cifar{suffix}",
        depth=depth,
        block="basic",
        layers=(n, n, n),
        family=f"{prefix}_cifar{suffix}",
        widths=(16, 32, 64),
        stem=CIFAR_STEM,
        shortcut="option_a" if shortcut else "none",
        batch_norm=batch_norm,
        default_classes=10,
        default_image_size=32,
        min_image_size=8,
    )


def _build_registry() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    for depth in VGG_CONFIGS:
        specs += [vgg_spec(depth, False), vgg_spec(depth, True)]
    specs += [vgg_spec(depth, False, KERNEL_5X5) for depth in VGG_CONFIGS]
    specs += [resnet_spec(depth) for depth in RESNET_LAYOUTS]
    for shortcut in (True, False):
        specs += [cifar_spec(depth, shortcut) for depth in CIFAR_DEPTHS]
    for shortcut in (True, False):
        specs += [cifar_spec(depth, shortcut, batch_norm=False) for depth in CIFAR_NOBN_DEPTHS]
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, ModelSpec] = _build_registry()
FAMILY_ORDER = (
    "vgg",
    "vgg_bn",
    "vgg_5x5",
    "resnet",
    "resnet_cifar",
    "plain_cifar",
    "resnet_cifar_nobn",
    "plain_cifar_nobn",
)
_CIFAR_NAME = re.compile(r"^(resnet|plain)(\d+)_cifar(_nobn)?$")


def natural_key(name: str) -> tuple:
    """Sort key that puts resnet18 before resnet101."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names in family then depth order, optionally filtered by a glob."""
    import fnmatch

    names = sorted(REGISTRY, key=lambda n: (FAMILY_ORDER.index(REGISTRY[n].family), natural_key(n)))
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    """The spec for a registered name, or for any 6n+2 CIFAR depth (`resnet8_cifar`, `plain14_cifar`)."""
    if name in REGISTRY:
        return REGISTRY[name]
    match = _CIFAR_NAME.match(name)
    if match:
        return cifar_spec(int(match.group(2)), shortcut=match.group(1) == "resnet", batch_norm=not match.group(3))
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}.{hint} Valid models: {', '.join(list_models())} "
        f"(CIFAR-style names accept any depth 6n+2, e.g. resnet8_cifar)."
    )


def check_image_size(spec: ModelSpec, image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < spec.min_image_size:
        raise ValueError(
            f"image size {image_size!r} is too small for {spec.name}: it needs at least {spec.min_image_size} px"
        )
