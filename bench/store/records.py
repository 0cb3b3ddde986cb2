"""Result records and the run directory: the typed record, JSONL storage (append + flush per record), env.

A record is a frozen `Record`; on disk it is one flat JSON object per line of results.jsonl, its fields
documented in results/README.md. The run directory is the database: results.jsonl (records), plan.json
(what was asked), env.json (where it ran).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from bench.config import Config, UsageError
from bench.store.atomic import append_bytes, write_json
from bench.store.provenance import command_line, git_state

STATUSES = ("ok", "oom", "error", "timeout", "skipped")
RETRYABLE = ("error", "timeout")  # what --retry-errors measures again

# 1: before paired cells, layout trials and the weights bound; 2: engines named torch/keras-tensorflow/
# keras-jax (a record of either loads: absent fields are None, "tensorflow" reads as keras-tensorflow).
SCHEMA_VERSION = 2

# Training costs about three forward passes (forward, and a backward of about twice the forward).
TRAIN_FLOPS_FACTOR = 3


@dataclass(frozen=True)
class Record:
    """One configuration's outcome: what was asked, its status, and every figure measured (None where
    not measured; `unavailable` says why). Built by `make_record`, written by `RunStore.append`, read by
    `read_results` (and `Record.from_json` for records embedded elsewhere); nothing else makes one."""

    framework: str
    model: str
    family: str
    depth: int
    batch_size: int
    mode: str
    precision: str
    compile: str
    layout: str
    image_size: int
    device: str
    status: str
    error: str | None = None
    throughput_img_s: float | None = None
    throughput_iqr_img_s: float | None = None
    throughput_min_img_s: float | None = None
    throughput_max_img_s: float | None = None
    throughput_cv: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_samples: int | None = None
    latency_source: str | None = None
    first_step_s: float | None = None
    build_s: float | None = None
    warmup_steps_run: int | None = None
    warmup_s: float | None = None
    steps_per_window: int | None = None
    layout_chosen: str | None = None
    peak_memory_bytes: int | None = None
    peak_memory_first_step_bytes: int | None = None
    memory_bound_bytes: int | None = None
    memory_source: str | None = None
    nvml_memory_used_bytes: int | None = None
    gpu_util_pct_mean: float | None = None
    gpu_util_pct_max: float | None = None
    power_w: float | None = None
    energy_j_per_img: float | None = None
    cpu_util_cores: float | None = None
    flops_per_img: int | None = None
    achieved_tflops: float | None = None
    mfu: float | None = None
    params: int | None = None
    cell_id: str | None = None
    pairing: str | None = None  # "interleaved" with the other engines of cell_id, or "alone"
    # The samples behind the medians, and how they were taken.
    window_throughputs_img_s: tuple[float, ...] = ()
    window_seconds: tuple[float, ...] = ()
    step_seconds: tuple[float, ...] = ()
    warmup_steady: bool | None = None
    window_rule: str | None = None
    layout_trial: dict | None = None  # PyTorch layout auto: both formats' rates and the verdict
    # The explain pass after the windows (untimed): seconds per step by operator category (with "outside
    # operators", the unprofiled step's time that no operator accounts for), what the pass cost, and its mean
    # step time without and under the profiler; on a CPU, the bytes the pass left allocated (not taken off the
    # peak as the configuration's caches).
    op_categories: dict | None = None
    explain_s: float | None = None
    explain_step_s: float | None = None
    profiled_step_s: float | None = None
    explain_left_bytes: int | None = None
    unavailable: dict = field(default_factory=dict)  # field name -> why it was not measured
    env: dict = field(default_factory=dict)  # where and how it ran: host, framework versions, settings
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in _SAMPLE_FIELDS:  # lists from JSON or a backend become tuples: the record is immutable
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))

    @property
    def config(self) -> Config:
        return Config(**{name: getattr(self, name) for name in CONFIG_FIELDS})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def with_env(self, env: dict) -> Record:
        return replace(self, env=env)

    def to_json(self) -> dict:
        """The JSON object of one results.jsonl line (fields in declaration order)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _SAMPLE_FIELDS:
            data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data) -> Record:
        """A record from its JSON object; RecordError names every problem. Older runs load: an absent
        field is None (schema 1 had no schema_version), an old engine name reads as its canonical one."""
        from implementations.frameworks import ALIASES

        if isinstance(data, dict) and data.get("framework") in ALIASES:
            data = {**data, "framework": ALIASES[data["framework"]]}
        problems = record_problems(data)
        if problems:
            raise RecordError("; ".join(problems))
        return cls(**{"schema_version": 1, **data})


