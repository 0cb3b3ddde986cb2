"""The option schema: one check, with bounds and choices, for preset files, the command line and Python."""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.types import COMPILE, DEVICES, LAYOUTS, MODES, PRECISIONS, TORCH_COMPILE_MODES, UsageError
from implementations import get_spec, list_models
from implementations.frameworks import canonical_framework
from implementations.specs import ModelNotFoundError, check_image_size

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
    rule: Callable[[Any], None] | None = None  # a further check of each value (the 6n+2 depth rule)

    def label(self) -> str:
        return self.name.replace("_", " ")

    def _item(self) -> type:
        if self.item is None:
            raise TypeError(f"list option {self.name!r} declares no item type")
        return self.item

    def check(self, value, where: str):
        """`value` as typed data (TOML) if it has the right type and range; UsageError otherwise."""
        if self.kind is list:
            if isinstance(value, str) or not isinstance(value, list):
                raise UsageError(f"{self.name}{_at(where)} must be a list such as [{self._example()}], got {value!r}")
            if not value:
                raise UsageError(f"{self.name}{_at(where)} is empty; give at least one value")
            return [self._scalar(item, self._item(), where) for item in value]
        return self._scalar(value, self.kind, where)

    def parse(self, text: str, where: str = "on the command line"):
        """A command-line string to typed data: comma lists (no empty items), strict numbers."""
        if self.kind is list:
            items = [part.strip() for part in str(text).split(",")]
            if not any(items):
                raise UsageError(f"no {self.label()} given{_at(where)}; valid: {self._valid()}")
            if not all(items):
                raise UsageError(f"{self.label()}{_at(where)} has an empty item in {text!r}")
            return [self._scalar(self._from_text(item, self._item()), self._item(), where) for item in items]
        return self._scalar(self._from_text(text, self.kind), self.kind, where)

    def _from_text(self, text: str, kind: type):
        if kind is int:
            try:
                return int(text, 10)
            except ValueError:
                raise UsageError(f"{self._what()} must be an integer{self._bounds()}, got {text!r}") from None
        if kind is float:
            try:
                return float(text)
            except ValueError:
                raise UsageError(f"{self._what()} must be a number{self._bounds()}, got {text!r}") from None
        return text

    def _bounds(self) -> str:
        """' between LOW and HIGH' where both bounds are known: a wrong-type message names the valid range."""
        if self.low is None or self.high is None:
            return ""
        return f" between {_number(self.low)} and {_number(self.high)}"

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
            raise UsageError(
                f"{what}{_at(where)} must be between {_number(self.low)} and {_number(self.high)}, got {value!r}"
            )
        if self.rule is not None:
            self.rule(value)
        return value

    def typed(self, value, where: str = "on the command line"):
        """A value from the command line (text) or a default (typed) to checked data."""
        return self.parse(value, where) if isinstance(value, str) else self.check(value, "")

    def span(self) -> str:
        """The valid range or choices, for --help."""
        if self.choices:
            return ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{_number(self.low)}-{_number(self.high)}"
        return ""

    def _what(self) -> str:
        return SINGULAR.get(self.name, self.label())

    def _valid(self) -> str:
        return (
            ", ".join(self.choices) if self.choices else f"{self.item.__name__ if self.item else self.kind.__name__}s"
        )

    def _example(self) -> str:
        return ", ".join(repr(c) for c in self.choices[:2]) if self.choices else ("1, 8" if self.item is int else "'a'")


