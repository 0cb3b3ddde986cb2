"""What to measure: frozen configurations, measurement settings, named profiles and validation.

Everything here is plain data and importable without torch or TensorFlow. Validation happens at the
edge (CLI, profile files) and raises UsageError with what was received and what is valid.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from implementations import FRAMEWORKS, get_spec, list_models
from implementations.frameworks import canonical_framework
from implementations.specs import ModelNotFoundError, check_image_size

MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("off", "on")  # off: PyTorch eager, TensorFlow tf.function graph; on: torch.compile, XLA
LAYOUTS = ("channels_last", "channels_first")
DEVICES = ("auto", "cpu", "cuda")
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class UsageError(ValueError):
    """Bad input from the user: the CLI prints it and exits with status 2."""


@dataclass(frozen=True)
class Config:
    """One measured point. Hashable: the key for resume, grouping and comparison."""

    framework: str
    model: str
    batch_size: int
    mode: str
    precision: str = "fp32"
    compile: str = "off"
    layout: str = "channels_last"
    image_size: int = 32
    device: str = "cpu"

    def key(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def group(self) -> tuple:
        """Everything but the batch size: an OOM at batch b skips larger batches of the same group."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "batch_size")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Settings:
    """How each configuration is measured (the same for every configuration of a run)."""

    warmup_steps: int = 3
    windows: int = 5
    min_window_s: float = 0.5
    max_window_steps: int = 1000
    threads: int = 0  # 0: all cores of the machine
    inputs: int = 4  # pre-generated batches rotated through, resident on the device
    seed: int = 0
    tf32: bool = True
    torch_compile_mode: str = "default"
    timeout_s: float = 600.0

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """The whole sweep: configurations in the order they run, and how to measure them."""

    configs: tuple[Config, ...]
    settings: Settings
    profile: str = "custom"
    notes: tuple[str, ...] = field(default_factory=tuple)
    max_batch: bool = False
    max_batch_limit: int = 4096

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "settings": asdict(self.settings),
            "notes": list(self.notes),
            "max_batch": self.max_batch,
            "max_batch_limit": self.max_batch_limit,
            "configs": [c.to_dict() for c in self.configs],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(
            configs=tuple(Config.from_dict(c) for c in data["configs"]),
            settings=Settings(**data["settings"]),
            profile=data.get("profile", "custom"),
            notes=tuple(data.get("notes", ())),
            max_batch=data.get("max_batch", False),
            max_batch_limit=data.get("max_batch_limit", 4096),
        )


# --- profiles ---------------------------------------------------------------------------------------

IMAGENET_MODELS = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

PROFILES: dict[str, dict] = {
    # Small enough for a 2-core CPU in under 5 minutes, still both frameworks, two depths per family,
    # train and infer, three batch sizes. 32 px keeps the convolutions affordable on a CPU; VGG's
    # 120M-parameter head still costs ~0.4 s per training step whatever the image size.
    "cpu-default": dict(
        frameworks=["torch", "tensorflow"],
        models=["vgg11", "vgg13", "resnet18", "resnet34", "resnet20_cifar", "resnet32_cifar"],
        batch_sizes=[1, 2, 4],
        modes=["train", "infer"],
        precisions=["fp32"],
        image_size=32,
        warmup_steps=1,
        windows=5,
        min_window_s=0.05,
    ),
    # The full study on a GPU: every ImageNet depth at 224 px, batch 1 to 256, fp32 and bf16.
    "gpu-full": dict(
        frameworks=["torch", "tensorflow"],
        models=list(IMAGENET_MODELS),
        batch_sizes=[1, 2, 4, 8, 16, 32, 64, 128, 256],
        modes=["train", "infer"],
        precisions=["fp32", "bf16"],
        image_size=224,
        warmup_steps=10,
        windows=5,
        min_window_s=1.0,
    ),
    # A minute on a CPU: the smallest meaningful sweep, used by the tests and as a smoke check.
    "smoke": dict(
        frameworks=["torch", "tensorflow"],
        models=["resnet20_cifar"],
        batch_sizes=[2, 4],
        modes=["train", "infer"],
        precisions=["fp32"],
        image_size=32,
        warmup_steps=1,
        windows=5,
        min_window_s=0.02,
    ),
}


