"""What to measure: frozen configurations, measurement settings, named presets and one option schema.

Everything here is plain data and importable without torch or TensorFlow. Validation happens at the
edge (CLI, preset files) and raises UsageError with what was received and what is valid.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from implementations import FRAMEWORKS, get_spec, list_models
from implementations.frameworks import canonical_framework
from implementations.specs import ModelNotFoundError, check_image_size

MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("off", "on")  # off: PyTorch eager, TensorFlow tf.function graph; on: torch.compile, XLA
# PyTorch memory formats; "auto" times both after warm-up and measures with the faster (measure.py).
LAYOUTS = ("auto", "channels_last", "channels_first")
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
    layout: str = "auto"
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
    windows: int = 6
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
    preset: str = "custom"
    notes: tuple[str, ...] = field(default_factory=tuple)
    max_batch: bool = False
    max_batch_limit: int = 4096

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "settings": asdict(self.settings),
            "notes": list(self.notes),
            "max_batch": self.max_batch,
            "max_batch_limit": self.max_batch_limit,
            "configs": [c.to_dict() for c in self.configs],
        }

    @classmethod
    def read(cls, path: Path) -> Plan:
        """The plan in a run's plan.json; UsageError (exit 2) when it cannot be read as one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
            raise UsageError(f"{path} is not a valid plan ({type(error).__name__}: {error})") from None

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(
            configs=tuple(Config.from_dict(c) for c in data["configs"]),
            settings=Settings(**data["settings"]),
            preset=data.get("preset", data.get("profile", "custom")),  # runs made before the rename say profile
            notes=tuple(data.get("notes", ())),
            max_batch=data.get("max_batch", False),
            max_batch_limit=data.get("max_batch_limit", 4096),
        )


# --- presets ----------------------------------------------------------------------------------------

IMAGENET_MODELS = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

