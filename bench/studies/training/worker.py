"""One engine's part of the training study, in a process of its own: the task "train" of bench/execute/tasks.py.

For each seed and network: the backend's own prepared training step (`prepare` with a StepHook, the step the
harness times and tests/test_timed_steps.py proves equal across engines), fed the seed's batches in order through
`Prepared.feed`; the Keras engines start from PyTorch's seeded initial weights (the torch backend's own `prepare`
builds them), copied by the project's weight transfer. After each epoch the model is evaluated (inference mode,
BatchNorm's running statistics) on a fixed subset of the training images and on the held-out images. Then each
network's synthetic-input training throughput is measured by the harness's own Session (its warm-up and timed
windows) in the same configuration. The result is rewritten after every network, so a stopped worker keeps its
finished runs.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

EVAL_BATCH = 250


def _say(text: str) -> None:
    print(text, flush=True)


def scalar(output) -> float:
    """A step's loss as a Python float (waits for it)."""
    return float(output.item() if hasattr(output, "item") else output)


def weights_digest(torch_model) -> str:
    """What identifies a PyTorch model's weights and BatchNorm statistics (compared across engines' workers)."""
    h = hashlib.sha256()
    for name, tensor in torch_model.state_dict().items():
        h.update(name.encode())
        tensor = tensor.detach().cpu().contiguous()
        h.update((tensor.float() if tensor.is_floating_point() else tensor).numpy().tobytes())  # float64 runs too
    return h.hexdigest()[:16]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def evaluator(engine: str, prepared):
    """logits(images) of the model as it is now, in inference mode (BatchNorm's running statistics)."""
    model = prepared.model
    if engine == "torch":
        import torch

        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype

        def torch_logits(images: np.ndarray) -> np.ndarray:
            model.eval()
            try:
                with torch.inference_mode():
                    outs = [model(torch.from_numpy(images[i : i + EVAL_BATCH]).to(device, dtype)).float().cpu().numpy()
                            for i in range(0, len(images), EVAL_BATCH)]  # fmt: skip
            finally:
                model.train()  # the prepared step does not set the mode again
            return np.concatenate(outs)

        return torch_logits

    def keras_logits(images: np.ndarray) -> np.ndarray:
        if prepared.export_weights is not None:  # an engine that steps on copies of the weights (JAX)
            prepared.export_weights()
        outs = [np.asarray(model(images[i : i + EVAL_BATCH].transpose(0, 2, 3, 1), training=False), dtype=np.float32)
                for i in range(0, len(images), EVAL_BATCH)]  # fmt: skip
        return np.concatenate(outs)

    return keras_logits


def evaluate(logits_of, images: np.ndarray, labels: np.ndarray) -> dict:
    logits = logits_of(images)
    return {"error": float(np.mean(logits.argmax(axis=1) != labels)), "loss": cross_entropy(logits, labels)}


def prepare_run(backend, engine: str, model: str, seed: int, request: dict, first_batch, dtype: str = "float32"):
    """The backend's prepared training step and the initial weights' digest; Keras engines get PyTorch's seeded
    initialisation (the torch backend's own `prepare`, as the equivalence tests do) through the weight transfer."""
    from bench.backends import StepHook, get_backend
    from bench.config import Config, Settings
    from implementations import torch_to_keras

    hook = StepHook(dtype=dtype, inputs=(first_batch[0],), labels=(first_batch[1],), dropout=0.0)
    settings = Settings(threads=request["threads"], seed=seed)
    batch, device = request["batch_size"], request["device"]
    layout = "channels_last"  # PyTorch: the faster format for these nets on our CPU (the harness's trial); Keras: NHWC
    if engine == "torch":
        prepared = backend.prepare(Config(engine, model, batch, "train", layout=layout, device=device), settings, hook)
        return prepared, weights_digest(prepared.model)
    source = (
        get_backend("torch")
        .prepare(Config("torch", model, batch, "train", layout="channels_first", device="cpu"), settings, hook)
        .model
    )
    prepared = backend.prepare(Config(engine, model, batch, "train", layout=layout, device=device), settings, hook)
    torch_to_keras(source, prepared.model)
    return prepared, weights_digest(source)


