"""Records and run folders made by hand for the compare and report tests (make_record, as a run makes them)."""

import json
import os
from pathlib import Path

from bench.config import Config
from bench.measure import stats
from bench.store.records import make_record

XEON = {"cpu_model": "Intel Xeon", "cpu_cores": 2}
EPYC = {"cpu_model": "AMD EPYC 7B13", "cpu_cores": 64}
VERSIONS = {"torch": "2.13.0+cpu", "keras-tensorflow": "2.21.0"}


def fake_env(**behaviour) -> dict:
    """The environment of a `python -m bench` (or inner pytest) process on the fake backend, with `behaviour`
    (bench/backends/fake_backend.py). pytest-xdist's worker variables are left out: an inner pytest that sees
    them takes itself for an xdist worker (and pytest-benchmark then refuses --benchmark-only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_CURRENT_TEST"}
    return dict(env, CNN_BENCH_BACKEND="fake", CNN_BENCH_FAKE=json.dumps(behaviour), TF_CPP_MIN_LOG_LEVEL="2")


def record(framework, model, batch, img_s, mode="infer", status="ok", versions=VERSIONS, host=XEON, cell=None,
           rates=None, **extra):  # fmt: skip
    config = Config(framework, model, batch, mode, layout="channels_last" if framework != "torch" else "auto")
    env = {**host, "framework_version": versions[framework]}
    if framework.startswith("keras"):
        env["keras_version"] = "3.15.1"
    if status != "ok":
        return make_record(config, status, error="boom", env=env)
    rates = rates or [img_s * f for f in (0.99, 1.01, 1.0, 1.0, 0.995, 1.005)]
    return make_record(
        config, "ok", throughput_img_s=stats.median(rates), throughput_min_img_s=min(rates),
        throughput_max_img_s=max(rates), window_throughputs_img_s=rates, cell_id=cell,
        pairing="interleaved" if cell else None, env=env, **extra,
    )  # fmt: skip


def write_run(folder: Path, records, host=XEON) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    (folder / "env.json").write_text(json.dumps({**host, "host": "box"}))
    return folder


def pair(model, batch, torch_rates, keras_rates, cell, **kw):
    return [
        record("torch", model, batch, 0, rates=torch_rates, cell=cell, **kw),
        record("keras-tensorflow", model, batch, 0, rates=keras_rates, cell=cell, **kw),
    ]


BASE = [100.0, 101, 99, 100, 102, 98, 100, 101, 99]
FASTER = [130.0, 128, 131, 129, 130, 127, 132, 130, 129]
SLOWER = [80.0, 81, 79, 82, 80, 78, 80, 81, 79]
