"""Runs a plan (the client side of the worker protocol): cells of engines, a record per configuration,
nothing ever lost.

A cell is the configurations that differ only by engine (framework and PyTorch layout): on a CPU every
engine of a cell is prepared in its own worker, then the engines take turns, one timed window each,
the order reversed every pair (AB BA AB ...), so a drift of the machine hits all alike and each pair of
windows gives a ratio (stats.paired_ratio). On a GPU a cell is one configuration and engines run one
after the other (TensorFlow never returns device memory, so its worker is closed before another starts).
A worker that runs out of memory, crashes (even by SIGKILL) or passes its timeout becomes a record with
that status, and the sweep goes on in a fresh worker. Records are appended one line at a time; a
resumed run measures only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, fields, replace
from pathlib import Path

from bench.config import Config, Plan, Settings
from bench.execute import launch
from bench.execute.launch import Interrupted  # noqa: F401  (SIGTERM/SIGHUP, raised where the runner is; the CLI catches it)
from bench.measure import timing
from bench.measure.session import explain_chunks
from bench.store.records import RETRYABLE, Record, RunStore, current_records, make_record, read_results
from implementations import is_installed

INSTALL_HINT = {
    "torch": "pip install 'cnn-bench[torch]'",
    "keras-tensorflow": "pip install 'cnn-bench[tensorflow]'",
    "keras-jax": "pip install 'cnn-bench[jax]'",
}


class WorkerDied(RuntimeError):
    pass


class WorkerTimeout(RuntimeError):
    pass


class RunWriteError(RuntimeError):
    """The run directory stopped accepting records; the record that could not be written is printed."""


class WorkerClient:
    """A framework's worker subprocess and its JSON-lines pipe."""

    def __init__(self, framework: str, settings: Settings, log_path: Path | None):
        self.framework = framework
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = launch.start(
            launch.python_module("bench.execute.worker", framework, json.dumps(asdict(settings))),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=launch.child_env(PYTHONUNBUFFERED="1"),
        )
        self._buffer = b""
        self.env: dict = {}

    def start(self, timeout_s: float) -> None:
        self.env = self._read(timeout_s).get("env", {})

    def request(self, message: dict, timeout_s: float) -> dict:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._death_message()) from None
        return self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerTimeout(f"no result within {timeout_s:g} s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerDied(self._death_message())
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _death_message(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker killed by {name}"
        return f"worker exited with status {code}"

    def close(self, kill: bool = False) -> None:
        """Ask the worker to exit (or not, with kill), then end whatever is left of its process tree."""
        if self.process.poll() is None and not kill:
            try:
                self.process.stdin.write(b'{"cmd": "exit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except Exception:
                pass
        launch.reap(self.process)
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class Budget:
    """The seconds one configuration may take, its requests' time charged as they end."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent = 0.0

    def left(self) -> float:
        return self.seconds - self.spent

    def spent_text(self) -> str:
        return f"the configuration took {self.spent:.3g} s of its {self.seconds:g} s (prepare, windows and finish together)"


class Runner:
    def __init__(self, plan: Plan, store: RunStore, host_env: dict, out=None):
        self.plan = plan
        self.store = store
        self.host_env = host_env
        self.out = out if out is not None else sys.stderr
        self.workers: dict[tuple, WorkerClient] = {}
        self.worker_held: dict[tuple, list[Config]] = {}  # the configurations each worker has taken

    # --- workers ----------------------------------------------------------------------------------
    @staticmethod
    def _slot(config: Config) -> tuple[str, str]:
        """One worker per framework and PyTorch layout, so a worker never holds two configurations."""
        return config.framework, config.layout

    @staticmethod
    def _may_take(held: list[Config], config: Config) -> bool:
        """Whether a CPU worker that has held `held` may take `config` with its resident peak still that
        configuration's own (tests/test_memory.py checks each reuse against a fresh worker). A PyTorch
        worker holds one model. A Keras worker holds one model's inference configurations and then one
        training configuration: after training, TensorFlow keeps per-shape state resident (40 MiB
        for ResNet-20 CIFAR), so only a fresh worker gives the next training configuration's peak."""

        def model(c: Config) -> tuple:
            return c.model, c.image_size, c.precision, c.compile

        if config in held:  # its own later requests
            return True
        if any(model(c) != model(config) for c in held):
            return False
        return config.framework == "torch" or all(c.mode != "train" for c in held)

    def _worker(self, config: Config) -> WorkerClient:
        slot = self._slot(config)
        if (
            config.device == "cpu"
            and slot in self.workers
            and not self._may_take(self.worker_held.get(slot, []), config)
        ):
            self.workers.pop(slot).close()
        if slot not in self.workers:
            if config.device == "cuda":
                self.close_workers()  # one framework on the GPU at a time
            name = "-".join(dict.fromkeys(slot))
            worker = WorkerClient(config.framework, self.plan.settings, self.store.path / f"worker-{name}.log")
            try:
                worker.start(self.plan.settings.timeout_s)
            except BaseException:  # a crash, a timeout, Ctrl-C or SIGTERM during start-up
                worker.close(kill=True)
                raise
            self.workers[slot] = worker
            self.worker_held[slot] = []
        if config not in self.worker_held[slot]:
            self.worker_held[slot].append(config)
        return self.workers[slot]

    def _discard(self, config: Config) -> None:
        worker = self.workers.pop(self._slot(config), None)
        if worker:
            worker.close(kill=True)

    def close_workers(self, kill: bool = False) -> None:
        for slot in list(self.workers):
            worker = self.workers.pop(slot)
            worker.close(kill=kill)

    # --- one cell ---------------------------------------------------------------------------------
    def _ask(self, config: Config, message: dict, budget: Budget | None = None) -> dict:
        """One request to the config's worker; a dead or silent worker becomes a failure record. With a
        `budget`, the request may take only what is left of the configuration's --timeout, and its time is
        charged to it; without one (a probe), the whole --timeout."""
        timeout = self.plan.settings.timeout_s
        try:
            worker = self._worker(config)  # a worker's start-up is allowed the whole --timeout of its own
            if budget is None:
                reply = worker.request(message, timeout)
            else:
                if budget.left() <= 0:
                    raise WorkerTimeout(budget.spent_text())
                started = time.monotonic()
                try:
                    reply = worker.request(message, budget.left())
                except WorkerTimeout:
                    budget.spent += time.monotonic() - started
                    raise WorkerTimeout(budget.spent_text()) from None
                budget.spent += time.monotonic() - started
            if "error" in reply:
                raise WorkerDied(reply["error"])
            if "record" in reply:
                reply["record"] = Record.from_json(reply["record"])
            return reply
        except WorkerTimeout as error:
            self._discard(config)
            return {"record": make_record(config, "timeout", error=f"timed out: {error} (--timeout {timeout:g})")}
        except WorkerDied as error:
            self._discard(config)
            return {"record": make_record(config, "error", error=f"{error}; see {self.store.path.name}/worker-*.log")}

    def run_cell(self, configs: list[Config]) -> list[Record]:
        """Records for the configurations of one cell, whatever happens to their workers."""
        settings = self.plan.settings
        cell_id = uuid.uuid4().hex[:12]
        ids = {config: f"{cell_id}-{index}" for index, config in enumerate(configs)}
        records: dict[Config, Record] = {}
        active: list[Config] = []
        windows = settings.windows
        # Each configuration's --timeout covers its prepare, windows and finish together.
        budgets = {config: Budget(settings.timeout_s) for config in configs}
        for config in configs:
            reply = self._ask(
                config, {"cmd": "prepare", "id": ids[config], "config": config.to_dict()}, budgets[config]
            )
            if "record" in reply:
                records[config] = reply["record"]
            else:
                active.append(config)
                windows = max(windows, reply["prepared"].get("windows", windows))  # paired engines: the same count

        def alternate(rounds: int, message, first: int = 0) -> None:
            """Ask the active configurations in the one alternating order; a reply with a record ends one."""
            for index, config in timing.alternating(active, rounds, first=first):
                if config not in records:
                    reply = self._ask(config, message(config, index), budgets[config])
                    if "record" in reply:
                        records[config] = reply["record"]

        # One untimed pair first: preparing an engine (TensorFlow's above all) left the machine unsettled
        # for about a second, and the first timed PyTorch window of VGG-11 training ran 3x slow.
        alternate(windows, lambda config, index: {"cmd": "window", "id": ids[config], "discard": index < 0}, first=-1)
        if settings.explain and len(active) > 1:  # the explain pass's unprofiled runs, paired as the windows are
            alternate(explain_chunks(windows), lambda config, _: {"cmd": "explain_chunk", "id": ids[config]})
        cell = {"cell_id": cell_id, "pairing": "interleaved" if len(active) > 1 else "alone"}
        for config in active:
            if config not in records:
                message = {"cmd": "finish", "id": ids[config], "cell": cell}
                records[config] = self._ask(config, message, budgets[config])["record"]
        for config, record in records.items():
            if record.status == "oom":
                self._discard(config)  # a fresh process after an OOM: no fragmented allocator
            worker = self.workers.get(self._slot(config))
            records[config] = record.with_env({**self.host_env, **(worker.env if worker else {}), **record.env})
        return [records[c] for c in configs]

    # --- the sweep --------------------------------------------------------------------------------
    def run(self, retry_errors: bool = False) -> list[Record]:
        """Measure what the run directory lacks (and, with retry_errors, what failed by error or timeout)."""
        existing = self.check_existing()
        retried = [r for r in existing if retry_errors and r.status in RETRYABLE]
        done = {r.config.key() for r in existing} - {r.config.key() for r in retried}
        oom_at: dict[tuple, int] = {}
        for record in existing:
            if record.status == "oom":
                group = record.config.group()
                oom_at[group] = min(oom_at.get(group, record.batch_size), record.batch_size)
        todo = [c for c in self.plan.configs if c.key() not in done]
        missing = sorted({c.framework for c in todo if not is_installed(c.framework)})
        for framework in missing:
            self._say(
                f"{framework} is not installed ({INSTALL_HINT[framework]}): its configurations are recorded as skipped"
            )
        if existing:
            self._say(
                f"resuming: {len(done)} of {len(self.plan.configs)} configurations already recorded"
                + (f"; {len(retried)} error/timeout record(s) measured again" if retried else "")
            )
        started = time.monotonic()
        new_records = []
        interleave = bool(self.plan.configs) and self.plan.configs[0].device == "cpu"
        try:
            for cell in cells(todo, interleave):
                ready = []
                for config in cell:
                    record = self._unmeasured_record(config, missing, oom_at)
                    if record is None:
                        ready.append(config)
                    else:
                        self._keep(record, oom_at, new_records, len(todo), started)
                for record in self.run_cell(ready) if ready else []:
                    self._keep(record, oom_at, new_records, len(todo), started)
        except BaseException:
            self.close_workers(kill=True)  # a worker mid-measurement would not read an exit request
            raise
        self.close_workers()
        return new_records

    def _keep(self, record: Record, oom_at: dict, new_records: list, total: int, started: float) -> None:
        self._append(record)
        new_records.append(record)
        if record.status == "oom":
            group = record.config.group()
            oom_at[group] = min(oom_at.get(group, record.batch_size), record.batch_size)
        self._progress(len(new_records), total, started, record)

    def check_existing(self) -> list[Record]:
        """The records already in the run, checked: a torn tail is set aside, damaged lines and
        records of another plan stop the run with exit status 2 before anything is measured."""
        warning = self.store.set_aside_torn_tail()
        if warning:
            self._say(f"warning: {warning}; its configuration will be measured again")
        results = read_results(self.store.results)
        results.check(self.plan)
        return current_records(results.records)

    def _append(self, record: Record) -> None:
        try:
            warning = self.store.append(record)
        except OSError as error:
            print(json.dumps(record.to_json()), file=sys.stderr, flush=True)
            raise RunWriteError(
                f"cannot write to {self.store.results}: {error.strerror or error}. The record above was measured "
                f"but not saved; make the directory writable and continue with --resume {self.store.path}"
            ) from None
        if warning:
            self._say(f"warning: {warning}")

    def _unmeasured_record(self, config: Config, missing: list[str], oom_at: dict) -> Record | None:
        """The record of a configuration that is not measured (framework missing, OOM at a smaller batch)."""
        if config.framework in missing:
            return make_record(
                config,
                "skipped",
                error=f"{config.framework} is not installed on this machine ({INSTALL_HINT[config.framework]})",
                env=dict(self.host_env),
            )
        limit = oom_at.get(config.group())
        if limit is not None and config.batch_size > limit:
            return make_record(config, "skipped", error=f"OOM at batch {limit}", env=dict(self.host_env))
        return None

    # --- largest batch that fits -----------------------------------------------------------------
    def _probe(self, config: Config) -> tuple[str, str]:
        """One step at config's batch in its worker (the model is reused where the backend caches it):
        (status, what to print). An OOM closes the worker, so the next probe starts unfragmented."""
        reply = self._ask(config, {"cmd": "probe", "config": config.to_dict()})
        if "probe" in reply:
            return "ok", f"ok (first step {reply['probe']['first_step_s']:.3g} s)"
        record = reply["record"]
        if record.status == "oom":
            self._discard(config)
        return record.status, f"{record.status}: {(record.error or '')[:120]}"

    def find_max_batches(self) -> list[dict]:
        """For each eager group of the plan: start from the largest batch the run measured as fitting,
        double until a probe fails, then bisect; each probe is one step, printed as it ends. Compiled
        configurations are not searched (every batch would compile anew)."""
        ok_batches: dict[tuple, int] = {}
        for record in self.store.records():
            if record.status == "ok":
                group = record.config.group()
                ok_batches[group] = max(ok_batches.get(group, 0), record.batch_size)
        results = []
        groups = {}
        for config in self.plan.configs:
            groups.setdefault(config.group(), config)
        try:
            for config in groups.values():
                name = f"{config.framework} {config.model} {config.mode} {config.precision}"
                if config.compile == "on":
                    self._say(f"max batch {name} compiled: not searched (eager only)")
                    continue
                if not is_installed(config.framework):
                    continue
                probes: list[tuple[int, str]] = []

                def fits(batch: int, config=config, probes=probes, name=name) -> bool:
                    status, text = self._probe(replace(config, batch_size=batch))
                    probes.append((batch, status))
                    self._say(f"  probe {name} b={batch}: {text}")
                    return status == "ok"

                start = ok_batches.get(config.group(), 0)
                last_ok, first_bad = start, None
                batch = start * 2 if start else 1
                if start:
                    self._say(f"max batch {name}: from b={start}, which the run measured")
                while batch <= self.plan.max_batch_limit:
                    if fits(batch):
                        last_ok, batch = batch, batch * 2
                    else:
                        first_bad = batch
                        break
                if first_bad is not None and probes[-1][1] == "oom":
                    while first_bad - last_ok > 1:
                        middle = (last_ok + first_bad) // 2
                        if fits(middle):
                            last_ok = middle
                        else:
                            first_bad = middle
                result = {
                    **{k: v for k, v in config.to_dict().items() if k != "batch_size"},
                    "max_batch_size": last_ok or None,
                    "first_failing_batch": first_bad,
                    "start_batch": start or None,
                    "limit": self.plan.max_batch_limit,
                    "probes": probes,
                }
                with (self.store.path / "max_batch.jsonl").open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
                results.append(result)
                self._say(
                    f"max batch {name}: {last_ok or 'none'}"
                    + (f" (fails at {first_bad})" if first_bad else f" (limit {self.plan.max_batch_limit})")
                )
        finally:
            self.close_workers()
        return results

    # --- output -----------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _progress(self, done: int, total: int, started: float, record: Record) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done)
        width = 20
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        self._say(f"[{bar}] {done}/{total} ETA {_duration(eta)}  {summary_line(record)}")


def cell_key(config: Config) -> tuple:
    """What engines of one cell share: everything but the framework and the layout."""
    return tuple(getattr(config, f.name) for f in fields(config) if f.name not in ("framework", "layout"))


def cells(configs: list[Config], interleave: bool) -> list[list[Config]]:
    """Configurations grouped into cells in plan order: by cell_key when engines interleave (a CPU),
    one configuration per cell otherwise (a GPU)."""
    if not interleave:
        return [[c] for c in configs]
    grouped: dict[tuple, list[Config]] = {}
    for config in configs:
        grouped.setdefault(cell_key(config), []).append(config)
    return list(grouped.values())


def summary_line(record: Record) -> str:
    what = (
        f"{record.framework:<10} {record.model:<15} {record.mode:<5} b={record.batch_size:<4} "
        f"{record.precision} {record.layout_chosen or record.layout}"
        f"{' compiled' if record.compile == 'on' else ''}"
    )
    if record.status != "ok":
        return f"{what}: {record.status.upper()} {record.error or ''}".rstrip()
    cv = record.throughput_cv or 0.0
    return (
        f"{what}: {record.throughput_img_s:.4g} img/s (CV {cv:.1%}), p50 {record.latency_ms_p50:.3g} ms, "
        f"first step {record.first_step_s:.3g} s"
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
