"""Running a profile: one worker per engine, then profile.md, profile.csv, a plot and the traces."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProfileRequest:
    model: str
    engines: tuple[str, ...]
    batch_size: int
    mode: str
    image_size: int
    precision: str
    device: str
    stages: bool = True
    ops: bool = True
    trace: bool = True
    windows: int = 7
    min_window_s: float = 0.1
    threads: int = 0
    seed: int = 0


def run_engine(engine: str, task: str, request: dict, out: Path, timeout_s: float) -> dict:
    """The engine's result (bench/execute/tasks.py), or {"engine", "error"} when its process fails or runs past
    `timeout_s`."""
    from bench.execute import tasks

    with tempfile.TemporaryDirectory() as scratch:
        log = out / f"worker-{task}-{engine}.log"
        return tasks.run(engine, task, {**request, "out": str(out)}, log, Path(scratch), timeout_s)


def _each_engine(task: str, what: str, request, out: Path, timeout_s: float, say) -> dict:
    """Run `task` in every engine's worker, one after another; the study's JSON (request, host, results),
    written to out/TASK.json. A failed engine is a result with its error, and the others go on."""
    from bench.store.atomic import ensure_dir, write_json
    from bench.store.provenance import Segment, stamp
    from bench.store.records import host_env

    segment = Segment()
    ensure_dir(out)
    results = []
    for engine in request.engines:
        say(f"{what} in {engine} ...")
        result = run_engine(engine, task, asdict(request), out, timeout_s)
        if "error" in result:
            say(f"  {engine}: {result['error']}")
        results.append(result)
    data = {"request": asdict(request), "env": stamp(host_env(), segment.closed()), "results": results}
    write_json(out / f"{task}.json", data, indent=1)
    return data


def profile(request: ProfileRequest, out: Path, timeout_s: float = 900.0, say=print) -> Path:
    """Profile every engine of `request` into `out`; returns the report's path."""
    from bench.studies.profiling.report import write_profile_report

    data = _each_engine("profile", f"profiling {request.model}", request, out, timeout_s, say)
    return write_profile_report(data, out)


@dataclass(frozen=True)
class GradientFlowRequest:
    """A gradient-flow study (bench/studies/gradient_flow/gradients.py): the networks, the engines, and the training recipe's
    batches and steps every engine runs alike."""

    models: tuple[str, ...]
    engines: tuple[str, ...]
    batch_size: int = 32
    image_size: int = 32
    steps: int = 5
    lr_scale: float = 1.0  # the learning rate is recipe.learning_rate(lr_scale)
    seed: int = 0
    threads: int = 0


def study_models(depths: tuple[int, ...]) -> tuple[str, ...]:
    """Plain and residual CIFAR nets of each depth, with and without batch norm."""
    return tuple(
        f"{kind}{depth}_cifar{suffix}" for suffix in ("", "_nobn") for depth in depths for kind in ("plain", "resnet")
    )


def gradient_flow(request: GradientFlowRequest, out: Path, timeout_s: float = 1800.0, say=print) -> Path:
    from bench.studies.gradient_flow.flow_report import write_flow_report

    data = _each_engine(
        "gradient_flow", f"gradient flow of {len(request.models)} networks", request, out, timeout_s, say
    )
    return write_flow_report(data, out)
