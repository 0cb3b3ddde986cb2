"""Harness overhead, measured as a benchmark (not a timed test): `python -m bench.overhead`.

For each framework, in a worker process of its own, and each case (ResNet-20 CIFAR at 32 px and
ResNet-18 at 64 px, batch 8, train and infer) it alternates, 25 times, the harness's timing
loop with a minimal hand-written loop over the same model, batch and framework, and prints the median
ratio of their throughputs with its spread. It also times the harness's loop around a no-op step, the
per-step cost of the harness itself, in microseconds. On a noisy machine only ratios measured in one
run, interleaved, mean anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CASES = [("resnet20_cifar", 32), ("resnet18", 64)]
BATCH = 8
ALTERNATIONS = 25
INPUTS = 4  # both loops rotate among the same number of pre-generated batches


def _bare_torch(model_name: str, image_size: int, mode: str):
    """A minimal hand-written PyTorch loop: returns run(steps) -> seconds."""
    import torch
    import torch.nn.functional as F

    from implementations import build

    model = build(model_name, "torch", image_size=image_size, layout="channels_last")
    xs = [
        torch.randn(BATCH, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
        for _ in range(INPUTS)
    ]
    ys = [torch.randint(0, 10, (BATCH,)) for _ in range(INPUTS)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train(mode == "train")

    def run(steps: int) -> float:
        start = time.perf_counter()
        for i in range(steps):
            x, y = xs[i % INPUTS], ys[i % INPUTS]
            if mode == "train":
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            else:
                with torch.inference_mode():
                    model(x)
        return time.perf_counter() - start

    return run


def _bare_tensorflow(model_name: str, image_size: int, mode: str):
    import keras
    import tensorflow as tf

    from implementations import build

    model = build(model_name, "tensorflow", image_size=image_size)
    xs = [tf.random.normal((BATCH, image_size, image_size, 3), seed=i) for i in range(INPUTS)]
    ys = [tf.random.uniform((BATCH,), 0, 10, dtype=tf.int32, seed=i) for i in range(INPUTS)]
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    @tf.function
    def infer(x):
        return tf.reduce_mean(model(x, training=False))

    def run(steps: int) -> float:
        start = time.perf_counter()
        for i in range(steps):
            x, y = xs[i % INPUTS], ys[i % INPUTS]
            (train(x, y) if mode == "train" else infer(x)).numpy()
        return time.perf_counter() - start

    run(3)  # trace and warm up outside the timing
    return run


def _harness_rate(prepared, settings) -> tuple[float, int]:
    """The harness's throughput: its timing loop, median of its windows."""
    from .stats import median
    from .timing import measure_prepared

    timing = measure_prepared(prepared, settings)
    return median([timing.steps_per_window * BATCH / s for s in timing.window_seconds]), timing.steps_per_window


def _bare_rate(bare, steps_per_window: int, settings) -> float:
    """The bare loop's throughput over the same windows: same warm-up, same steps, same median."""
    from .stats import median

    bare(settings.warmup_steps)
    return median([steps_per_window * BATCH / bare(steps_per_window) for _ in range(settings.windows)])


def worker(framework: str) -> dict:
    from .backends import get_backend
    from .config import Config, Settings
    from .stats import iqr, median
    from .timing import HostClock, measure

    settings = Settings(warmup_steps=3, windows=5, min_window_s=0.1)
    backend = get_backend(framework)
    env = backend.setup_process(settings)
    bare_factory = _bare_torch if framework == "torch" else _bare_tensorflow
    results = {"framework": framework, "env": env, "cases": []}
    for model_name, image_size in CASES:
        for mode in ("train", "infer"):
            config = Config(framework, model_name, BATCH, mode, image_size=image_size)
            prepared = backend.prepare(config, settings)
            bare = bare_factory(model_name, image_size, mode)
            ratios, harness_rates, bare_rates = [], [], []
            steps_per_window = None
            for alternation in range(ALTERNATIONS):
                # Alternate which goes first, so a drift within a pair favours neither.
                if alternation % 2 == 0:
                    harness, steps_per_window = _harness_rate(prepared, settings)
                    bare_rate = _bare_rate(bare, steps_per_window, settings)
                else:
                    bare_rate = _bare_rate(bare, steps_per_window, settings)
                    harness, steps_per_window = _harness_rate(prepared, settings)
                harness_rates.append(harness)
                bare_rates.append(bare_rate)
                ratios.append(harness / bare_rate)
            backend.release()
            results["cases"].append(
                {
                    "model": model_name, "image_size": image_size, "mode": mode, "batch": BATCH,
                    "ratio_median": median(ratios), "ratio_iqr": iqr(ratios), "ratio_min": min(ratios),
                    "ratio_max": max(ratios), "harness_img_s": median(harness_rates), "bare_img_s": median(bare_rates),
                    "alternations": ALTERNATIONS,
                }
            )  # fmt: skip
    noop = measure(
        lambda: None, HostClock(lambda: None), warmup_steps=10, windows=5, min_window_s=0.05, max_window_steps=100_000
    )
    results["noop_step_us"] = median(noop.step_seconds) * 1e6
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--frameworks", default="torch,tensorflow", help="comma list (default: torch,tensorflow)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    from tabulate import tabulate

    from implementations import is_installed

    root = Path(__file__).resolve().parent.parent
    all_results, rows = [], []
    for framework in [f.strip() for f in args.frameworks.split(",") if f.strip()]:
        if framework not in ("torch", "tensorflow"):
            print(f"error: unknown framework {framework!r}; valid frameworks: torch, tensorflow", file=sys.stderr)
            return 2
        if not is_installed(framework):
            print(f"{framework}: not installed, skipped", file=sys.stderr)
            continue
        output = subprocess.run(
            [sys.executable, "-m", "bench.overhead", "--worker", framework],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        all_results.append(result)
        for case in result["cases"]:
            rows.append(
                [framework, case["model"], case["image_size"], case["mode"], case["batch"], f"{case['harness_img_s']:.1f}",
                 f"{case['bare_img_s']:.1f}", f"{case['ratio_median']:.3f}", f"{case['ratio_min']:.3f}–{case['ratio_max']:.3f}",
                 f"{case['ratio_iqr']:.3f}"]
            )  # fmt: skip
        rows.append(
            [framework, "no-op step", "—", "—", "—", "—", "—", "—", "—", f"{result['noop_step_us']:.2f} µs/step"]
        )
    headers = [
        "framework",
        "model",
        "px",
        "mode",
        "batch",
        "harness img/s",
        "bare loop img/s",
        "ratio (median)",
        "range",
        "IQR",
    ]
    print(f"Harness vs bare loop, {ALTERNATIONS} alternations each, in one run:")
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
