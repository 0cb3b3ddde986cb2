"""VGG and ResNet in PyTorch and Keras 3 (TensorFlow or JAX backend), built from one lowered spec.

    from implementations import list_models, build, count_params, flops_per_image
    model = build("resnet50", "torch")                            # torch.nn.Module, torchvision names
    model = build("resnet50", "keras-tensorflow", image_size=64)  # keras.Model, NHWC

Importing this package needs neither framework.
"""

from __future__ import annotations

from . import lowering
from .frameworks import FRAMEWORKS, FrameworkNotInstalledError, canonical_framework, is_installed, require
from .specs import ModelNotFoundError, check_image_size, get_spec, list_models

LAYOUTS = ("channels_first", "channels_last")

__all__ = [
    "FRAMEWORKS",
    "LAYOUTS",
    "FrameworkNotInstalledError",
    "ModelNotFoundError",
    "build",
    "count_params",
    "flops_per_image",
    "get_spec",
    "is_installed",
    "require",
    "canonical_framework",
    "keras_to_torch",
    "list_models",
    "lowering",
    "torch_to_keras",
]


def build(
    name: str,
    framework: str,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    dropout: float = 0.5,
    layout: str | None = None,
):
    """Build model `name` natively for an engine: "torch" (an nn.Module), "keras-tensorflow" or "keras-jax"
    (the same keras.Model on either Keras backend; aliases: tensorflow, tf, keras; jax).

    image_size: input side in pixels (default: 224 for ImageNet models, 32 for the CIFAR family); Keras
    models are built for that static size, PyTorch models accept any size of at least the minimum.
    layout: "channels_first" (PyTorch default) or "channels_last"; Keras models are always channels_last.
    dropout: VGG head dropout probability (0 makes training deterministic, for equivalence tests).
    Everything is validated before a framework is imported.
    """
    spec = get_spec(name)
    framework = canonical_framework(framework)
    image_size = spec.default_image_size if image_size is None else image_size
    check_image_size(spec, image_size)
    num_classes = spec.default_classes if num_classes is None else num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if framework == "torch":
        layout = layout or "channels_first"
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        require("torch")
        from .torch_models import build_torch

        return build_torch(spec, num_classes, dropout, layout, image_size)
    if layout not in (None, "channels_last"):
        raise ValueError(f"Keras models are channels_last (NHWC) only; got layout {layout!r}")
    require(framework)  # sets Keras's backend first (refused if another is loaded)
    from .keras_models import build_keras

    return build_keras(spec, num_classes, dropout, image_size)


def count_params(model) -> int:
    """Trainable parameters of a built model (Keras's count_params() would add BN moving statistics)."""
    if hasattr(model, "named_parameters"):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(sum(int(_prod(w.shape)) for w in model.trainable_weights))


def _prod(shape) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def flops_per_image(name: str, image_size: int | None = None, num_classes: int | None = None) -> int:
    """Forward FLOPs for one image (2 per multiply-accumulate of convolutions and linear layers)."""
    return lowering.flops_per_image(get_spec(name), image_size, num_classes)


def torch_to_keras(torch_model, keras_model) -> None:
    """Copy a PyTorch model's weights into the Keras build of the same spec."""
    from .transfer import torch_to_keras as transfer

    transfer(torch_model, keras_model)


def keras_to_torch(keras_model, torch_model) -> None:
    """Copy a Keras model's weights into the PyTorch build of the same spec."""
    from .transfer import keras_to_torch as transfer

    transfer(keras_model, torch_model)
