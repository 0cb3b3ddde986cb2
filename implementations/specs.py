"""Framework-neutral architecture specs for VGG and ResNet, the model registry, and FLOP counting.

Both framework builders interpret these specs; nothing here imports a framework. Equivalence choices,
stated once for both builders:

- ResNet convolutions have no bias (a BatchNorm follows each); VGG convolutions keep their bias
  even in the _bn variants, as torchvision's do.
- BatchNorm: epsilon 1e-5, PyTorch momentum 0.1 (Keras momentum 0.9), running variance updated with
  the unbiased batch variance in both frameworks (PyTorch's rule; Keras gets a small subclass).
- Padding is symmetric everywhere: a stride-2 layer in Keras gets an explicit ZeroPadding2D and
  'valid' padding, never padding='same' (which pads the bottom/right more on even inputs).
- ResNet-50/101/152 are torchvision's "v1.5": the stride of a bottleneck sits on its 3x3 convolution.
- VGG keeps torchvision's 7x7 adaptive average pool before its 4096-4096-classes head, so any input
  of at least 32 px works.
- CIFAR ResNets (He et al. 2015, section 4.2) use parameter-free option-A shortcuts: identity, or
  subsample by 2 and zero-pad the channels when the shape changes. Their plain twins drop the shortcut.
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
VGG_HEAD_POOL = 7  # torchvision's AdaptiveAvgPool2d((7, 7))
VGG_HEAD_WIDTH = 4096
BN_EPSILON = 1e-5
BN_MOMENTUM_TORCH = 0.1  # weight of the new batch; Keras's momentum is 1 - this


class ModelNotFoundError(ValueError):
    """Raised for a model name the registry does not know; the message lists the valid names."""


@dataclass(frozen=True)
class VGGSpec:
    name: str
    depth: int
    config: tuple
    batch_norm: bool
    family: str
    default_classes: int = 1000
    default_image_size: int = 224
    min_image_size: int = 32  # five 2x2 pools need at least 32 px for a 1x1 map


@dataclass(frozen=True)
class ResNetSpec:
    name: str
    depth: int
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    family: str = "resnet"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    default_classes: int = 1000
    default_image_size: int = 224
    min_image_size: int = 32

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


@dataclass(frozen=True)
class CifarResNetSpec:
    name: str
    depth: int
    blocks_per_stage: int
    shortcut: bool  # False: the plain twin
    family: str
    widths: tuple[int, ...] = (16, 32, 64)
    default_classes: int = 10
    default_image_size: int = 32
    min_image_size: int = 8


ModelSpec = Union[VGGSpec, ResNetSpec, CifarResNetSpec]  # noqa: UP007  (a runtime alias, valid on 3.10)


def vgg_spec(depth: int, batch_norm: bool) -> VGGSpec:
    suffix = "_bn" if batch_norm else ""
    return VGGSpec(
        name=f"vgg{depth}{suffix}",
        depth=depth,
        config=VGG_CONFIGS[depth],
        batch_norm=batch_norm,
        family=f"vgg{suffix}",
    )


def resnet_spec(depth: int) -> ResNetSpec:
    block, layers = RESNET_LAYOUTS[depth]
    return ResNetSpec(name=f"resnet{depth}", depth=depth, block=block, layers=layers)


def cifar_spec(depth: int, shortcut: bool = True) -> CifarResNetSpec:
    """A CIFAR-style network of depth 6n+2; shortcut=False gives the plain twin."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR-style ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...); got {depth}"
        )
    prefix = "resnet" if shortcut else "plain"
    return CifarResNetSpec(
        name=f"{prefix}{depth}_cifar",
        depth=depth,
        blocks_per_stage=(depth - 2) // 6,
        shortcut=shortcut,
        family=f"{prefix}_cifar",
    )


def _build_registry() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    for depth in VGG_CONFIGS:
        specs += [vgg_spec(depth, False), vgg_spec(depth, True)]
    specs += [resnet_spec(depth) for depth in RESNET_LAYOUTS]
    for shortcut in (True, False):
        specs += [cifar_spec(depth, shortcut) for depth in CIFAR_DEPTHS]
    return {spec.name: spec for spec in specs}


REGISTRY: dict[str, ModelSpec] = _build_registry()
FAMILY_ORDER = ("vgg", "vgg_bn", "resnet", "resnet_cifar", "plain_cifar")
_CIFAR_NAME = re.compile(r"^(resnet|plain)(\d+)_cifar$")


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
        return cifar_spec(int(match.group(2)), shortcut=match.group(1) == "resnet")
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


# --- FLOPs ------------------------------------------------------------------------------------------
# Multiply-accumulates of convolutions and linear layers only (BN, ReLU, pooling and additions are not
# counted), the convention behind torchvision's published "GFLOPS" and torch.utils.flop_counter's
# convolution/matmul counts (which report 2 FLOPs per MAC).


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv_macs(size_out: int, c_in: int, c_out: int, kernel: int) -> int:
    return size_out * size_out * c_in * c_out * kernel * kernel


