"""CPU memory means the same in every engine: the harness's method (one worker per model, peaks
reset per configuration, inference before training, batches ascending) gives the peak a fresh worker
gives for the same configuration, in PyTorch and in TensorFlow, and never less than the weights."""

import os

import pytest

from bench.config import build_plan
from bench.records import RunStore
from bench.runner import Runner
from implementations import is_installed

QUIET = open(os.devnull, "w")  # noqa: SIM115
MIB = 2**20
# Same peak: within 15% or 24 MiB, whichever is larger (resident memory moves by page-cache and thread
# stacks; an inherited model, the error this guards against, is hundreds of MiB for these models).
RELATIVE, ABSOLUTE = 0.15, 24 * MIB


def plan(framework: str, model: str, batch_sizes, modes):
    return build_plan(
        dict(
            frameworks=[framework], models=[model], batch_sizes=batch_sizes, modes=modes, precisions=["fp32"],
            image_size=32, device="cpu", layouts=["channels_first"], warmup_steps=1, windows=6, min_window_s=0.0,
            timeout_s=300,
        )
    )  # fmt: skip


def peaks(tmp_path, framework, model, batch_sizes, modes) -> dict:
    store = RunStore(tmp_path)
    store.path.mkdir(parents=True)
    records = Runner(plan(framework, model, batch_sizes, modes), store, {}, out=QUIET).run()
    assert all(r.status == "ok" for r in records), [r.error for r in records]
    return {(r.mode, r.batch_size): r for r in records}


# VGG-11 (507 MiB of weights: an inherited model or a lost one shows) for inference only, as tests build
# full-size models but do not train them; ResNet-20 CIFAR for both modes.
# Keras on JAX: ResNet-20 CIFAR only (JAX's CPU convolutions are slow; its worker rule is the TensorFlow one).
CASES = [
    *((framework, model, modes) for framework in ("torch", "keras-tensorflow")
      for model, modes in (("vgg11", ["infer"]), ("resnet20_cifar", ["infer", "train"]))),
    ("keras-jax", "resnet20_cifar", ["infer", "train"]),
]  # fmt: skip


@pytest.mark.parametrize("framework,model,modes", CASES)
def test_a_reused_worker_gives_the_peak_of_a_fresh_worker(tmp_path, framework, model, modes):
    if not is_installed(framework):
        pytest.skip(f"{framework} is not installed")
    reused = peaks(tmp_path / "reused", framework, model, [2, 8], modes)
    for (mode, batch), record in reused.items():
        (fresh,) = peaks(tmp_path / f"fresh-{mode}-{batch}", framework, model, [batch], [mode]).values()
        a, b = record.peak_memory_bytes, fresh.peak_memory_bytes
        assert a is not None and b is not None, (record.unavailable, fresh.unavailable)
        assert abs(a - b) <= max(RELATIVE * b, ABSOLUTE), (
            f"{mode} b={batch}: reused {a / MIB:.0f} MiB, fresh {b / MIB:.0f} MiB"
        )
        assert a >= record.memory_bound_bytes  # the weights (x3 when training)
