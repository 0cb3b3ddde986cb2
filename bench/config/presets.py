"""Named sweeps, the one picked for this hardware, and preset files."""

from __future__ import annotations

from pathlib import Path

from bench.config.options import OPTIONS, detect_gpu
from bench.config.types import UsageError

# --- presets ----------------------------------------------------------------------------------------

IMAGENET_MODELS = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

PRESETS: dict[str, dict] = {
    # Both families at two depths each (VGG-11/13 and the ResNets made for 32 px images), train and infer,
    # two batch sizes, on a 2-core CPU in under 6 minutes. Engines alternate 10 windows of at least
    # 0.5 s per cell: ten pairs give a 95% interval for each ratio that tolerates one outlier on each side,
    # and the windows are at least half of the run's wall time.
    "cpu-default": dict(
        frameworks=["torch", "keras-tensorflow"],
        models=["vgg11", "vgg13", "resnet20_cifar", "resnet32_cifar"],
        batch_sizes=[2, 8],
        modes=["train", "infer"],
        precisions=["fp32"],
        image_size=32,
        warmup_steps=1,
        windows=10,
        min_window_s=0.5,
    ),
    # The default on a GPU: every ImageNet depth of both families at 224 px, batch 256, bf16, train and infer,
    # every engine. Bounded: its PyTorch part is estimated at 5 min 28 s on an H200 from the committed H200
    # records (tests/test_estimate.py); adding fp32 (+4 min) or ResNet-50 compiled (+1.8 min) would not fit
    # 6 minutes, so those are `gpu-resnet50`. The Keras engines have no GPU record yet: no estimate.
    "gpu-default": dict(
        frameworks=["torch", "keras-tensorflow", "keras-jax"],
        models=list(IMAGENET_MODELS),
        batch_sizes=[256],
        modes=["train", "infer"],
        precisions=["bf16"],
        image_size=224,
        warmup_steps=5,
        windows=6,
        min_window_s=0.25,
    ),
    # ResNet-50 on a GPU, each setting that matters: fp32 (TF32) and bf16, eager and compiled (torch.compile,
    # XLA; keras-jax is always jitted), batch 256, train and infer.
    "gpu-resnet50": dict(
        frameworks=["torch", "keras-tensorflow", "keras-jax"],
        models=["resnet50"],
        batch_sizes=[256],
        modes=["train", "infer"],
        precisions=["fp32", "bf16"],
        compile=["off", "on"],
        image_size=224,
        warmup_steps=5,
        windows=6,
        min_window_s=0.25,
    ),
    # The full study on a GPU (over two hours of PyTorch alone on an H200, by the estimate README.md quotes from
    # the committed records): every ImageNet depth at 224 px,
    # batch 1 to 256, fp32 and bf16, every engine (one not installed is recorded as skipped, with the command
    # that installs it).
    "gpu-full": dict(
        frameworks=["torch", "keras-tensorflow", "keras-jax"],
        models=list(IMAGENET_MODELS),
        batch_sizes=[1, 2, 4, 8, 16, 32, 64, 128, 256],
        modes=["train", "infer"],
        precisions=["fp32", "bf16"],
        image_size=224,
        warmup_steps=10,
        windows=6,
        min_window_s=1.0,
    ),
    # Under a minute on a CPU: the smallest meaningful sweep, used by the tests and as a smoke check.
    "smoke": dict(
        frameworks=["torch", "keras-tensorflow"],
        models=["resnet20_cifar"],
        batch_sizes=[2, 4],
        modes=["train", "infer"],
        precisions=["fp32"],
        image_size=32,
        warmup_steps=1,
        windows=6,
        min_window_s=0.02,
    ),
}


def default_preset_name() -> str:
    return "gpu-default" if detect_gpu() else "cpu-default"


def load_preset(name_or_path: str) -> tuple[str, dict]:
    """An embedded preset by name, or a TOML file whose keys are the `run` options (snake_case),
    checked against the option schema (types, lists vs scalars, bounds) before anything runs."""
    if name_or_path in PRESETS:
        return name_or_path, dict(PRESETS[name_or_path])
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        import tomllib

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"preset file {str(path)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise UsageError(f"preset file {str(path)!r} is not valid TOML: {error}") from None
        except OSError as error:
            raise UsageError(f"preset file {str(path)!r} cannot be read: {error.strerror or error}") from None
        unknown = set(data) - set(OPTIONS)
        if unknown:
            raise UsageError(
                f"preset file {str(path)!r} has unknown keys {sorted(unknown)}; valid keys: {', '.join(OPTIONS)}"
            )
        where = f"in preset file {str(path)!r}"
        return path.stem, {name: OPTIONS[name].check(value, where) for name, value in data.items()}
    raise UsageError(f"unknown preset {name_or_path!r}; valid presets: {', '.join(PRESETS)} or a .toml file")
