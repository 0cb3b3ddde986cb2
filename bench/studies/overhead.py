"""Harness against a hand-written loop, measured as a benchmark (not a timed test): `python -m bench.studies.overhead`.

For each framework, in a worker process of its own, and each case, the harness's own measurement (a
`session.Session`: build, warm-up, PyTorch's layout trial, windows) and a minimal hand-written loop over
the project's same model take turns, one window each, the order reversed every pair. The hand-written
PyTorch loop runs at its own best memory format: both are tried first and the faster kept. The ratio
harness/loop is the median of per-pair ratios with its 95% interval (stats.paired_ratio), so a
difference inside the machine's noise reads as such. It also times the window loop around a no-op step,
the harness's own cost per step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CASES = {
    "torch": [("resnet18", 64), ("resnet50", 224)],
    "keras-tensorflow": [("resnet20_cifar", 32), ("resnet18", 64)],
    # JAX's CPU convolutions are ~15x slower than PyTorch's: its case stays small on a CPU.
    "keras-jax": [("resnet20_cifar", 32)],
}
BATCH = 8
PAIRS = 9
MIN_WINDOW_S = 0.3
INPUTS = 4  # both loops rotate among the same number of pre-generated batches
TIMEOUT_S = 3600.0  # per engine: its process is ended past this, and the benchmark stops with its log


def _bare_torch(model_name: str, image_size: int, mode: str, layout: str):
    """A minimal hand-written PyTorch loop in one memory format: returns run(steps) -> seconds."""
    import time

    import torch

    from bench.backends.torch_backend import loss_of, make_optimizer
    from implementations import build

    torch.manual_seed(0)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = build(model_name, "torch", image_size=image_size).to(memory_format=memory_format)
    xs = [torch.randn(BATCH, 3, image_size, image_size).contiguous(memory_format=memory_format) for _ in range(INPUTS)]
    ys = [torch.randint(0, model.fc.out_features, (BATCH,)) for _ in range(INPUTS)]
    optimizer = make_optimizer(model.parameters())
    model.train(mode == "train")

    def run(steps: int) -> float:
        start = time.perf_counter()
        for i in range(steps):
            x, y = xs[i % INPUTS], ys[i % INPUTS]
            if mode == "train":
                optimizer.zero_grad(set_to_none=True)
                loss_of(model(x), y).backward()
                optimizer.step()
            else:
                with torch.inference_mode():
                    model(x)
        return time.perf_counter() - start

    return run


def _bare_tensorflow(model_name: str, image_size: int, mode: str, layout: str):
    import time

    import tensorflow as tf

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from implementations import build

    model = build(model_name, "keras-tensorflow", image_size=image_size)
    xs = [tf.random.normal((BATCH, image_size, image_size, 3), seed=i) for i in range(INPUTS)]
    ys = [tf.random.uniform((BATCH,), 0, model.output_shape[-1], dtype=tf.int32, seed=i) for i in range(INPUTS)]
    optimizer = make_optimizer()
    loss_fn = loss_function()

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    @tf.function
    def infer(x):
        return model(x, training=False)

    def run(steps: int) -> float:
        start = time.perf_counter()
        out = None
        for i in range(steps):
            x, y = xs[i % INPUTS], ys[i % INPUTS]
            out = train(x, y) if mode == "train" else infer(x)
        out.numpy()
        return time.perf_counter() - start

    return run


def _bare_jax(model_name: str, image_size: int, mode: str, layout: str):
    """The Keras 3 custom training loop for JAX, as its guide writes it: stateless_call under
    value_and_grad, stateless_apply, one jax.jit per step; no donation, no harness."""
    import time

    import jax
    import numpy as np

    from bench.backends.keras_recipe import loss_function, make_optimizer
    from implementations import build

    model = build(model_name, "keras-jax", image_size=image_size)
    rng = np.random.default_rng(0)
    shape = (BATCH, image_size, image_size, 3)
    xs = [jax.numpy.asarray(rng.standard_normal(shape, dtype=np.float32)) for _ in range(INPUTS)]
    ys = [jax.numpy.asarray(rng.integers(0, model.output_shape[-1], BATCH, dtype=np.int32)) for _ in range(INPUTS)]
    optimizer = make_optimizer()
    optimizer.build(model.trainable_variables)
    loss_fn = loss_function()

    def compute_loss(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    gradient = jax.value_and_grad(compute_loss, has_aux=True)

    @jax.jit
    def train(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    @jax.jit
    def infer(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )

    def run(steps: int) -> float:
        nonlocal state
        start = time.perf_counter()
        out = None
        for i in range(steps):
            x, y = xs[i % INPUTS], ys[i % INPUTS]
            if mode == "train":
                out, state = train(state, x, y)
            else:
                out = infer(state[0], state[1], x)
        jax.block_until_ready(out)
        return time.perf_counter() - start

    return run


def _best_bare_loop(factory, model_name: str, image_size: int, mode: str, layouts: tuple[str, ...]):
    """The hand-written loop at its faster layout: each warmed up, then three alternating windows each."""
    from bench.measure.stats import median

    loops = {layout: factory(model_name, image_size, mode, layout) for layout in layouts}
    steps = {}
    for layout, run in loops.items():
        run(3)
        one = run(1)
        steps[layout] = max(1, int(MIN_WINDOW_S / max(one, 1e-9)))
    rates = {layout: [] for layout in loops}
    for _ in range(3):
        for layout, run in loops.items():
            rates[layout].append(steps[layout] / run(steps[layout]))
    best = max(loops, key=lambda layout: median(rates[layout]))
    return best, loops[best], {layout: median(r) * BATCH for layout, r in rates.items()}


def worker(request: dict, context) -> dict:
    """Every case of one engine (the task "overhead" of bench/execute/tasks.py, whose entry set the process up)."""
    from bench.config import Config, Settings
    from bench.measure.monitors import ProcessMemory
    from bench.measure.session import Session
    from bench.measure.stats import median, paired_ratio
    from bench.measure.timing import alternating, window

    settings = Settings(warmup_steps=3, windows=PAIRS, min_window_s=MIN_WINDOW_S)
    framework, backend, env = context.engine, context.backend, context.env
    backend.warm_framework()
    memory = ProcessMemory()
    memory.set_baseline()
    factory = {"torch": _bare_torch, "keras-tensorflow": _bare_tensorflow, "keras-jax": _bare_jax}[framework]
    layouts = ("channels_first", "channels_last") if framework == "torch" else ("channels_last",)
    results = {"framework": framework, "cases": []}
    for model_name, image_size in CASES[framework]:
        for mode in ("train", "infer"):
            config = Config(
                framework,
                model_name,
                BATCH,
                mode,
                image_size=image_size,
                layout="auto" if framework == "torch" else "channels_last",
            )
            session = Session(backend, config, settings, env, memory)
            session.prepare()
            bare_layout, bare, bare_trial = _best_bare_loop(factory, model_name, image_size, mode, layouts)
            session.window(discard=True)  # settling, as in a cell: the CPU peak is sampled here, not in the pairs
            harness_rates, bare_rates = [], []
            # Alternate which goes first, so a drift within a pair favours neither.
            for _, which in alternating(("harness", "bare"), PAIRS):
                if which == "harness":
                    result = session.window()
                    harness_rates.append(result["steps"] * BATCH / result["seconds"])
                else:
                    steps = session.steps_per_window
                    bare_rates.append(steps * BATCH / bare(steps))
            ratio = paired_ratio(bare_rates, harness_rates)
            layout = session.prepared.layout
            session.finish()
            results["cases"].append(
                {
                    "model": model_name, "image_size": image_size, "mode": mode, "batch": BATCH,
                    "harness_layout": layout, "bare_layout": bare_layout, "bare_layout_trial_img_s": bare_trial,
                    "harness_img_s": median(harness_rates), "bare_img_s": median(bare_rates),
                    "ratio": ratio.ratio, "ratio_low": ratio.low, "ratio_high": ratio.high, "pairs": ratio.pairs,
                    "verdict": ratio.words(),
                }
            )  # fmt: skip
            backend.release()
    noop = window(lambda: None, lambda: None, 100_000, per_step_marks=True)
    results["noop_step_us"] = median(noop.step_seconds) * 1e6
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.studies.overhead", description=__doc__)
    parser.add_argument(
        "--frameworks",
        default="torch,keras-tensorflow,keras-jax",
        help="comma list of engines (default: torch,keras-tensorflow,keras-jax; one not installed is skipped)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    from bench.execute import tasks
    from bench.report.render import markdown_table
    from bench.store.provenance import Segment, stamp
    from implementations import is_installed

    segment = Segment("python -m bench.studies.overhead " + " ".join(sys.argv[1:] if argv is None else argv))

    all_results, rows = [], []
    from implementations.frameworks import ALIASES

    for framework in [ALIASES.get(f.strip(), f.strip()) for f in args.frameworks.split(",") if f.strip()]:
        if framework not in CASES:
            print(f"error: unknown framework {framework!r}; valid frameworks: {', '.join(CASES)}", file=sys.stderr)
            return 2
        if not is_installed(framework):
            print(f"{framework}: not installed, skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as scratch:
            log = Path(scratch) / "worker.log"
            result = tasks.run(framework, "overhead", {}, log, Path(scratch), TIMEOUT_S)
            if "error" in result:
                print(log.read_text(errors="replace"), file=sys.stderr)
                print(f"error: {framework}: {result['error']}", file=sys.stderr)
                return 1
        all_results.append(result)
        for case in result["cases"]:
            interval = f"[{case['ratio_low']:.3f}-{case['ratio_high']:.3f}]" if case["ratio_low"] is not None else "—"
            rows.append(
                [framework, case["model"], case["image_size"], case["mode"], case["batch"],
                 f"{case['harness_img_s']:.1f} ({case['harness_layout']})", f"{case['bare_img_s']:.1f} ({case['bare_layout']})",
                 f"{case['ratio']:.3f}", interval]
            )  # fmt: skip
        rows.append([framework, "no-op step", "—", "—", "—", f"{result['noop_step_us']:.2f} µs/step", "—", "—", "—"])
    headers = ["framework", "model", "px", "mode", "batch", "harness img/s (layout)", "hand-written loop img/s (its best layout)", "harness / loop", "95% interval"]  # fmt: skip
    print(f"Harness vs a hand-written loop, {PAIRS} alternating pairs of windows each, in one run:")
    print(markdown_table(rows, headers))
    if args.json:
        from bench.store.atomic import write_json
        from bench.store.records import host_env

        env = stamp({**host_env(), "command_line": segment.command}, segment.closed())
        write_json(Path(args.json), {"env": env, "results": all_results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
