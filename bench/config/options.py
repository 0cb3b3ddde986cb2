"""The option schema: one check, with bounds and choices, for preset files, the command line and Python."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from implementations import get_spec, list_models
from implementations.frameworks import canonical_framework
from implementations.specs import ModelNotFoundError

from .types import COMPILE, DEVICES, LAYOUTS, MODES, PRECISIONS, TORCH_COMPILE_MODES, UsageError

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