def macs_per_image(spec: ModelSpec, image_size: int | None = None, num_classes: int | None = None) -> int:
    """Multiply-accumulates for one image's forward pass, computed from the spec."""
    size = image_size or spec.default_image_size
    classes = num_classes or spec.default_classes
    check_image_size(spec, size)
    if isinstance(spec, VGGSpec):
        return _vgg_macs(spec, size, classes)
    if isinstance(spec, ResNetSpec):
        return _resnet_macs(spec, size, classes)
    return _cifar_macs(spec, size, classes)


def _vgg_macs(spec: VGGSpec, size: int, classes: int) -> int:
    macs, c_in = 0, 3
    for item in spec.config:
        if item == POOL:
            size //= 2
        else:
            macs += _conv_macs(size, c_in, item, 3)
            c_in = item
    flat = c_in * VGG_HEAD_POOL * VGG_HEAD_POOL
    return macs + flat * VGG_HEAD_WIDTH + VGG_HEAD_WIDTH * VGG_HEAD_WIDTH + VGG_HEAD_WIDTH * classes


def _resnet_macs(spec: ResNetSpec, size: int, classes: int) -> int:
    size = conv_out(size, 7, 2, 3)
    macs = _conv_macs(size, 3, 64, 7)
    size = conv_out(size, 3, 2, 1)  # max-pool
    c_in = 64
    for stage, (width, blocks) in enumerate(zip(spec.widths, spec.layers)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            c_out = width * spec.expansion
            size_out = conv_out(size, 3, stride, 1)
            if spec.block == "basic":
                macs += _conv_macs(size_out, c_in, width, 3) + _conv_macs(size_out, width, width, 3)
            else:
                macs += _conv_macs(size, c_in, width, 1)
                macs += _conv_macs(size_out, width, width, 3)
                macs += _conv_macs(size_out, width, c_out, 1)
            if stride != 1 or c_in != c_out:
                macs += _conv_macs(size_out, c_in, c_out, 1)
            size, c_in = size_out, c_out
    return macs + c_in * classes


def _cifar_macs(spec: CifarResNetSpec, size: int, classes: int) -> int:
    c_in = spec.widths[0]
    macs = _conv_macs(size, 3, c_in, 3)
    for stage, width in enumerate(spec.widths):
        for index in range(spec.blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            size = conv_out(size, 3, stride, 1)
            macs += _conv_macs(size, c_in, width, 3) + _conv_macs(size, width, width, 3)
            c_in = width
    return macs + c_in * classes


def flops_per_image(spec: ModelSpec, image_size: int | None = None, num_classes: int | None = None) -> int:
    """Forward FLOPs for one image (2 per multiply-accumulate)."""
    return 2 * macs_per_image(spec, image_size, num_classes)


def cifar_shortcut_padding(c_in: int, c_out: int) -> int:
    """Channels of zeros added on each side by an option-A shortcut."""
    return (c_out - c_in) // 2


# --- parameters -------------------------------------------------------------------------------------


def _conv_params(c_in: int, c_out: int, kernel: int, bias: bool = False) -> int:
    return c_in * c_out * kernel * kernel + (c_out if bias else 0)


def params_count(spec: ModelSpec, num_classes: int | None = None) -> int:
    """Trainable parameters computed from the spec (the builders' counts must equal this)."""
    classes = num_classes or spec.default_classes
    bn = lambda c: 2 * c  # noqa: E731  scale and shift
    if isinstance(spec, VGGSpec):
        total, c_in = 0, 3
        for item in spec.config:
            if item != POOL:
                total += _conv_params(c_in, item, 3, bias=True) + (bn(item) if spec.batch_norm else 0)
                c_in = item
        flat = c_in * VGG_HEAD_POOL * VGG_HEAD_POOL
        return (
            total + (flat + 1) * VGG_HEAD_WIDTH + (VGG_HEAD_WIDTH + 1) * VGG_HEAD_WIDTH + (VGG_HEAD_WIDTH + 1) * classes
        )
    if isinstance(spec, ResNetSpec):
        total, c_in = _conv_params(3, 64, 7) + bn(64), 64
        for stage, (width, blocks) in enumerate(zip(spec.widths, spec.layers)):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                c_out = width * spec.expansion
                if spec.block == "basic":
                    total += _conv_params(c_in, width, 3) + _conv_params(width, width, 3) + 2 * bn(width)
                else:
                    total += (
                        _conv_params(c_in, width, 1) + _conv_params(width, width, 3) + _conv_params(width, c_out, 1)
                    )
                    total += 2 * bn(width) + bn(c_out)
                if stride != 1 or c_in != c_out:
                    total += _conv_params(c_in, c_out, 1) + bn(c_out)
                c_in = c_out
        return total + (c_in + 1) * classes
    c_in = spec.widths[0]
    total = _conv_params(3, c_in, 3) + bn(c_in)
    for width in spec.widths:
        for _ in range(spec.blocks_per_stage):
            total += _conv_params(c_in, width, 3) + _conv_params(width, width, 3) + 2 * bn(width)
            c_in = width
    return total + (c_in + 1) * classes