class RecordError(ValueError):
    """A JSON object that is not a valid record."""


RECORD_FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("unavailable", "env", "schema_version"))
RECORD_FIELDS = RECORD_FIELDS[: RECORD_FIELDS.index("window_throughputs_img_s")]  # the columns of summary.csv
MEASUREMENT_FIELDS = RECORD_FIELDS[RECORD_FIELDS.index("throughput_img_s") :]
_SAMPLE_FIELDS = ("window_throughputs_img_s", "window_seconds", "step_seconds")
_TEXT_FIELDS = {"memory_source", "latency_source", "layout_chosen", "cell_id", "pairing", "window_rule"}
_KNOWN_FIELDS = {f.name for f in fields(Record)}
CONFIG_FIELDS = tuple(f.name for f in fields(Config))


def make_record(
    config: Config, status: str, error: str | None = None, peak_flops: float | None = None, **measured
) -> Record:
    """The one record builder: the derived figures are computed here only: FLOPs per image from the
    spec, achieved TFLOP/s from the throughput (a training step counted as TRAIN_FLOPS_FACTOR forward
    passes), MFU against `peak_flops` where the device's peak is known."""
    from implementations import get_spec
    from implementations.lowering import flops_per_image

    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    spec = get_spec(config.model)
    derived = {}
    if status == "ok" and measured.get("throughput_img_s") is not None:
        flops = flops_per_image(spec, config.image_size)
        factor = TRAIN_FLOPS_FACTOR if config.mode == "train" else 1
        achieved = flops * factor * measured["throughput_img_s"]
        derived = dict(
            flops_per_img=flops, achieved_tflops=achieved / 1e12, mfu=achieved / peak_flops if peak_flops else None
        )
    return Record(
        **config.to_dict(),
        family=spec.family,
        depth=spec.depth,
        status=status,
        error=error,
        **{**measured, **derived},
    )


# --- the one schema check for records (report, compare and resume all use it) ------------------------


def record_problems(record) -> list[str]:
    """What makes the JSON object `record` unusable, as sentences; empty when it is a valid record."""
    from bench.config import COMPILE, LAYOUTS, MODES, PRECISIONS
    from implementations import FRAMEWORKS, list_models

    if not isinstance(record, dict):
        return [f"a record is a JSON object, got {type(record).__name__}"]
    missing = [name for name in (*CONFIG_FIELDS, "family", "depth", "status") if name not in record]
    if missing:
        return [f"missing field(s) {', '.join(missing)}"]
    unknown = sorted(set(record) - _KNOWN_FIELDS)
    if unknown:
        return [f"unknown field(s) {', '.join(unknown)}"]
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
    for name in _SAMPLE_FIELDS:
        value = record.get(name)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            problems.append(f"{name} must be a list of numbers, got {value!r}")
    if record["status"] == "ok" and not problems:
        rate = record.get("throughput_img_s")
        if not (isinstance(rate, (int, float)) and 0 < rate < float("inf")):
            problems.append(f"an ok record needs a positive throughput_img_s, got {rate!r}")
    for name in ("env", "unavailable"):
        if name in record and not isinstance(record[name], dict):
            problems.append(f"{name} must be an object, got {type(record[name]).__name__}")
    for name in ("layout_trial", "op_categories"):
        if record.get(name) is not None and not isinstance(record[name], dict):
            problems.append(f"{name} must be an object or null, got {type(record[name]).__name__}")
    return problems


