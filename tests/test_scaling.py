"""Data-parallel scaling on the frameworks' own engines: DDP over gloo, MirroredStrategy, multi-worker
TensorFlow over localhost, a killed rank recorded, and the efficiency arithmetic."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.studies.scaling.scaling import ScaleRecord
from bench.studies.scaling.scaling_report import efficiency

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--models",
    "resnet8_cifar",
    "--batch-size",
    "2",
    "--windows",
    "6",
    "--min-window-s",
    "0.02",
    "--timeout",
    "300",
]

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def scale(tmp_path, *extra) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "scale"
    result = subprocess.run([sys.executable, "-m", "bench", "scale", *TINY, *extra, "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    records = [json.loads(line) for line in (out / "scaling.jsonl").read_text().splitlines()] if out.exists() else []
    return result, records


def test_two_replicas_of_ddp_over_gloo_and_of_mirrored_strategy_give_scaling_records(tmp_path):
    result, records = scale(tmp_path, "--frameworks", "torch,keras-tensorflow", "--replicas", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["engine"], r["replicas"], r["status"]) for r in records] == [
        ("torch", 1, "ok"), ("torch", 2, "ok"), ("keras-tensorflow", 1, "ok"), ("keras-tensorflow", 2, "ok"),
    ]  # fmt: skip
    two = [r for r in records if r["replicas"] == 2]
    assert all(r["global_batch"] == 4 and r["throughput_img_s"] > 0 and r["exposed_comm_s"] is not None for r in two)
    assert {r["strategy"] for r in two} == {"DistributedDataParallel", "MirroredStrategy"}
    assert next(r for r in two if r["engine"] == "torch")["collective"] == "gloo"
    assert all(r["gradient_bytes"] == 4 * 75_290 for r in records)  # resnet8_cifar's parameters x 4 bytes
    text = (tmp_path / "scale" / "scaling.md").read_text()
    assert "efficiency" in text and "not a claim about GPUs" in text
    assert (tmp_path / "scale" / "scaling.png").exists()


def test_a_two_process_multi_worker_tensorflow_run_on_localhost(tmp_path):
    result, records = scale(tmp_path, "--frameworks", "keras-tensorflow", "--replicas", "2", "--nodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    (two,) = [r for r in records if r["replicas"] == 2]
    assert two["status"] == "ok" and two["strategy"] == "MultiWorkerMirroredStrategy" and two["nodes"] == 2


def test_a_killed_rank_is_recorded_by_number_and_the_sweep_goes_on(tmp_path):
    result, records = scale(tmp_path, "--frameworks", "torch,keras-tensorflow", "--replicas", "2", "--kill-rank", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    by = {(r["engine"], r["replicas"]): r for r in records}
    assert by[("torch", 1)]["status"] == "ok"  # a one-replica job has no rank 1
    failed = by[("torch", 2)]
    assert (
        failed["status"] == "error"
        and failed["failed_ranks"] == [1]
        and "rank 1 failed first (exit code -9" in failed["error"]
    )
    assert by[("keras-tensorflow", 1)]["status"] == "ok"  # the sweep went on after the failure


def test_a_hung_rank_becomes_a_timeout_record_naming_the_ranks_that_did_not_finish(tmp_path):
    result, records = scale(tmp_path, "--frameworks", "torch", "--replicas", "2", "--hang-rank", "1", "--timeout", "15")
    assert result.returncode == 0, result.stderr[-3000:]
    hung = next(r for r in records if r["replicas"] == 2)
    assert hung["status"] == "timeout" and 1 in hung["failed_ranks"] and "timed out after 15 s" in hung["error"]


def test_efficiency_is_throughput_over_replicas_times_the_one_replica_throughput():
    def record(replicas, rate, status="ok"):
        return ScaleRecord(engine="torch", model="resnet8_cifar", replicas=replicas, nodes=1, batch_per_replica=2,
                           global_batch=2 * replicas, image_size=32, device="cpu", strategy="x", status=status,
                           throughput_img_s=rate)  # fmt: skip

    records = [record(1, 100.0), record(2, 180.0), record(4, None, "error")]
    assert efficiency(records[1], records) == pytest.approx(0.9)
    assert efficiency(records[2], records) is None


def test_the_pytorch_replicas_step_is_the_backends_prepared_step_on_the_wrapped_model():
    """`prepare(..., wrap=...)` hands the built model to the wrapper (DDP in a replica) and its step runs the
    wrapped module: the same recipe the equivalence tests prove, now through the wrapper; a Keras engine, which
    distributes under a tf.distribute strategy, refuses a wrapper by name."""
    import torch

    from bench.backends import WRAP_REFUSED
    from bench.backends.fake_backend import FakeBackend
    from bench.backends.torch_backend import TorchBackend
    from bench.config import Config, Settings

    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    wrapped = []

    def wrap(model):
        wrapped.append(Counting(model))
        return wrapped[0]

    config = Config("torch", "resnet8_cifar", 2, "train", layout="channels_first", image_size=32)
    prepared = TorchBackend().prepare(config, Settings(threads=1), wrap=wrap)
    before = [p.detach().clone() for p in prepared.model.parameters()]
    prepared.step()
    assert calls == [2] and wrapped[0].inner is prepared.model  # the step ran the wrapper, around the model
    assert any(not torch.equal(a, p) for a, p in zip(before, prepared.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="DistributedDataParallel"):
        FakeBackend("keras-tensorflow").prepare(config, Settings(), wrap=wrap)
    assert "tf.distribute" in WRAP_REFUSED


# Run in a process of its own: TensorFlow's logical devices must be set before anything initialises it.
STRATEGY_CASE = r"""
import json, os, sys
import numpy as np
from bench.backends import StepHook
from bench.backends.tf_backend import TensorFlowBackend, tf
from bench.config import Config, Settings

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(devices=["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(5)
hook = StepHook(dtype="float64", inputs=(rng.standard_normal((4, 3, 16, 16)), rng.standard_normal((4, 3, 16, 16))),
                labels=(rng.integers(0, 10, 4), rng.integers(0, 10, 4)))
settings = Settings(seed=3)
model = sys.argv[1]
backend = TensorFlowBackend()
whole = backend.prepare(Config("keras-tensorflow", model, 4, "train", image_size=16), settings, hook)
start = [w.copy() for w in whole.model.get_weights()]
for _ in range(3):
    whole.step()
whole.sync()
alone = whole.model.get_weights()
replicated = backend.prepare(Config("keras-tensorflow", model, 2, "train", image_size=16), settings, hook, wrap=strategy)
replicated.model.set_weights(start)
replicated.no_exchange()  # the control step leaves the model's weights as they are
unchanged = max(float(np.max(np.abs(a - b))) for a, b in zip(replicated.model.get_weights(), start))
for _ in range(3):
    replicated.step()
replicated.sync()
worst = 0.0
for a, b, s in zip(alone, replicated.model.get_weights(), start):
    update = np.max(np.abs(a - s))
    if update > 0:
        worst = max(worst, float(np.max(np.abs(a - b)) / update))
print(json.dumps({"worst": worst, "unchanged": unchanged, "replicas": strategy.num_replicas_in_sync}))
"""


def test_keras_replicas_under_a_strategy_give_the_single_process_steps_update():
    """Keras on TensorFlow's data-parallel step is the harness's own step under a tf.distribute strategy: two
    replicas, each stepping on its half of a batch of 4, give the update of one unwrapped step on the whole batch
    (float64, 3 momentum steps; a net without BatchNorm, whose batch statistics are each replica's own), and the
    scaling study's control step (no gradient exchange) leaves the model's weights untouched."""
    result = subprocess.run([sys.executable, "-c", STRATEGY_CASE, "resnet8_cifar_nobn"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["replicas"] == 2 and found["unchanged"] == 0.0
    assert found["worst"] < 1e-10, found
