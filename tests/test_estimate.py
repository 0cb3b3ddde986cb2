"""The duration printed before a sweep: from earlier records on the same device, scaled where needed."""

import dataclasses
from pathlib import Path

import pytest

from bench.config import PRESETS, Config, build_plan
from bench.execute.estimate import estimate, load_history, this_device_key
from bench.store.records import make_record

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"
H200 = ("cuda", "NVIDIA H200")


def test_the_gpu_default_presets_pytorch_part_is_estimated_under_6_minutes_from_the_committed_h200_records():
    plan = build_plan({**PRESETS["gpu-default"], "device": "cuda"}, "gpu-default")
    result = estimate(plan, load_history(RUNS), H200)
    torch_configs = sum(c.framework == "torch" for c in plan.configs)
    assert result.measured + result.scaled == torch_configs == 18
    assert 60 < result.seconds <= 360
    assert result.not_estimated == {"keras-tensorflow": 18, "keras-jax": 18}  # no Keras record on a GPU yet
    assert "not estimated, no record on this device: keras-tensorflow (18), keras-jax (18)" in result.line()
    full = estimate(build_plan({**PRESETS["gpu-full"], "device": "cuda"}, "gpu-full"), load_history(RUNS), H200)
    assert full.seconds > 30 * 60  # the hour-long grid is an explicit preset, not a default


def _record(batch, img_s, first=2.0, model="resnet50", mode="train"):
    config = Config("torch", model, batch, mode, "bf16", image_size=224, device="cuda")
    return make_record(config, "ok", throughput_img_s=img_s, first_step_s=first, warmup_s=0.5, build_s=1.0,
                       env={"device_name": "NVIDIA H200"})  # fmt: skip


def test_a_batch_between_two_measured_ones_is_interpolated_and_another_device_is_not_used():
    history = [_record(1, 200.0), _record(256, 4000.0)]
    plan = build_plan({**PRESETS["gpu-default"], "device": "cuda", "frameworks": ["torch"], "models": ["resnet50"],
                       "modes": ["train"], "batch_sizes": [256]}, "x")  # fmt: skip
    exact = estimate(plan, history, H200)
    assert (exact.measured, exact.scaled) == (1, 0)
    between = estimate(dataclasses.replace(plan, configs=(dataclasses.replace(plan.configs[0], batch_size=64),)),
                       history, H200)  # fmt: skip
    assert (between.measured, between.scaled) == (0, 1)
    other_card = estimate(plan, history, ("cuda", "NVIDIA H100 80GB HBM3"))
    assert other_card.not_estimated == {"torch": 1} and other_card.seconds == 0


def test_another_model_is_scaled_by_its_forward_flops():
    history = [_record(256, 4000.0, model="resnet50")]
    one = {**PRESETS["gpu-default"], "device": "cuda", "frameworks": ["torch"], "modes": ["train"]}
    small = estimate(build_plan({**one, "models": ["resnet18"]}, "x"), history, H200).seconds
    large = estimate(build_plan({**one, "models": ["resnet152"]}, "x"), history, H200).seconds
    assert small < large


def test_every_sweep_prints_its_estimate_before_it_starts(tmp_path, monkeypatch, capsys):
    from bench.commands.cli import main

    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", "{}")
    out = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--frameworks", "torch", "--batch-sizes", "2", "--modes", "infer",
                 "--out", str(out), "--no-report"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "estimate: " in err and err.index("estimate: ") < err.index("1/1")


@pytest.mark.parametrize("device", ["cpu"])
def test_this_device_key_names_the_cpu_model_and_cores(device):
    key = this_device_key(device)
    assert key[0] == "cpu" and key[2] >= 1