PRESETS: dict[str, dict] = {
    # Both families at two depths each (VGG-11/13 and the ResNets made for 32 px images), train and infer,
    # two batch sizes, on a 2-core CPU in under 6 minutes. Engines alternate 10 windows of at least
    # 0.5 s per cell: ten pairs give a 95% interval for each ratio that tolerates one outlier on each side,
    # and the windows are at least half of the run's wall time.
    "cpu-default": dict(
        frameworks=["torch", "tensorflow"],
        models=["vgg11", "vgg13", "resnet20_cifar", "resnet32_cifar"],
        batch_sizes=[2, 8],
        modes=["train", "infer"],
        precisions=["fp32"],
        image_size=32,
        warmup_steps=1,
        windows=10,
        min_window_s=0.5,
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
        windows=6,
        min_window_s=1.0,
    ),
    # Under a minute on a CPU: the smallest meaningful sweep, used by the tests and as a smoke check.
    "smoke": dict(
        frameworks=["torch", "tensorflow"],
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


def default_preset_name() -> str:
    return "gpu-full" if detect_gpu() else "cpu-default"


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


# --- the option schema: one check for preset files and the command line ------------------------------

MAX_IMAGE_SIZE = 4096
MAX_BATCH_SIZE = 65536


@dataclass(frozen=True)
class Option:
    """One `run` option: its type (a scalar, or a list of `item`), its bounds and its valid choices."""

    name: str
    kind: type  # int, float, bool, str or list
    item: type | None = None  # the type of a list's items
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def label(self) -> str:
        return self.name.replace("_", " ")

    def check(self, value, where: str):
        """`value` as typed data (TOML) if it has the right type and range; UsageError otherwise."""
        if self.kind is list:
            if isinstance(value, str) or not isinstance(value, list):
                raise UsageError(f"{self.name}{_at(where)} must be a list such as [{self._example()}], got {value!r}")
            if not value:
                raise UsageError(f"{self.name}{_at(where)} is empty; give at least one value")
            return [self._scalar(item, self.item, where) for item in value]
        return self._scalar(value, self.kind, where)

    def parse(self, text: str, where: str = "on the command line"):
        """A command-line string to typed data: comma lists (no empty items), strict numbers."""
        if self.kind is list:
            items = [part.strip() for part in str(text).split(",")]
            if not any(items):
                raise UsageError(f"no {self.label()} given{_at(where)}; valid: {self._valid()}")
            if not all(items):
                raise UsageError(f"{self.label()}{_at(where)} has an empty item in {text!r}")
            return [self._scalar(self._from_text(item, self.item), self.item, where) for item in items]
        return self._scalar(self._from_text(text, self.kind), self.kind, where)

    def _from_text(self, text: str, kind: type):
        if kind is int:
            try:
                return int(text, 10)
            except ValueError:
                raise UsageError(f"{self._what()} must be an integer, got {text!r}") from None
        if kind is float:
            try:
                return float(text)
            except ValueError:
                raise UsageError(f"{self._what()} must be a number, got {text!r}") from None
        return text

    def _scalar(self, value, kind: type, where: str):
        what = self._what()
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{what}{_at(where)} must be an integer, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{what}{_at(where)} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise UsageError(f"{what}{_at(where)} must be a finite number, got {value!r}")
            value = float(value)
        elif kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{what}{_at(where)} must be true or false, got {value!r}")
        elif not isinstance(value, str):
            raise UsageError(f"{what}{_at(where)} must be text, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"unknown {what} {value!r}; valid {what}s: {', '.join(self.choices)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise UsageError(f"{what}{_at(where)} must be between {self.low:g} and {self.high:g}, got {value!r}")
        return value

    def _what(self) -> str:
        return SINGULAR.get(self.name, self.label())

    def _valid(self) -> str:
        return (
            ", ".join(self.choices) if self.choices else f"{self.item.__name__ if self.item else self.kind.__name__}s"
        )

    def _example(self) -> str:
        return ", ".join(repr(c) for c in self.choices[:2]) if self.choices else ("1, 8" if self.item is int else "'a'")


def _at(where: str) -> str:
    return f" {where}" if where else ""


SINGULAR = {
    "frameworks": "framework", "models": "model", "batch_sizes": "batch size", "modes": "mode",
    "precisions": "precision", "compile": "compile setting", "layouts": "layout",
}  # fmt: skip


def _cores() -> int:
    return os.cpu_count() or 1


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("frameworks", list, str),
        Option("models", list, str),
        Option("batch_sizes", list, int, 1, MAX_BATCH_SIZE),
        Option("modes", list, str, choices=MODES),
        Option("precisions", list, str, choices=PRECISIONS),
        Option("compile", list, str, choices=COMPILE),
        Option("layouts", list, str, choices=LAYOUTS),
        Option("image_size", int, low=1, high=MAX_IMAGE_SIZE),
        Option("device", str, choices=DEVICES),
        Option("threads", int, low=0, high=_cores()),
        Option("warmup_steps", int, low=0, high=10_000),
        Option("windows", int, low=6, high=1000),  # six: the fewest with a 95% interval for a median
        Option("min_window_s", float, low=0, high=3600),
        Option("max_window_steps", int, low=1, high=1_000_000),
        Option("timeout_s", float, low=1, high=86_400),
        Option("tf32", bool),
        Option("torch_compile_mode", str, choices=TORCH_COMPILE_MODES),
        Option("seed", int, low=0, high=2**32 - 1),
        Option("max_batch", bool),
        Option("max_batch_limit", int, low=1, high=MAX_BATCH_SIZE),
    )
}


# --- validation -------------------------------------------------------------------------------------


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


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# The widest first stage of these families (VGG and ResNet: 64 channels) bounds the first activation.
FIRST_STAGE_CHANNELS = 64


def input_memory_bytes(image_size: int, batch_size: int, inputs: int) -> int:
    """The stated bound on an image size: the pre-generated input batches plus one 64-channel float32
    map at full resolution (the first activation's size or more) must fit in the machine's memory."""
    return batch_size * (3 * inputs + FIRST_STAGE_CHANNELS) * image_size * image_size * 4


def check_image_fits(image_size: int, batch_size: int, inputs: int) -> None:
    memory = physical_memory_bytes()
    needed = input_memory_bytes(image_size, batch_size, inputs)
    if memory and needed > memory:
        raise UsageError(
            f"image size {image_size} px at batch {batch_size} needs at least {needed / 2**30:.1f} GiB for its inputs "
            f"and first activation ({inputs} input batches + a 64-channel map, float32), more than this machine's "
            f"{memory / 2**30:.1f} GiB; use a smaller --image-size or batch size"
        )


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


DEFAULTS = dict(
    compile=["off"], layouts=["auto"], device="auto", threads=0, warmup_steps=3, windows=6,
    min_window_s=0.5, max_window_steps=1000, timeout_s=600.0, tf32=True, torch_compile_mode="default", seed=0,
    max_batch=False, max_batch_limit=4096,
)  # fmt: skip


def build_plan(options: dict, preset: str = "custom") -> Plan:
    """Check typed options (a preset's values overridden by the command line) and expand the product.

    Every value passes the option schema here, whatever its source, so a plan built from Python is held
    to the same rules as one from a preset file or the command line.
    """
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown options {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    for key, valid in (
        ("frameworks", ", ".join(FRAMEWORKS)),
        ("models", "names or globs from `python -m bench models`"),
        ("batch_sizes", "positive integers"),
        ("modes", ", ".join(MODES)),
        ("precisions", ", ".join(PRECISIONS)),
    ):
        if not options.get(key):
            raise UsageError(f"no {key.replace('_', ' ')} given; valid: {valid}")
    o = {name: OPTIONS[name].check(value, "") for name, value in {**DEFAULTS, **options}.items()}
    frameworks = parse_frameworks(o["frameworks"])
    models = expand_models(o["models"])
    batch_sizes = sorted(set(o["batch_sizes"]))
    modes, precisions = list(dict.fromkeys(o["modes"])), list(dict.fromkeys(o["precisions"]))
    compile_values, layouts = list(dict.fromkeys(o["compile"])), list(dict.fromkeys(o["layouts"]))
    image_size = o["image_size"]
    for name in models:
        try:
            check_image_size(get_spec(name), image_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    settings = Settings(
        warmup_steps=o["warmup_steps"],
        windows=o["windows"],
        min_window_s=o["min_window_s"],
        max_window_steps=o["max_window_steps"],
        threads=o["threads"],
        seed=o["seed"],
        tf32=o["tf32"],
        torch_compile_mode=o["torch_compile_mode"],
        timeout_s=o["timeout_s"],
    )
    check_image_fits(image_size, max(batch_sizes), settings.inputs)
    device = resolve_device(o["device"])
    notes = []
    configs = []
    for framework, precision, compiled in itertools.product(frameworks, precisions, compile_values):
        engine_layouts = layouts if framework == "torch" else ["channels_last"]  # Keras models are NHWC only
        if framework != "torch" and set(layouts) - {"auto", "channels_last"}:
            notes.append(f"{framework} runs NHWC (channels_last) only: --layout applies to PyTorch")
        for layout, model, mode, batch in itertools.product(engine_layouts, models, modes, batch_sizes):
            configs.append(Config(framework, model, batch, mode, precision, compiled, layout, image_size, device))
    configs = order_configs(configs, interleave=device == "cpu")
    return Plan(
        tuple(configs),
        settings,
        preset=preset,
        notes=tuple(dict.fromkeys(notes)),
        max_batch=o["max_batch"],
        max_batch_limit=o["max_batch_limit"],
    )


def order_configs(configs: list[Config], interleave: bool) -> list[Config]:
    """Batch sizes ascend within a group (so an OOM can skip the larger ones).

    On a CPU the engines of a cell sit side by side: the runner prepares them together and alternates
    their timed windows, so slow drifts of a noisy machine hit all alike. On a GPU each framework's configurations run together and its worker is closed
    before the next framework starts: TensorFlow never returns device memory it has taken.
    """
    framework_rank = {name: i for i, name in enumerate(FRAMEWORKS)}
    model_rank = {name: i for i, name in enumerate(list_models())}

    layout_rank = {name: i for i, name in enumerate(LAYOUTS)}

    def key(c: Config) -> tuple:
        rest = (c.precision, c.compile, model_rank.get(c.model, len(model_rank)), c.model, c.mode)
        engine = (framework_rank[c.framework], layout_rank[c.layout])
        if interleave:  # the engines of a cell side by side
            return (*rest, c.batch_size, *engine)
        return (*engine, *rest, c.batch_size)

    return sorted(configs, key=key)