def train_one(backend, engine: str, model: str, seed: int, data, request: dict, dtype: str = "float32") -> dict:
    from bench.studies.training.data import Batches, evaluation_subset

    batches = Batches(data, request["batch_size"], seed)
    first_batch = next(iter(batches.epoch(1)))
    started = time.perf_counter()
    prepared, digest = prepare_run(backend, engine, model, seed, request, first_batch, dtype)
    build_s = time.perf_counter() - started
    logits_of = evaluator(engine, prepared)
    train_eval = evaluation_subset(data, request["eval_train"])
    run = {"model": model, "seed": seed, "dtype": dtype, "initial_weights": digest, "build_s": build_s, "epochs": [],
           "step_losses": [], "batch_digests": []}  # fmt: skip
    images_seen, wall_total, first_step_s = 0, 0.0, None
    for epoch in range(1, request["epochs"] + 1):
        data_s = step_s = 0.0
        losses: list[float] = []
        order = hashlib.sha256()
        stream = batches.epoch(epoch)
        while True:
            t0 = time.perf_counter()
            item = next(stream, None)
            if item is None:
                break
            images, labels = item
            prepared.feed(images, labels)
            t1 = time.perf_counter()
            loss = scalar(prepared.step())
            t2 = time.perf_counter()
            data_s += t1 - t0
            step_s += t2 - t1
            if first_step_s is None:
                first_step_s = t2 - t1
            order.update(labels.tobytes())
            losses.append(loss)
        wall = data_s + step_s
        images_seen += len(losses) * request["batch_size"]
        wall_total += wall
        t3 = time.perf_counter()
        train_figures = evaluate(logits_of, *train_eval)
        held_figures = evaluate(logits_of, data.held_images, data.held_labels)
        eval_s = time.perf_counter() - t3
        finite = all(math.isfinite(v) for v in losses)
        record = {
            "epoch": epoch, "steps": len(losses), "images": images_seen,
            "train_loss": float(np.mean(losses)) if finite else None,
            "train_error": train_figures["error"], "train_eval_loss": train_figures["loss"],
            "held_error": held_figures["error"], "held_loss": held_figures["loss"],
            "wall_s": wall, "cumulative_wall_s": wall_total, "data_s": data_s, "step_s": step_s, "eval_s": eval_s,
            "img_s": len(losses) * request["batch_size"] / wall,
        }  # fmt: skip
        run["epochs"].append(record)
        run["step_losses"].append([v if math.isfinite(v) else None for v in losses])
        run["batch_digests"].append(order.hexdigest()[:16])
        _say(f"{engine} {dtype} {model} seed {seed} epoch {epoch}: loss {record['train_loss']}, train error "
             f"{record['train_error']:.2%}, held-out error {record['held_error']:.2%}, {wall:.1f} s "
             f"({record['img_s']:.0f} img/s, data {data_s:.2f} s), eval {eval_s:.1f} s")  # fmt: skip
        if not finite:
            run["diverged_at_epoch"] = epoch
            break
    run["first_step_s"] = first_step_s
    backend.release()
    return run


def synthetic_throughput(backend, engine: str, model: str, request: dict, process_env: dict, memory) -> dict:
    """The harness's own measurement of this configuration on synthetic inputs: a Session's warm-up and timed
    windows (`python -m bench run`'s worker side), with the run's batch size, layout and threads."""
    from bench.config import Config, Settings
    from bench.measure.session import Session

    settings = Settings(windows=request["synthetic_windows"], min_window_s=request["synthetic_window_s"],
                        threads=request["threads"])  # fmt: skip
    config = Config(engine, model, request["batch_size"], "train", layout="channels_last", device=request["device"])
    session = Session(backend, config, settings, process_env, memory)
    try:
        record = session.measure_alone()
    except Exception as error:
        backend.release()
        return {"error": f"{type(error).__name__}: {error}"[:500]}
    backend.release()
    return {
        "throughput_img_s": record.throughput_img_s,
        "throughput_min_img_s": record.throughput_min_img_s,
        "throughput_max_img_s": record.throughput_max_img_s,
        "windows": len(record.window_seconds or []),
        "steps_per_window": record.steps_per_window,
        "first_step_s": record.first_step_s,
        "layout": record.layout_chosen,
    }


def train(request: dict, context) -> dict:
    """The engine's training runs of `request` (the task "train" of bench/execute/tasks.py, whose entry has set
    the process up): saved after every network, so a stopped worker keeps its finished runs."""
    from bench.measure.monitors import ProcessMemory
    from bench.studies.training.data import load

    engine, backend, process_env = context.engine, context.backend, context.env
    memory = ProcessMemory()
    memory.set_baseline()
    data = load(request["cifar10"], request["held_out"], request["train_images"])
    result = {"engine": engine, "data_digest": data.digest(), "data_description": data.description,
              "runs": [], "synthetic": {}}  # fmt: skip

    def times() -> dict:
        result.update(cpu_s=time.process_time(), wall_s=time.perf_counter() - context.started)  # the worker's, so far
        return result

    def write() -> None:
        context.save(times())

    for seed in request["seeds"]:
        for model in request["models"]:
            result["runs"].append(train_one(backend, engine, model, seed, data, request))
            write()
    if engine == "torch" and request["float64_reference"]:
        # The control: PyTorch against itself in float64 on the first seed; how far float32 rounding alone moves a run.
        result["float64_runs"] = []
        for model in request["models"]:
            result["float64_runs"].append(
                train_one(backend, engine, model, request["seeds"][0], data, request, "float64")
            )
            write()
    if request["synthetic_windows"]:
        for model in request["models"]:
            result["synthetic"][model] = synthetic_throughput(backend, engine, model, request, process_env, memory)
            _say(f"{engine} {model} synthetic: {result['synthetic'][model]}")
            write()
    result["done"] = True
    return times()  # saved by the task entry
