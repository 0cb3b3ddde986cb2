"""What a run is made of: frozen configurations, measurement settings and the plan, as plain data."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from implementations.frameworks import canonical_framework

MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE = ("off", "on")  # off: PyTorch eager, TensorFlow tf.function graph; on: torch.compile, XLA
# PyTorch memory formats; "auto" times both after warm-up and measures with the faster (session.py).
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
        values = {f.name: data[f.name] for f in fields(cls)}
        values["framework"] = canonical_framework(values["framework"])  # older runs: "tensorflow"
        return cls(**values)


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
    # TensorFlow's inter-op pool (0: as many threads as the intra-op pool, `threads`). 0 is the default:
    # `python -m bench.studies.tf_threads` measured it against 1 on the default CPU cells in paired workers
    # (results/tf-threads/20261202-cpu, 2-core Xeon): faster in 6 of 16 cells (training, 1.20-1.48x), slower in none.
    tf_inter_op_threads: int = 0
    # A short profiled pass after each cell's windows (untimed) gives each record its operator categories: the
    # report's findings explain a gap by them. Off: no pass.
    explain: bool = True

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
    shard: dict | None = None  # {"index": i, "count": n, "plan_digest": ...}: this plan is shard i of n of a plan

    def digest(self) -> str:
        """What identifies the whole sweep: its configurations and settings (shards of one plan share it)."""
        import hashlib

        body = json.dumps({"configs": [c.to_dict() for c in self.configs], "settings": asdict(self.settings)},
                          sort_keys=True)  # fmt: skip
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            **({"shard": self.shard} if self.shard else {}),
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
            shard=data.get("shard"),
        )