@dataclass(frozen=True)
class ResultsFile:
    """What a results.jsonl holds: valid records with their line numbers, damaged lines, a torn tail."""

    path: Path
    records: tuple[Record, ...] = ()
    lines: tuple[int, ...] = ()  # line number of each record
    problems: tuple[str, ...] = ()  # "line N: why", one per unusable complete line
    torn_tail: bytes = b""  # bytes after the last newline that do not make a record (a crash mid-write)
    torn_line: int = 0

    def check(self, plan=None) -> None:
        """Raise DamagedRunError naming every unusable line, and UsageError naming the lines that hold
        configurations outside `plan` (records of another run)."""
        if plan is not None:
            planned = {c.key() for c in plan.configs}
            foreign = [n for n, r in zip(self.lines, self.records) if r.config.key() not in planned]
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


def _parse_line(raw: bytes) -> tuple[Record | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 (byte {error.start})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"not JSON ({error.msg} at column {error.colno})"
    try:
        return Record.from_json(data), None
    except RecordError as error:
        return None, str(error)


def current_records(records) -> list[Record]:
    """One record per configuration: a later attempt (--retry-errors) supersedes an earlier one."""
    latest: dict[tuple, Record] = {}
    for record in records:
        latest.pop(record.config.key(), None)
        latest[record.config.key()] = record
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
        append_bytes(self.torn, results.torn_tail + b"\n")
        size = self.results.stat().st_size
        os.truncate(self.results, size - len(results.torn_tail))
        return f"{results.torn_warning()}; moved to {self.torn.name}"

    def append(self, record: Record) -> str | None:
        """Write `record` as one line with one write call, then flush to disk; a torn tail left by an
        earlier crash is first set aside, so the new line can never be glued onto it."""
        warning = None
        if not _ends_with_newline(self.results):
            warning = self.set_aside_torn_tail()
            if not _ends_with_newline(self.results):  # a whole record that only lacked its newline
                _write_all(self.results, b"\n")
        _write_all(self.results, (json.dumps(record.to_json()) + "\n").encode("utf-8"))
        return warning

    def records(self) -> list[Record]:
        return list(read_results(self.results).records)

    def write_json(self, name: str, data) -> None:
        write_json(self.path / name, data)

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
    append_bytes(path, data)  # one write; cut back to the old length if it fails: never a half line


def load_records(path: Path) -> list[Record]:
    """The valid records of a results.jsonl (tests and tools; report/compare/resume check the file first)."""
    return list(read_results(path).records)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_env(argv: list[str] | None = None) -> dict:
    """Where and how the run was made (the commit, and whether the tree outside results/ differed from it);
    framework details are added by each worker, the start, end and wall time by `provenance.stamp`."""
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        **git_state(),
        "command_line": command_line(argv),
    }


def hardware(env: dict, records) -> dict:
    """What makes two machines comparable: the CPU model and cores (env.json, else the records' env), and
    the GPU names its records saw. `bench merge` and `bench compare` both judge machines by this."""
    recorded = next((r.env for r in records if r.env.get("cpu_model") or r.env.get("cpu_cores")), {})
    gpus = sorted({r.env.get("device_name") for r in records if r.device == "cuda" and r.env.get("device_name")})
    return {
        "cpu_model": env.get("cpu_model") or recorded.get("cpu_model"),
        "cpu_cores": env.get("cpu_cores") or recorded.get("cpu_cores"),
        "gpus": gpus,
    }


def hardware_of(run: Path) -> dict:
    env = json.loads((run / "env.json").read_text()) if (run / "env.json").exists() else {}
    return hardware(env, read_results(run / "results.jsonl").records)
