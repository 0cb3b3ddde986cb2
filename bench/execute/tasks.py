"""A study's part in one engine, in a process of its own: the one task entry and its host side.

    python -m bench.execute.launch bench.execute.tasks ENGINE TASK REQUEST.json RESULT.json

TASK names a function of TASKS (a profile, a gradient-flow study, the profiles' equal-work check, a training
run, the harness-overhead benchmark, a replica of the scaling study). A replica runs once per rank (torchrun's
ranks, TensorFlow's multi-worker processes): `{rank}` in RESULT names each rank's own file (torchrun's RANK,
TF_CONFIG's task index), and a rank that wrote none did not finish. The entry sets the process up as the harness's worker does (the
engine's backend: threads, seed, TF32, memory growth), calls the task with its request, and writes the
result as JSON with the process's environment. A task that keeps what it has finished as it goes (a training
run, after each network) saves its partial result through its context, so a stopped worker loses none of it.

The host side starts the entry through the one launcher (`start`, then `finish`; or `run` for both) and turns
a failure, a crash or a timeout into a result with "error", so a study goes on with its other engines.
(`bench run`'s cells take the interactive JSON-lines worker, bench/execute/worker.py: a cell's engines take
turns window by window; a task runs to its end.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import IO, Any

from implementations.frameworks import FRAMEWORKS

_PROFILING = {"torch": "torch_engine", "keras-tensorflow": "keras_engine", "keras-jax": "jax_engine"}


@dataclass(frozen=True)
class Task:
    """A task's function per engine ("module:function"), called as function(request, context)."""

    functions: dict[str, str]
    torch_first: bool = False  # PyTorch imported before the engine's framework (its seeded weights are the start)


TASKS = {
    "profile": Task({e: f"bench.studies.profiling.{m}:profile" for e, m in _PROFILING.items()}),
    "gradient_flow": Task({e: f"bench.studies.profiling.{m}:gradient_flow" for e, m in _PROFILING.items()}),
    "equal_work": Task({e: f"bench.studies.profiling.{m}:equal_work" for e, m in _PROFILING.items()}),
    "train": Task({e: "bench.studies.training.worker:train" for e in FRAMEWORKS}, torch_first=True),
    "overhead": Task({e: "bench.studies.overhead:worker" for e in FRAMEWORKS}),
    "replica": Task(
        {
            "torch": "bench.studies.scaling.replica_torch:replica",
            "keras-tensorflow": "bench.studies.scaling.replica_keras:replica",
        }
    ),  # fmt: skip
}


def rank() -> int:
    """This process's rank in a data-parallel job: torchrun's RANK, TF_CONFIG's task index, else 0."""
    import os

    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


@dataclass
class Context:
    """What a task gets beside its request: the engine's backend, set up, and the process's environment."""

    engine: str
    backend: Any
    env: dict
    result_path: Path
    started: float  # the process's start (time.perf_counter), for a task's own wall time

    def save(self, result: dict) -> None:
        """Write `result` (so far) with the environment, whole or not at all (a reader never sees half a file)."""
        from bench.store.atomic import write_json

        write_json(self.result_path, {**result, "env": self.env}, indent=None)


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    engine, name, request_path, result_path = argv[:4]
    result_path = result_path.replace("{rank}", str(rank()))
    task = TASKS.get(name)
    if task is None:
        raise SystemExit(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    if engine not in task.functions:
        raise SystemExit(f"{engine}: no {name.replace('_', '-')} support; engines: {', '.join(task.functions)}")
    request = json.loads(Path(request_path).read_text())
    if task.torch_first and engine != "torch":
        import torch  # noqa: F401

    from bench.backends import get_backend
    from bench.config import Settings

    backend = get_backend(engine)
    env = backend.setup_process(
        Settings(threads=request.get("threads", 0), seed=request.get("seed", 0), tf32=request.get("tf32", True))
    )
    env["framework"] = engine
    module, function = task.functions[engine].split(":")
    context = Context(engine, backend, env, Path(result_path), started)
    context.save(getattr(import_module(module), function)(request, context))
    return 0


# --- the host side -----------------------------------------------------------------------------------------


@dataclass
class Running:
    engine: str
    process: subprocess.Popen
    log: IO[str]
    result_path: Path


def start(engine: str, task: str, request: dict, log_path: Path, scratch: Path) -> Running:
    """Start `task` in `engine`'s process; its output goes to `log_path`, its request and result to `scratch`."""
    from bench.execute import launch

    request_path, result_path = scratch / f"request-{task}-{engine}.json", scratch / f"result-{task}-{engine}.json"
    request_path.write_text(json.dumps(request))
    result_path.unlink(missing_ok=True)
    env = launch.child_env()
    if engine.startswith("keras-"):
        env["KERAS_BACKEND"] = engine.removeprefix("keras-")
    log = log_path.open("w")
    command = launch.python_module("bench.execute.tasks", engine, task, str(request_path), str(result_path))
    process = launch.start(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Running(engine, process, log, result_path)


def finish(running: Running, deadline: float, timeout_s: float, empty: dict | None = None) -> dict:
    """Wait for the task until `deadline` (time.monotonic); its result, with "error" when the process failed or
    ran too long, beside what it saved before (else `empty`). The process's whole tree is ended either way."""
    from bench.execute import launch

    error = None
    log_name = Path(running.log.name).name
    try:
        code = running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        if code != 0:
            running.log.flush()
            lines = Path(running.log.name).read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            error = f"worker exited with {code}: {lines[0][:300]} (see {log_name})"
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout_s:g} s (see {log_name})"
    launch.reap(running.process)
    running.log.close()
    if running.result_path.exists():
        result = json.loads(running.result_path.read_text())
    else:
        result = {"engine": running.engine, **(empty or {})}
        error = error or f"worker wrote no result (see {log_name})"
    if error is not None:
        result["error"] = error
    return result


def run(engine: str, task: str, request: dict, log_path: Path, scratch: Path, timeout_s: float,
        empty: dict | None = None) -> dict:  # fmt: skip
    """`start` then `finish`: the task's result, or one with "error"."""
    running = start(engine, task, request, log_path, scratch)
    return finish(running, time.monotonic() + timeout_s, timeout_s, empty)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
