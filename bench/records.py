"""Result records and the run directory: field list, JSONL storage (append + flush per record), env.

A record is a flat JSON object; its fields are documented in results/README.md. The run directory is
the database: results.jsonl (records), plan.json (what was asked), env.json (where it ran).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

from .config import Config

STATUSES = ("ok", "oom", "error", "timeout", "skipped")

# Order of the fields in results.jsonl and summary.csv.
MEASUREMENT_FIELDS = (
    "throughput_img_s", "throughput_iqr_img_s", "throughput_min_img_s", "throughput_max_img_s", "throughput_cv",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "first_step_s", "build_s", "steps_per_window",
    "peak_memory_bytes", "memory_source", "nvml_memory_used_bytes", "gpu_util_pct_mean", "gpu_util_pct_max",
    "power_w", "energy_j_per_img", "cpu_util_cores", "flops_per_img", "achieved_tflops", "mfu", "params",
)  # fmt: skip
RECORD_FIELDS = (
    "framework", "model", "family", "depth", "batch_size", "mode", "precision", "compile", "layout",
    "image_size", "device", "status", "error", *MEASUREMENT_FIELDS,
)  # fmt: skip


def make_record(config: Config, status: str, error: str | None = None, **measured) -> dict:
    """A complete record: every field present, None where not measured (`unavailable` says why)."""
    from implementations import get_spec

    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    spec = get_spec(config.model)
    record = {name: None for name in RECORD_FIELDS}
    record.update(config.to_dict())
    record.update(family=spec.family, depth=spec.depth, status=status, error=error)
    record.update(measured)
    record.setdefault("unavailable", {})
    record.setdefault("env", {})
    return record


def record_config(record: dict) -> Config:
    return Config.from_dict(record)


class RunStore:
    """One run directory. Records are appended and flushed one at a time and never rewritten."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.results = self.path / "results.jsonl"

    @classmethod
    def create(cls, parent: Path, label: str) -> RunStore:
        """A new directory under `parent`, named by time and label; never an existing one."""
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{label}"
        for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
            path = Path(parent) / f"{base}{suffix}"
            try:
                path.mkdir(parents=True, exist_ok=False)
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a new run directory under {parent}")

    def append(self, record: dict) -> None:
        with self.results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[dict]:
        return load_records(self.results)

    def write_json(self, name: str, data) -> None:
        (self.path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text(encoding="utf-8"))


def load_records(path: Path) -> list[dict]:
    """Records of a results.jsonl; a torn last line (a crash mid-write) is ignored."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except Exception:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_env(argv: list[str] | None = None) -> dict:
    """Where and how the run was made; framework details are added by each worker."""
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "git_commit": git_commit(),
        "command_line": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