def _number(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
        Option("explain", bool),
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
            names.append(model_spec(pattern).name)
    return list(dict.fromkeys(names))


# The deepest CIFAR-style network of He et al. (2015), and of the registry: deeper ones build by name but
# would run for days on a CPU.
MAX_CIFAR_DEPTH = 1202
_CIFAR_NAME = re.compile(r"^(resnet|plain)(\d+)_cifar(_nobn)?$")


def check_cifar_depth(depth: int) -> None:
    """The 6n+2 rule of CIFAR-style ResNets (and their plain twins), bounded by MAX_CIFAR_DEPTH."""
    if depth < 8 or (depth - 2) % 6 or depth > MAX_CIFAR_DEPTH:
        raise UsageError(
            f"a CIFAR-style depth must be 6n+2 with n >= 1, at most {MAX_CIFAR_DEPTH} (8, 14, 20, 32, 44, 56, 110, "
            f"..., {MAX_CIFAR_DEPTH}); got {depth}"
        )


def model_spec(name: str):
    """The spec of a model name (a CIFAR-style name held to the 6n+2 rule); UsageError naming the valid ones."""
    match = _CIFAR_NAME.match(name)
    if match:
        check_cifar_depth(int(match.group(2)))
    try:
        return get_spec(name)
    except (ModelNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None


def check_model_size(spec, image_size: int) -> None:
    try:
        check_image_size(spec, image_size)
    except ValueError as error:
        raise UsageError(str(error)) from None


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


def gpu_count() -> int:
    """NVIDIA GPUs the frameworks would see, found without importing one: NVML, else the driver's
    /proc/driver/nvidia/gpus, else `nvidia-smi -L`; CUDA_VISIBLE_DEVICES caps the count as it caps theirs."""
    count = _nvml_count()
    if count is None:
        listed = Path("/proc/driver/nvidia/gpus")
        count = len(list(listed.iterdir())) if listed.is_dir() else _nvidia_smi_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = []
        for entry in visible.split(","):
            if not entry.strip() or entry.strip().startswith("-"):
                break  # the CUDA runtime stops at the first invalid entry
            entries.append(entry)
        count = min(count, len(entries))
    return count


def _nvml_count() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def _nvidia_smi_count() -> int:
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU ")) if listed.returncode == 0 else 0


def require_cuda() -> int:
    """The number of GPUs, for a command given --device cuda; UsageError on a machine without one."""
    count = gpu_count()
    if count < 1:
        raise UsageError(
            "--device cuda needs an NVIDIA GPU and this machine shows none (NVML, /proc/driver/nvidia and nvidia-smi "
            "find none, or CUDA_VISIBLE_DEVICES hides them); valid devices here: cpu (auto picks it)"
        )
    return count


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


# --- the other commands: the same options, bounds and rules --------------------------------------------
#
# Every command's values go through check_command before any work: the shared options are the `run`
# schema's own objects (windows, seconds per window, timeout, image size), so a bound is stated once.

MAX_REPLICAS = 1024
MAX_SHARDS = 10_000

BATCH_SIZE = Option("batch_size", int, low=1, high=MAX_BATCH_SIZE)
COMMAND_OPTIONS: dict[str, dict[str, Option]] = {
    "models": {"image_size": OPTIONS["image_size"]},
    "profile": {
        "frameworks": OPTIONS["frameworks"],
        "batch_size": BATCH_SIZE,
        "mode": Option("mode", str, choices=MODES),
        "image_size": OPTIONS["image_size"],
        "precision": Option("precision", str, choices=("fp32", "bf16")),
        "device": OPTIONS["device"],
        "windows": OPTIONS["windows"],
        "min_window_s": OPTIONS["min_window_s"],
    },
    "gradient-flow": {
        "depths": Option("depths", list, int, rule=check_cifar_depth),
        "frameworks": OPTIONS["frameworks"],
        "batch_size": BATCH_SIZE,
        "steps": Option("steps", int, low=0, high=100),
    },
    "scale": {
        "models": OPTIONS["models"],
        "frameworks": OPTIONS["frameworks"],
        "replicas": Option("replicas", list, int, low=1, high=MAX_REPLICAS),
        "nodes": Option("nodes", int, low=1, high=MAX_REPLICAS),
        "batch_size": BATCH_SIZE,
        "image_size": OPTIONS["image_size"],
        "device": Option("device", str, choices=("cpu", "cuda")),
        "windows": OPTIONS["windows"],
        "min_window_s": OPTIONS["min_window_s"],
        "timeout_s": OPTIONS["timeout_s"],
        "kill_rank": Option("kill_rank", int, low=0, high=MAX_REPLICAS - 1),
        "hang_rank": Option("hang_rank", int, low=0, high=MAX_REPLICAS - 1),
    },
    "merge": {},
    "submit": {
        "shards": Option("shards", int, low=1, high=MAX_SHARDS),
        "timeout_min": Option("timeout_min", int, low=1, high=30 * 24 * 60),
        "gpus_per_node": Option("gpus_per_node", int, low=0, high=64),
    },
}
SINGULAR.update(depths="depth", replicas="replica count")


def span(command: str, name: str) -> str:
    """An option's valid range or choices, for --help."""
    return (OPTIONS if command == "run" else COMMAND_OPTIONS[command])[name].span()


def check_command(command: str, given: dict, local: bool = True) -> dict:
    """The values of one command checked against its schema and rules (UsageError naming what is valid),
    with what they imply filled in (the device resolved, engines canonical, default sizes). `local`:
    the work runs on this machine, so its cores and GPUs bound it (a submission to Slurm does not)."""
    values = dict(given)
    for name, option in COMMAND_OPTIONS[command].items():
        if values.get(name) is not None:
            values[name] = option.typed(values[name])
    rule = COMMAND_RULES.get(command)
    if rule is not None:
        rule(values, local)
    return values


def check_engines(frameworks, supported: tuple[str, ...], what: str) -> tuple[str, ...]:
    engines = parse_frameworks(frameworks)
    for engine in engines:
        if engine not in supported:
            raise UsageError(f"{engine} cannot {what} yet; valid engines here: {', '.join(supported)}")
    return tuple(engines)


def _device_limit(device: str, local: bool) -> tuple[int, str]:
    """How many replicas this machine holds: one per core on a CPU, one per GPU on cuda."""
    if device == "cuda":
        return (require_cuda() if local else MAX_REPLICAS), "GPU(s)"
    return (_cores() if local else MAX_REPLICAS), "core(s)"


def _models_rule(v: dict, local: bool) -> None:
    if v.get("name") is not None:
        spec = model_spec(v["name"])
        v["image_size"] = spec.default_image_size if v.get("image_size") is None else v["image_size"]
        check_model_size(spec, v["image_size"])
    elif v.get("image_size") is not None:  # the CIFAR family keeps its 32 px in the list
        for name in list_models():
            if not get_spec(name).family.endswith("_cifar"):
                check_model_size(get_spec(name), v["image_size"])


# The engines each study runs in (keras-jax: opt-in on a CPU, its convolutions are slow), and the data-parallel
# strategy of each engine that scales.
PROFILED_ENGINES = ("torch", "keras-tensorflow", "keras-jax")
GRADIENT_FLOW_ENGINES = PROFILED_ENGINES
STRATEGIES = {"torch": "DistributedDataParallel", "keras-tensorflow": "MirroredStrategy"}


def _profile_rule(v: dict, local: bool) -> None:
    spec = model_spec(v["model"])
    v["model"] = spec.name
    v["engines"] = check_engines(v["frameworks"], PROFILED_ENGINES, "be profiled")
    v["device"] = resolve_device(v["device"])
    if v["device"] == "cuda" and local:
        require_cuda()
    if v.get("batch_size") is None:
        v["batch_size"] = 64 if v["device"] == "cuda" else 8
    if v.get("image_size") is None:
        v["image_size"] = spec.default_image_size
    check_model_size(spec, v["image_size"])
    check_image_fits(v["image_size"], v["batch_size"], inputs=1)


def _gradient_flow_rule(v: dict, local: bool) -> None:
    v["depths"] = tuple(dict.fromkeys(v["depths"]))
    v["engines"] = check_engines(v["frameworks"], GRADIENT_FLOW_ENGINES, "run the gradient-flow study")
    check_image_fits(32, v["batch_size"], inputs=1)


def _scale_rule(v: dict, local: bool) -> None:
    specs = [get_spec(name) for name in expand_models(v["models"])]
    v["models"] = tuple(spec.name for spec in specs)
    v["engines"] = check_engines(v["frameworks"], tuple(STRATEGIES), "run data-parallel")
    replicas = tuple(sorted({1, *v["replicas"]}))
    v["replicas"] = replicas
    limit, unit = _device_limit(v["device"], local)
    if replicas[-1] > limit:
        raise UsageError(
            f"--replicas must be between 1 and {limit} here (one replica per {unit.removesuffix('(s)')}: this "
            f"machine has {limit} {unit}), got {replicas[-1]}"
        )
    nodes = v["nodes"]
    if nodes > 1 and any(n not in (1, nodes) for n in replicas):
        raise UsageError(f"--nodes {nodes} runs one replica per worker: give --replicas {nodes} (1 is the baseline)")
    for rank in ("kill_rank", "hang_rank"):
        if v.get(rank) is not None and v[rank] >= replicas[-1]:
            raise UsageError(f"--{rank.replace('_', '-')} must be a rank below {replicas[-1]}, got {v[rank]}")
    for spec in specs:
        check_model_size(spec, v["image_size"] or spec.default_image_size)
    v["image_size"] = v["image_size"] or specs[0].default_image_size
    check_image_fits(v["image_size"], v["batch_size"] * replicas[-1], inputs=1)


def _merge_rule(v: dict, local: bool) -> None:
    out, shards = Path(v["out"]), [Path(s) for s in v["shards"]]
    for shard in shards:
        if not shard.is_dir():
            raise UsageError(f"{shard} is not a run folder (no such folder); give the folders of `run --shard I/N`")
    if out.exists() and any(out.resolve() == shard.resolve() for shard in shards):
        raise UsageError(f"{out} is one of the shards; the merged run needs a new folder")
    if (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run; give a new folder")


COMMAND_RULES: dict[str, Callable[[dict, bool], None]] = {
    "models": _models_rule,
    "profile": _profile_rule,
    "gradient-flow": _gradient_flow_rule,
    "scale": _scale_rule,
    "merge": _merge_rule,
}
