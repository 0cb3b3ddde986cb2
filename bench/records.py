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
from dataclasses import dataclass, fields
from pathlib import Path

from .config import Config, UsageError

STATUSES = ("ok", "oom", "error", "timeout", "skipped")
RETRYABLE = ("error", "timeout")  # what --retry-errors measures again

SCHEMA_VERSION = 2  # 1: before paired cells, layout trials and the weights bound (still loads)

# Order of the fields in results.jsonl and summary.csv.
MEASUREMENT_FIELDS = (
    "throughput_img_s", "throughput_iqr_img_s", "throughput_min_img_s", "throughput_max_img_s", "throughput_cv",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_samples", "latency_source", "first_step_s",
    "build_s", "warmup_steps_run", "warmup_s", "steps_per_window", "layout_chosen", "peak_memory_bytes",
    "peak_memory_first_step_bytes", "memory_bound_bytes", "memory_source", "nvml_memory_used_bytes",
    "gpu_util_pct_mean", "gpu_util_pct_max", "power_w", "energy_j_per_img", "cpu_util_cores", "flops_per_img",
    "achieved_tflops", "mfu", "params", "cell_id", "pairing",
)  # fmt: skip
RECORD_FIELDS = (
    "framework", "model", "family", "depth", "batch_size", "mode", "precision", "compile", "layout",
    "image_size", "device", "status", "error", *MEASUREMENT_FIELDS,
)  # fmt: skip
_TEXT_FIELDS = {"memory_source", "latency_source", "layout_chosen", "cell_id", "pairing"}

# Training costs about three forward passes (forward, and a backward of about twice the forward).
TRAIN_FLOPS_FACTOR = 3


def make_record(
    config: Config, status: str, error: str | None = None, peak_flops: float | None = None, **measured
) -> dict:
    """The one record builder: every field present (None where not measured, `unavailable` says why),
    and the derived figures computed here only: FLOPs per image from the spec, achieved TFLOP/s from
    the throughput (a training step counted as TRAIN_FLOPS_FACTOR forward passes), MFU against
    `peak_flops` where the device's peak is known."""
    from implementations import get_spec
    from implementations.lowering import flops_per_image

    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    spec = get_spec(config.model)
    record = {name: None for name in RECORD_FIELDS}
    record.update(config.to_dict())
    record.update(family=spec.family, depth=spec.depth, status=status, error=error, schema_version=SCHEMA_VERSION)
    record.update(measured)
    if status == "ok" and measured.get("throughput_img_s") is not None:
        flops = flops_per_image(spec, config.image_size)
        factor = TRAIN_FLOPS_FACTOR if config.mode == "train" else 1
        achieved = flops * factor * measured["throughput_img_s"]
        record.update(
            flops_per_img=flops, achieved_tflops=achieved / 1e12, mfu=achieved / peak_flops if peak_flops else None
        )
    record.setdefault("unavailable", {})
    record.setdefault("env", {})
    return record


def record_config(record: dict) -> Config:
    return Config.from_dict(record)


# --- the one schema check for records (report, compare and resume all use it) ------------------------


