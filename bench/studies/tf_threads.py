"""Does TensorFlow's inter-op pool handicap it on a CPU? A benchmark: `python -m bench.studies.tf_threads`.

On the default CPU cells TensorFlow kept 1.1-1.4 of 2 cores busy against PyTorch's 1.9-2.0. Its intra-op pool
already has every core; the inter-op pool (independent ops run at once: a residual block's shortcut beside its
main path) was set to 1 by the harness until this measured it (it is all cores now). This runs each default cell in two TensorFlow workers of the harness, one
with inter-op 1 and one with an inter-op pool of all cores, prepared alike and timed in alternating windows
(the cells' own order, timing.alternating), and gives the paired ratio with its 95% interval per cell, and the
cores each kept busy. The harness's default (Settings.tf_inter_op_threads) follows what this measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path

CELLS_PRESET = "cpu-default"
WINDOWS = 8
MIN_WINDOW_S = 0.3


def measure(out: Path, say=print, preset: dict | None = None, windows: int = WINDOWS,
            min_window_s: float = MIN_WINDOW_S) -> dict:  # fmt: skip
    from bench.config import Config, Settings
    from bench.config.presets import PRESETS
    from bench.execute.runner import WorkerClient
    from bench.measure.stats import median, paired_ratio
    from bench.measure.timing import alternating
    from bench.store.provenance import Segment, stamp
    from bench.store.records import Record, host_env

    segment = Segment("python -m bench.studies.tf_threads " + " ".join(sys.argv[1:]))
    preset = preset or PRESETS[CELLS_PRESET]
    cores = os.cpu_count() or 1
    base = Settings(warmup_steps=preset["warmup_steps"], windows=windows, min_window_s=min_window_s)
    variants = {
        "inter-op 1": replace(base, tf_inter_op_threads=1),
        f"inter-op {cores}": replace(base, tf_inter_op_threads=0),
    }
    out.mkdir(parents=True, exist_ok=True)
    workers = {}
    for name, settings in variants.items():
        worker = WorkerClient("keras-tensorflow", settings, out / f"worker-{name.replace(' ', '')}.log")
        worker.start(settings.timeout_s)
        workers[name] = worker
    rows = []
    try:
        for model in preset["models"]:
            for mode in preset["modes"]:
                for batch in preset["batch_sizes"]:
                    config = Config("keras-tensorflow", model, batch, mode, image_size=preset["image_size"])
                    ids = {name: uuid.uuid4().hex[:8] for name in workers}
                    windows = 0
                    for name, worker in workers.items():
                        reply = worker.request({"cmd": "prepare", "id": ids[name], "config": config.to_dict()}, 600)
                        windows = max(windows, reply["prepared"]["windows"])
                    for index, name in alternating(list(workers), windows, first=-1):
                        workers[name].request({"cmd": "window", "id": ids[name], "discard": index < 0}, 600)
                    records = {
                        name: Record.from_json(worker.request({"cmd": "finish", "id": ids[name]}, 600)["record"])
                        for name, worker in workers.items()
                    }
                    one, many = (records[n] for n in variants)
                    ratio = paired_ratio(one.window_throughputs_img_s, many.window_throughputs_img_s, margin=0.05)
                    row = {
                        "model": model, "mode": mode, "batch": batch,
                        **{f"{n} img/s": median(r.window_throughputs_img_s) for n, r in records.items()},
                        **{f"{n} cores": r.cpu_util_cores for n, r in records.items()},
                        "ratio": ratio.ratio, "low": ratio.low, "high": ratio.high, "decided": ratio.decided,
                        "verdict": f"inter-op {cores} is {ratio.words()}",
                    }  # fmt: skip
                    rows.append(row)
                    say(f"{model} {mode} b={batch}: {row['verdict']}")
    finally:
        for worker in workers.values():
            worker.close()
    env = stamp(host_env(), segment.closed("completed"))
    return {"env": env, "cores": cores, "windows": windows, "min_window_s": min_window_s, "cells": rows}


def render(data: dict) -> str:
    from bench.report.render import markdown_table

    cores = data["cores"]
    names = ["inter-op 1", f"inter-op {cores}"]
    rows = [
        [c["model"], c["mode"], c["batch"], *(f"{c[f'{n} img/s']:.4g}" for n in names),
         *(f"{c[f'{n} cores']:.2f}" for n in names), c["verdict"].split(" is ", 1)[1]]
        for c in data["cells"]
    ]  # fmt: skip
    faster = sum(1 for c in data["cells"] if c["decided"] and c["ratio"] > 1)
    slower = sum(1 for c in data["cells"] if c["decided"] and c["ratio"] < 1)
    env = data["env"]
    return "\n".join(
        [
            f"# TensorFlow's inter-op pool on a CPU: 1 thread against {cores}",
            "",
            f"- Machine: {env.get('cpu_model')}, {env.get('cpu_cores')} cores; commit {env.get('git_commit')}"
            f"{' (modified tree)' if env.get('git_modified') else ''}; {env.get('start') or env.get('time')}",
            f"- The {CELLS_PRESET} cells (Keras on TensorFlow), each in two harness workers prepared alike and timed in "
            f"{data['windows']} alternating windows of at least {data['min_window_s']} s; ratio = inter-op {cores} over "
            "inter-op 1, the median of per-pair ratios with its 95% interval (5% margin).",
            f"- Decided: inter-op {cores} faster in {faster} cells, slower in {slower}, of {len(data['cells'])}.",
            "",
            markdown_table(
                rows,
                [
                    "model",
                    "mode",
                    "batch",
                    *(f"{n} img/s" for n in names),
                    *(f"{n} cores" for n in names),
                    f"inter-op {cores} vs 1",
                ],
                numbers=True,
            ),  # fmt: skip
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.studies.tf_threads", description=__doc__)
    parser.add_argument("--out", default=None, help="folder for tf_threads.json and tf_threads.md")
    args = parser.parse_args(argv)
    from bench.store.atomic import write_json
    from implementations import is_installed

    if not is_installed("keras-tensorflow"):
        print("keras-tensorflow is not installed: nothing to measure", file=sys.stderr)
        return 2
    import datetime

    out = Path(args.out or f"results/tf-threads/{datetime.date.today():%Y%m%d}-cpu")
    data = measure(out)
    write_json(out / "tf_threads.json", data)
    (out / "tf_threads.md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
