"""The cases of tests/test_timed_steps.py, run in processes of their own (TensorFlow keeps what it allocates
for the life of a process, and Keras takes one backend per process).

`python -m tests.timed_steps_case group ENGINE MODEL SIZE` runs every case of one model in one Keras engine
(keras-tensorflow or keras-jax) in this process, one after the other, each from fresh models, and prints a
JSON object of each case's relative differences, keyed by `case_key` (one process per model and engine: the
frameworks' start-up is paid once for the model's cases, not once per case). `python -m tests.timed_steps_case
MODEL SIZE MODE DTYPE DIRECTION [ENGINE]` runs one case; `gap [MODEL SIZE]` PyTorch's own float32 gap. The
module docstring of the test explains the comparison.
"""

import json
import os
import sys
import tempfile

import numpy as np

from bench.backends import StepHook, get_backend
from bench.config import Config, Settings
from implementations import build, get_spec, keras_to_torch, torch_to_keras

TOLERANCE = 1e-4
STEPS = 3
BATCH = 4
# Measured on resnet20_cifar, 32 px, batch 4, these inputs, 3 momentum steps: PyTorch float32 against
# PyTorch float64 differed by 6.74e-4 relative (max |difference| / max |update| of the worst tensor; seed 0
# weights; our 2-core CPU, torch 2.13). Keras on TensorFlow then differed from PyTorch by 3.3e-4 in float32,
# Keras on JAX by 1.2e-4. Between engines, float32 is allowed three times the gap.
PYTORCH_FP32_GAP = 6.74e-4
FLOAT32_TOLERANCE = 3 * PYTORCH_FP32_GAP
ZERO = 1e-6  # updates that are zero in exact arithmetic (a VGG-BN conv bias) are compared absolutely

CASES = [("resnet20_cifar", 32), ("resnet18", 64), ("resnet50", 64)]  # option-A, basic, bottleneck


def hook(model: str, size: int, dtype: str) -> StepHook:
    rng = np.random.default_rng(3)
    classes = get_spec(model).default_classes
    return StepHook(
        dtype=dtype,
        inputs=tuple(rng.standard_normal((BATCH, 3, size, size)) for _ in range(STEPS)),
        labels=tuple(rng.integers(0, classes, BATCH) for _ in range(STEPS)),
        dropout=0.0,
    )


def prepare_both(model: str, size: int, mode: str, dtype: str, direction: str, engine: str):
    keras_backend = get_backend(engine)  # first: it picks Keras's backend for this process
    step_hook = hook(model, size, dtype)
    settings = Settings()
    torch_side = get_backend("torch").prepare(
        Config("torch", model, BATCH, mode, image_size=size, layout="channels_first"), settings, step_hook
    )
    keras_side = keras_backend.prepare(Config(engine, model, BATCH, mode, image_size=size, layout="channels_last"), settings, step_hook)  # fmt: skip
    if direction == "torch->keras":
        torch_to_keras(torch_side.model, keras_side.model)
    else:
        keras_to_torch(keras_side.model, torch_side.model)
    return torch_side, keras_side


def keras_state(keras_side, model: str, size: int, dtype: str) -> dict:
    """The Keras model's weights under PyTorch's names, through the weight mapping."""
    if keras_side.export_weights is not None:  # an engine that steps on copies of the weights
        keras_side.export_weights()
    keras_model = keras_side.model
    reader = build(model, "torch", image_size=size, dropout=0.0)
    reader = reader.double() if dtype == "float64" else reader
    keras_to_torch(keras_model, reader)
    return {k: v.detach().clone() for k, v in reader.state_dict().items()}


def state(torch_model) -> dict:
    return {k: v.detach().clone() for k, v in torch_model.state_dict().items()}


def relative(reference: np.ndarray, other: np.ndarray, tolerance: float) -> float:
    scale = np.max(np.abs(reference))
    difference = np.max(np.abs(reference - other))
    return float(difference / scale if scale >= ZERO else difference / ZERO * tolerance)


def update_differences(model, size, dtype, direction, engine) -> dict[str, float]:
    torch_side, keras_side = prepare_both(model, size, "train", dtype, direction, engine)
    before = state(torch_side.model)
    for _ in range(STEPS):
        torch_side.step()
        keras_side.step()
    after_torch, after_keras = state(torch_side.model), keras_state(keras_side, model, size, dtype)
    tolerance = TOLERANCE if dtype == "float64" else FLOAT32_TOLERANCE
    differences = {}
    for name, start in before.items():
        if not start.is_floating_point():
            continue  # num_batches_tracked
        torch_update = (after_torch[name] - start).double().numpy()
        keras_update = (after_keras[name] - start).double().numpy()
        differences[name] = relative(torch_update, keras_update, tolerance)
    return differences