def record_problems(record) -> list[str]:
    """What makes `record` unusable, as sentences; empty when it is a valid record."""
    from implementations import FRAMEWORKS, list_models

    from .config import COMPILE, LAYOUTS, MODES, PRECISIONS

    if not isinstance(record, dict):
        return [f"a record is a JSON object, got {type(record).__name__}"]
    missing = [name for name in (*CONFIG_FIELDS, "status") if name not in record]
    if missing:
        return [f"missing field(s) {', '.join(missing)}"]
    problems = []
    choices = {
        "framework": FRAMEWORKS,
        "mode": MODES,
        "precision": PRECISIONS,
        "compile": COMPILE,
        "layout": LAYOUTS,
        "device": ("cpu", "cuda"),
        "status": STATUSES,
    }
    for name, valid in choices.items():
        if record[name] not in valid:
            problems.append(f"{name} {record[name]!r} is not one of {', '.join(valid)}")
    if record["model"] not in list_models():
        problems.append(f"model {record['model']!r} is not a known model")
    for name in ("batch_size", "image_size"):
        value = record[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if record.get("error") is not None and not isinstance(record["error"], str):
        problems.append(f"error must be text or null, got {type(record['error']).__name__}")
    for name in MEASUREMENT_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if name in _TEXT_FIELDS:
            if not isinstance(value, str):
                problems.append(f"{name} must be text or null, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            problems.append(f"{name} must be a number or null, got {value!r}")
    if record["status"] == "ok" and not problems:
        rate = record.get("throughput_img_s")
        if not (isinstance(rate, (int, float)) and 0 < rate < float("inf")):
            problems.append(f"an ok record needs a positive throughput_img_s, got {rate!r}")
    for name in ("env", "unavailable"):
        if name in record and not isinstance(record[name], dict):
            problems.append(f"{name} must be an object, got {type(record[name]).__name__}")
    return problems


CONFIG_FIELDS = tuple(f.name for f in fields(Config))


@dataclass(frozen=True)
class ResultsFile:
    """What a results.jsonl holds: valid records with their line numbers, damaged lines, a torn tail."""

    path: Path
    records: tuple[dict, ...] = ()
    lines: tuple[int, ...] = ()  # line number of each record
    problems: tuple[str, ...] = ()  # "line N: why", one per unusable complete line
    torn_tail: bytes = b""  # bytes after the last newline that do not make a record (a crash mid-write)
    torn_line: int = 0

    def check(self, plan=None) -> None:
        """Raise DamagedRunError naming every unusable line, and UsageError naming the lines that hold
        configurations outside `plan` (records of another run)."""
        if plan is not None:
            planned = {c.key() for c in plan.configs}
            foreign = [n for n, r in zip(self.lines, self.records) if record_config(r).key() not in planned]
            if foreign:
                raise UsageError(
                    f"{self.path} holds records that are not in its plan.json (lines "
                    f"{', '.join(map(str, foreign[:10]))}{' ...' if len(foreign) > 10 else ''}): they belong to another run"
                )
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            raise DamagedRunError(
                f"{self.path} has {len(self.problems)} unusable line(s); nothing was written:\n  {shown}{more}"
            )

    def torn_warning(self) -> str | None:
        if not self.torn_tail:
            return None
        return (
            f"{self.path}: line {self.torn_line} is a torn record ({len(self.torn_tail)} bytes, no newline: "
            "a crash during the write); it is not counted"
        )


class DamagedRunError(UsageError):
    """A results file with lines that are not valid records: reported by line, exit status 2."""


def read_results(path: Path) -> ResultsFile:
    """Read and check every line of a results.jsonl; nothing is skipped silently."""
    path = Path(path)
    if not path.exists():
        return ResultsFile(path)
    body, _, tail = path.read_bytes().rpartition(b"\n")  # no newline at all: everything is the tail
    records, lines, problems = [], [], []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record, problem = _parse_line(raw)
        if problem is None:
            records.append(record)
            lines.append(number)
        else:
            problems.append(f"line {number}: {problem}")
    if tail.strip():
        record, problem = _parse_line(tail)
        if problem is None:  # a whole record that only lacks its newline
            records.append(record)
            lines.append(body.count(b"\n") + 2)
            tail = b""
    torn = tail if tail.strip() else b""
    return ResultsFile(path, tuple(records), tuple(lines), tuple(problems), torn, body.count(b"\n") + 2 if torn else 0)


def _parse_line(raw: bytes) -> tuple[dict | None, str | None]:
    from implementations.frameworks import ALIASES

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 (byte {error.start})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"not JSON ({error.msg} at column {error.colno})"
    if isinstance(record, dict) and record.get("framework") in ALIASES:  # older runs: "tensorflow"
        record["framework"] = ALIASES[record["framework"]]
    problems = record_problems(record)
    if problems:
        return None, "; ".join(problems)
    return record, None


def current_records(records) -> list[dict]:
    """One record per configuration: a later attempt (--retry-errors) supersedes an earlier one."""
    latest: dict[tuple, dict] = {}
    for record in records:
        latest.pop(record_config(record).key(), None)
        latest[record_config(record).key()] = record
    return list(latest.values())


class RunStore:
    """One run directory. Records are appended one complete line at a time and never rewritten."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.results = self.path / "results.jsonl"
        self.torn = self.path / "results.jsonl.torn"

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

    def set_aside_torn_tail(self) -> str | None:
        """Move a torn last line to results.jsonl.torn and cut it from results.jsonl; returns a warning."""
        results = read_results(self.results)
        if not results.torn_tail:
            return None
        with self.torn.open("ab") as handle:
            handle.write(results.torn_tail + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        size = self.results.stat().st_size
        os.truncate(self.results, size - len(results.torn_tail))
        return f"{results.torn_warning()}; moved to {self.torn.name}"

    def append(self, record: dict) -> str | None:
        """Write `record` as one line with one write call, then flush to disk; a torn tail left by an
        earlier crash is first set aside, so the new line can never be glued onto it."""
        warning = None
        if not _ends_with_newline(self.results):
            warning = self.set_aside_torn_tail()
            if not _ends_with_newline(self.results):  # a whole record that only lacked its newline
                _write_all(self.results, b"\n")
        _write_all(self.results, (json.dumps(record) + "\n").encode("utf-8"))
        return warning

    def records(self) -> list[dict]:
        return list(read_results(self.results).records)

    def write_json(self, name: str, data) -> None:
        (self.path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text(encoding="utf-8"))


def _ends_with_newline(path: Path) -> bool:
    """True for a missing or empty file too: there is nothing to glue onto."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _write_all(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_records(path: Path) -> list[dict]:
    """The valid records of a results.jsonl (tests and tools; report/compare/resume check the file first)."""
    return list(read_results(path).records)


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