def detect_gpu() -> str | None:
    """Name of the first NVIDIA GPU, found through NVML (no framework import), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                return name.decode() if isinstance(name, bytes) else name
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return None


def default_profile_name() -> str:
    return "gpu-full" if detect_gpu() else "cpu-default"


def load_profile(name_or_path: str) -> tuple[str, dict]:
    """An embedded profile by name, or a TOML file whose keys are the `run` options (snake_case)."""
    if name_or_path in PROFILES:
        return name_or_path, dict(PROFILES[name_or_path])
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"profile file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"profile file {str(path)!r} is not valid TOML: {error}") from None
        unknown = set(data) - set(OPTION_NAMES)
        if unknown:
            raise UsageError(
                f"profile file {str(path)!r} has unknown keys {sorted(unknown)}; valid keys: {', '.join(OPTION_NAMES)}"
            )
        return path.stem, data
    raise UsageError(f"unknown profile {name_or_path!r}; valid profiles: {', '.join(PROFILES)} or a .toml file")


OPTION_NAMES = (
    "frameworks", "models", "batch_sizes", "modes", "precisions", "compile", "layouts", "image_size",
    "device", "threads", "warmup_steps", "windows", "min_window_s", "max_window_steps", "timeout_s",
    "tf32", "torch_compile_mode", "seed",
)  # fmt: skip


# --- validation -------------------------------------------------------------------------------------


def _choices(values, valid: tuple[str, ...], what: str) -> list[str]:
    values = list(values)
    for value in values:
        if value not in valid:
            raise UsageError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
    return list(dict.fromkeys(values))


def parse_frameworks(values) -> list[str]:
    result = []
    for value in values:
        try:
            result.append(canonical_framework(value))
        except ValueError as error:
            raise UsageError(str(error)) from None
    return list(dict.fromkeys(result))


def expand_models(patterns) -> list[str]:
    """Names and globs (`resnet*`, `vgg1?_bn`) to model names, in registry order."""
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = list_models(pattern)
            if not matched:
                raise UsageError(
                    f"model pattern {pattern!r} matches no model; valid models: {', '.join(list_models())}"
                )
            names += matched
        else:
            try:
                names.append(get_spec(pattern).name)
            except (ModelNotFoundError, ValueError) as error:
                raise UsageError(str(error)) from None
    return list(dict.fromkeys(names))


def positive_int(value, what: str) -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        raise UsageError(f"{what} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise UsageError(f"{what} must be a positive integer, got {value!r}")
    return number


def positive_float(value, what: str, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number, got {value!r}") from None
    if number != number or number < 0 or (number == 0 and not allow_zero):
        raise UsageError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return number


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if detect_gpu() else "cpu"
    return device


def check_output_dir(path: Path) -> None:
    """Refuse an existing run (never overwrite) or a directory we cannot create and write, before any work."""
    if (path / "results.jsonl").exists():
        raise UsageError(f"{path} already holds a run; use --resume {path} to continue it, or another --out")
    existed = path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"output directory {str(path)!r} is not writable: {error.strerror or error}") from None
    if not existed:
        path.rmdir()  # created only to prove it can be; the run creates it again


def build_plan(options: dict, profile: str = "custom") -> Plan:
    """Validate merged options (profile values overridden by the command line) and expand the product."""
    for key, valid in (
        ("frameworks", ", ".join(FRAMEWORKS)),
        ("models", "names or globs from `python -m bench models`"),
        ("batch_sizes", "positive integers"),
        ("modes", ", ".join(MODES)),
        ("precisions", ", ".join(PRECISIONS)),
    ):
        if not list(options.get(key) or []):
            raise UsageError(f"no {key.replace('_', ' ')} given; valid: {valid}")
    frameworks = parse_frameworks(options["frameworks"])
    models = expand_models(options["models"])
    batch_sizes = sorted({positive_int(b, "batch size") for b in options["batch_sizes"]})
    modes = _choices(options["modes"], MODES, "mode")
    precisions = _choices(options["precisions"], PRECISIONS, "precision")
    compile_values = _choices(options.get("compile", ["off"]), COMPILE, "compile setting")
    layouts = _choices(options.get("layouts", ["channels_last"]), LAYOUTS, "layout")
    image_size = positive_int(options["image_size"], "image size")
    for name in models:
        try:
            check_image_size(get_spec(name), image_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    device = resolve_device(options.get("device", "auto"))
    compile_mode = options.get("torch_compile_mode", "default")
    if compile_mode not in TORCH_COMPILE_MODES:
        raise UsageError(f"unknown torch compile mode {compile_mode!r}; valid: {', '.join(TORCH_COMPILE_MODES)}")
    windows = positive_int(options.get("windows", 5), "windows")
    if windows < 5:
        raise UsageError(f"windows must be at least 5 (throughput is the median of the windows), got {windows}")
    settings = Settings(
        warmup_steps=int(positive_float(options.get("warmup_steps", 3), "warmup steps", allow_zero=True)),
        windows=windows,
        min_window_s=positive_float(options.get("min_window_s", 0.5), "min window seconds", allow_zero=True),
        max_window_steps=positive_int(options.get("max_window_steps", 1000), "max window steps"),
        threads=int(positive_float(options.get("threads", 0), "threads", allow_zero=True)),
        seed=int(options.get("seed", 0)),
        tf32=bool(options.get("tf32", True)),
        torch_compile_mode=compile_mode,
        timeout_s=positive_float(options.get("timeout_s", 600), "timeout"),
    )
    notes = []
    configs = []
    for framework, precision, compiled, layout in itertools.product(frameworks, precisions, compile_values, layouts):
        if framework == "tensorflow" and layout == "channels_first":
            notes.append("TensorFlow runs NHWC (channels_last) only: its channels_first configurations are not planned")
            continue
        for model, mode, batch in itertools.product(models, modes, batch_sizes):
            configs.append(Config(framework, model, batch, mode, precision, compiled, layout, image_size, device))
    configs = order_configs(configs, interleave=device == "cpu")
    return Plan(
        tuple(configs),
        settings,
        profile=profile,
        notes=tuple(dict.fromkeys(notes)),
        max_batch=bool(options.get("max_batch", False)),
        max_batch_limit=positive_int(options.get("max_batch_limit", 4096), "max batch limit"),
    )


def order_configs(configs: list[Config], interleave: bool) -> list[Config]:
    """Batch sizes ascend within a group (so an OOM can skip the larger ones).

    On a CPU the frameworks alternate configuration by configuration, so slow drifts of a noisy machine
    hit both alike. On a GPU each framework's configurations run together and its worker is closed
    before the next framework starts: TensorFlow never returns device memory it has taken.
    """
    framework_rank = {name: i for i, name in enumerate(FRAMEWORKS)}
    model_rank = {name: i for i, name in enumerate(list_models())}

    def key(c: Config) -> tuple:
        rest = (c.precision, c.compile, c.layout, model_rank.get(c.model, len(model_rank)), c.model, c.mode)
        if interleave:
            return (*rest, c.batch_size, framework_rank[c.framework])
        return (framework_rank[c.framework], *rest, c.batch_size)

    return sorted(configs, key=key)
