"""The steps the harness times compute the same thing in PyTorch and in each Keras engine.

Each backend's own prepared step (the code inside the timed windows, reached through the StepHook test
hook: a chosen dtype, given inputs, a fresh model) runs on weights transferred from the other framework,
in both directions. Inference: the logits of every step agree. Training: the weight updates after 3 steps
of SGD with momentum 0.9 (so the momentum buffers are exercised) agree, parameter by parameter and for
BatchNorm's running statistics. The Keras model's weights are read back through the weight mapping into a
PyTorch model, so both sides are compared under the same names (tests/timed_steps_case.py).

Float64 separates an implementation difference from rounding: 1e-4 relative. In float32, three
momentum steps at batch 4 are ill-conditioned in PyTorch itself: PyTorch float32 against PyTorch float64
differs by 6.7e-4 (ResNet-20 CIFAR), 3.6e-4 (ResNet-18, 64 px) and 1.4 (ResNet-50, 64 px) in the worst
weight update (2.3e-2, 0.68 and 1.5 from another draw of the same initial distributions: the gap depends on
the draw), so a float32 comparison between frameworks can only be held to a multiple of that gap
(FLOAT32_TOLERANCE, on ResNet-20 CIFAR), and the float64 comparisons are the proof.

Each model's cases in one engine run in a process of their own, once, and each test reads its case from
that process's answer: TensorFlow keeps what it allocates for the life of a process, and all the cases
together would hold over 5 GB in one; a process per case paid the frameworks' start-up (10-14 s) 62 times.
"""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from implementations import is_installed
from tests.timed_steps_case import CASES, DIRECTIONS, FLOAT32_TOLERANCE, PYTORCH_FP32_GAP, TOLERANCE, case_key

pytest.importorskip("torch", reason="needs torch (extra: torch)")
pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: tensorflow)")
ROOT = Path(__file__).resolve().parent.parent
# Keras on TensorFlow, and Keras on JAX where jax is installed (each engine's cases in processes of their own).
ENGINES = [
    "keras-tensorflow",
    pytest.param("keras-jax", marks=pytest.mark.skipif(not is_installed("keras-jax"), reason="jax is not installed")),
]


def run_case(*args) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.timed_steps_case", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@functools.cache
def model_group(engine: str, model: str, size: int) -> dict:
    """Every case of one model in one engine, from one process (tests.timed_steps_case.model_cases)."""
    return run_case("group", engine, model, size)


def case(model, size, mode, dtype, direction, engine) -> dict:
    return model_group(engine, model, size)[case_key(mode, dtype, direction)]


def worst(differences: dict) -> tuple[str, float]:
    name = max(differences, key=differences.get)
    return name, differences[name]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model,size", CASES)
def test_the_timed_training_steps_give_the_same_updates_in_float64(model, size, direction, engine):
    differences = case(model, size, "train", "float64", direction, engine)
    name, value = worst(differences)
    assert value < TOLERANCE, f"{name}: {value:.2e}"
    assert any("running_var" in key for key in differences)  # BatchNorm statistics compared too


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model,size,dtype", [*((m, s, "float64") for m, s in CASES), ("vgg11_bn", 32, "float32")])
def test_the_timed_inference_steps_give_the_same_logits(model, size, dtype, direction, engine):
    """VGG-11-BN in float32: its 133M parameters in float64 in both frameworks would take most of the
    tests' memory, and inference logits are well-conditioned in float32 (1e-4, as the transfer tests)."""
    name, value = worst(case(model, size, "infer", dtype, direction, engine))
    assert value < TOLERANCE, f"{name}: {value:.2e}"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_timed_training_steps_agree_in_float32_within_the_stated_tolerance(engine):
    name, value = worst(case("resnet20_cifar", 32, "train", "float32", "torch->keras", engine))
    assert value < FLOAT32_TOLERANCE, f"{name}: {value:.2e}"


def test_float32_tolerance_is_above_pytorchs_own_float32_gap():
    """The basis of FLOAT32_TOLERANCE, measured again: PyTorch float32 against PyTorch float64."""
    gap = run_case("gap")["gap"]
    assert PYTORCH_FP32_GAP / 3 < gap <= PYTORCH_FP32_GAP * 3, f"measured gap {gap:.2e}"
    assert FLOAT32_TOLERANCE > gap