def logit_differences(model, size, dtype, direction, engine) -> dict[str, float]:
    torch_side, keras_side = prepare_both(model, size, "infer", dtype, direction, engine)
    differences = {}
    for step in range(STEPS):
        reference, other = torch_side.step().double().numpy(), np.asarray(keras_side.step(), dtype=np.float64)
        differences[f"logits of step {step + 1}"] = relative(reference, other, TOLERANCE)
    return differences


def pytorch_float32_gap(model: str = "resnet20_cifar", size: int = 32) -> float:
    """PyTorch float32 against PyTorch float64 on the same steps from the same start (FLOAT32_TOLERANCE's basis)."""
    updates = {}
    for dtype in ("float32", "float64"):
        side = get_backend("torch").prepare(
            Config("torch", model, BATCH, "train", image_size=size, layout="channels_first"),
            Settings(),
            hook(model, size, dtype),
        )
        before = state(side.model)
        for _ in range(STEPS):
            side.step()
        after = state(side.model)
        updates[dtype] = {k: (after[k] - v).double().numpy() for k, v in before.items() if v.is_floating_point()}
    return max(relative(updates["float64"][k], updates["float32"][k], FLOAT32_TOLERANCE) for k in updates["float64"])


DIRECTIONS = ("torch->keras", "keras->torch")


def case_key(mode: str, dtype: str, direction: str) -> str:
    return f"{mode} {dtype} {direction}"


def model_cases(model: str) -> list[tuple[str, str, str]]:
    """Every (mode, dtype, direction) the test asks of one model: VGG-11-BN is compared in inference and
    float32 only (its 133M parameters in float64 in both frameworks would take most of the tests' memory);
    the CASES models train and infer in float64 both ways, and ResNet-20 CIFAR trains in float32 too."""
    if model == "vgg11_bn":
        return [("infer", "float32", direction) for direction in DIRECTIONS]
    cases = [(mode, "float64", direction) for mode in ("train", "infer") for direction in DIRECTIONS]
    return cases + ([("train", "float32", "torch->keras")] if model == "resnet20_cifar" else [])


def run_one(model: str, size: int, mode: str, dtype: str, direction: str, engine: str) -> dict[str, float]:
    compare = update_differences if mode == "train" else logit_differences
    return compare(model, size, dtype, direction, engine)


def run_group(engine: str, model: str, size: int) -> dict[str, dict[str, float]]:
    import keras

    results = {}
    for mode, dtype, direction in model_cases(model):
        results[case_key(mode, dtype, direction)] = run_one(model, size, mode, dtype, direction, engine)
        # The case's models go before the next case builds its own: the next prepare's release collects them (a
        # full collection in a process this size takes about 0.5 s; ResNet-50's group ran 20 of them, 11 s of 52).
        keras.backend.clear_session(free_memory=False)
    return results


def main(argv: list[str]) -> int:
    if argv[0] == "gap":  # gap [MODEL SIZE]
        print(json.dumps({"gap": pytorch_float32_gap(*([argv[1], int(argv[2])] if len(argv) > 2 else []))}))
        return 0
    if argv[0] == "group":  # group ENGINE MODEL SIZE
        # The cases of one model compile the same steps again on fresh models (both directions): XLA's persistent
        # cache, in a folder of this process's own, hands the second the first's executable (the same program, the
        # same differences to the last digit; Keras on JAX's ResNet-50 group took 105 s without it, 66 s with it,
        # on our 2-core CPU).
        with tempfile.TemporaryDirectory(prefix="timed-steps-xla-") as cache:
            os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
            get_backend(argv[1])  # first: it picks Keras's backend for this process
            print(json.dumps(run_group(argv[1], argv[2], int(argv[3]))))
        return 0
    model, size, mode, dtype, direction = argv[0], int(argv[1]), argv[2], argv[3], argv[4]
    engine = argv[5] if len(argv) > 5 else "keras-tensorflow"
    print(json.dumps(run_one(model, size, mode, dtype, direction, engine)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
