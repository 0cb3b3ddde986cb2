"""Data-parallel scaling: each engine at 1..N replicas, on the frameworks' own distributed engines.

PyTorch: torchrun and DistributedDataParallel (gloo on a CPU, NCCL on GPUs). Keras on TensorFlow:
MirroredStrategy in one process (N logical CPU devices, or N GPUs), or MultiWorkerMirroredStrategy with
one process per worker configured by TF_CONFIG (`--nodes`, emulated on this host with localhost ports).
Weak scaling: the batch per replica is fixed; the global batch is replicas x that. On a CPU the cores are
split evenly: each replica gets cores // (largest replica count) threads, the 1-replica baseline too.
A rank that dies or hangs becomes a record naming it; the sweep goes on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.config.options import STRATEGIES
from bench.execute import launch
from bench.measure import stats


@dataclass(frozen=True)
class ScaleRecord:
    engine: str
    model: str
    replicas: int
    nodes: int
    batch_per_replica: int
    global_batch: int
    image_size: int
    device: str
    strategy: str
    status: str  # ok, error, timeout
    error: str | None = None
    failed_ranks: tuple[int, ...] = ()
    collective: str | None = None
    interconnect: str | None = None
    threads_per_replica: int | None = None
    throughput_img_s: float | None = None  # the whole job: global batch x steps / the slowest rank's window
    throughput_low_img_s: float | None = None  # 95% interval of the median window
    throughput_high_img_s: float | None = None
    step_s: float | None = None
    no_exchange_step_s: float | None = None  # the same step without the gradient all-reduce
    exposed_comm_s: float | None = None  # median over window pairs of (step - no-exchange step)
    exposed_comm_low_s: float | None = None  # its 95% interval
    exposed_comm_high_s: float | None = None
    first_step_s: float | None = None
    windows: int | None = None
    gradient_bytes: int | None = None  # parameters x 4: what each replica all-reduces per step
    step_window_s: tuple[float, ...] = ()  # the samples: each window's seconds (the slowest replica's)
    no_exchange_window_s: tuple[float, ...] = ()
    steps_per_window: int | None = None
    peak_memory_bytes_per_replica: tuple = ()
    memory_source: str | None = None
    method: str | None = None
    env: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        return {**data, **{name: list(data[name]) for name in _TUPLES}}

    @classmethod
    def from_json(cls, data: dict) -> ScaleRecord:
        return cls(**{**data, **{name: tuple(data.get(name, ())) for name in _TUPLES}})


_TUPLES = ("failed_ranks", "step_window_s", "no_exchange_window_s", "peak_memory_bytes_per_replica")


@dataclass(frozen=True)
class ScaleRequest:
    engines: tuple[str, ...]
    models: tuple[str, ...]
    replicas: tuple[int, ...]
    nodes: int = 1
    batch_per_replica: int = 8
    image_size: int = 32
    device: str = "cpu"
    windows: int = 6
    min_window_s: float = 0.2
    warmup_steps: int = 2
    seed: int = 0
    timeout_s: float = 600.0
    kill_rank: int | None = None  # fault injection (tests): this rank dies after joining
    hang_rank: int | None = None

    def threads_per_replica(self) -> int:
        return max(1, (os.cpu_count() or 1) // max(self.replicas))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict:
    return launch.child_env(TF_CPP_MIN_LOG_LEVEL="2")


def _run(commands: list[tuple[list[str], dict]], log: Path, timeout_s: float) -> tuple[list[int], bool]:
    """Start every command (one per node or worker), wait for all; (return codes, whether time ran out).
    A dead rank leaves the others blocked in a collective, so the first failure ends the whole job; a
    timeout, an exception or a signal too. Ending a job ends each process's whole tree (launch.reap):
    torchrun starts its ranks in sessions of their own, where its process group does not reach."""
    processes = []
    timed_out = False
    with log.open("w") as handle:
        try:
            for command, env in commands:
                processes.append(launch.start(command, env=env, stdout=handle, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + timeout_s  # one limit for the whole job, however many processes it has
            while any(p.poll() is None for p in processes):
                if any(p.returncode not in (0, None) for p in processes):
                    break
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:
            codes = [p.poll() for p in processes]
            for process in processes:
                launch.reap(process)
    return [c if c is not None else p.returncode for c, p in zip(codes, processes)], timed_out


def measure(engine: str, model: str, replicas: int, request: ScaleRequest, out: Path) -> ScaleRecord:
    from implementations import get_spec
    from implementations.lowering import params_count

    threads = request.threads_per_replica()
    # --nodes is TensorFlow's multi-worker strategy (one process per worker); PyTorch's ranks run on this host.
    nodes = request.nodes if replicas > 1 and engine == "keras-tensorflow" else 1
    strategy = STRATEGIES[engine] if nodes == 1 else "MultiWorkerMirroredStrategy"
    base = ScaleRecord(
        engine=engine, model=model, replicas=replicas, nodes=nodes, batch_per_replica=request.batch_per_replica,
        global_batch=replicas * request.batch_per_replica, image_size=request.image_size, device=request.device,
        strategy=strategy, status="error", threads_per_replica=threads,
        gradient_bytes=4 * params_count(get_spec(model)),
        interconnect="one host: loopback TCP and shared memory" if request.device == "cpu" else "not read",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        status_dir = Path(scratch)
        job = {**asdict(request), "model": model, "replicas": replicas, "batch_size": request.batch_per_replica}
        request_path, results_path = status_dir / "request.json", str(status_dir / "result-{rank}.json")
        log = out / f"scale-{engine}-{model}-{replicas}.log"
        # Every rank is the one task entry's `replica` task (bench/execute/tasks.py), each writing its own result.
        task = ("bench.execute.tasks", engine, "replica", str(request_path), results_path)
        env = {**_env(), "KERAS_BACKEND": "tensorflow"} if engine == "keras-tensorflow" else _env()
        if engine == "torch":
            job["threads"] = threads
            request_path.write_text(json.dumps(job))
            # torchrun under the guard, and each rank too (bench.execute.launch runs the module after the guard)
            command = launch.python_module(
                "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(replicas), "--master-addr",
                "127.0.0.1", "--master-port", str(_free_port()), "-m", "bench.execute.launch", *task)  # fmt: skip
            commands = [(command, env)]
        elif nodes == 1:
            job.update(strategy="mirrored", threads=threads * replicas)
            request_path.write_text(json.dumps(job))
            commands = [(launch.python_module(*task), env)]
        else:
            if replicas != nodes:
                return replace(base, error=f"multi-worker runs one replica per worker: --replicas {replicas} "
                                           f"needs --nodes {replicas}")  # fmt: skip
            job.update(strategy="multi-worker", threads=threads)
            request_path.write_text(json.dumps(job))
            ports = [_free_port() for _ in range(nodes)]
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            commands = [(launch.python_module(*task),
                         {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
                        for i in range(nodes)]  # fmt: skip
        codes, timed_out = _run(commands, log, request.timeout_s)
        ranks = replicas if engine == "torch" else nodes  # MirroredStrategy: one process for every replica
        unfinished = tuple(r for r in range(ranks) if not (status_dir / f"result-{r}.json").exists())
        if timed_out or unfinished or any(code != 0 for code in codes):
            status = "timeout" if timed_out else "error"
            what = f"timed out after {request.timeout_s:g} s" if timed_out else f"exit codes {codes}"
            who = f"rank(s) {', '.join(map(str, unfinished))} did not finish" if unfinished else "every rank finished"
            cause = _first_failure(log)
            failed = (cause[0],) if cause else unfinished
            if cause:
                who = f"rank {cause[0]} failed first (exit code {cause[1]}, as torchrun reports it); {who}"
            return replace(base, status=status, failed_ranks=failed, error=f"{what}; {who} (see {log.name})")
        results = [json.loads((status_dir / f"result-{r}.json").read_text()) for r in range(ranks)]
    return _record(base, results, engine)


def _first_failure(log: Path) -> tuple[int, int] | None:
    """(rank, exit code) of the first failed rank from torchrun's 'Root Cause' summary, if it printed one."""
    import re

    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.DOTALL)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _record(base: ScaleRecord, results: list[dict], engine: str) -> ScaleRecord:
    first = results[0]
    steps = first["steps_per_window"]
    # The slowest worker's window (torch's ranks already agreed on it through an all-reduce of the maximum).
    full = [max(r["full_window_s"][i] for r in results) for i in range(len(first["full_window_s"]))]
    local = [max(r["local_window_s"][i] for r in results) for i in range(len(first["local_window_s"]))]
    rates = [base.global_batch * steps / seconds for seconds in full]
    interval = stats.median_interval(rates) or (None, None)
    step_s, local_s = stats.median(full) / steps, stats.median(local) / steps
    # Full and no-exchange windows alternate: the difference of each pair, per step, and its interval.
    exposed = [(f - n) / steps for f, n in zip(full, local)]
    exposed_interval = stats.median_interval(exposed) or (None, None)
    peaks = tuple(first.get("peak_memory_bytes_per_replica") or [r["peak_memory_bytes"] for r in results])
    method = (
        "exposed communication = the DDP step minus the same step under no_sync() (no gradient all-reduce)"
        if engine == "torch"
        else "exposed communication = the strategy step minus (forward+backward in every replica, gradients not "
        "reduced, + the optimizer alone on one replica's copy)"
    )
    return replace(
        base, status="ok", collective=first.get("collective"), throughput_img_s=stats.median(rates),
        throughput_low_img_s=interval[0], throughput_high_img_s=interval[1], step_s=step_s,
        no_exchange_step_s=local_s, exposed_comm_s=stats.median(exposed), exposed_comm_low_s=exposed_interval[0],
        exposed_comm_high_s=exposed_interval[1], first_step_s=first["first_step_s"], step_window_s=tuple(full),
        no_exchange_window_s=tuple(local), steps_per_window=steps,
        windows=len(full), peak_memory_bytes_per_replica=peaks,
        memory_source=first.get("memory_source", "peak RSS of each worker process (on a CPU, one process holds "
                                                 "every MirroredStrategy replica)"),
        method=method, env={k: first[k] for k in ("torch_version", "tf_version") if k in first},
    )  # fmt: skip


def run_scaling(request: ScaleRequest, out: Path, say=print) -> list[ScaleRecord]:
    """Every engine x model x replica count, one record each (appended to scaling.jsonl as measured)."""
    from bench.store.atomic import WriteError, append_bytes, ensure_dir, write_json

    ensure_dir(out)
    write_json(out / "scale_request.json", asdict(request), indent=1)
    records = []
    for model in request.models:
        for engine in request.engines:
            for replicas in sorted(request.replicas):
                say(f"{engine} {model} x{replicas} ...")
                record = measure(engine, model, replicas, request, out)
                line = json.dumps(record.to_json())
                try:
                    append_bytes(out / "scaling.jsonl", (line + "\n").encode())
                except OSError as error:
                    print(line, file=sys.stderr, flush=True)
                    raise WriteError(f"cannot write to {out / 'scaling.jsonl'}: {error.strerror or error}; the record "
                                     "above was measured but not saved") from None  # fmt: skip
                say(f"  {record.status}: " + (f"{record.throughput_img_s:.4g} img/s" if record.status == "ok"
                                              else record.error or ""))  # fmt: skip
                records.append(record)
    return records
