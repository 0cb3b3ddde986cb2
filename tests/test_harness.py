"""The sweep runner with real worker processes and a fake backend: failures become records, the sweep
goes on, nothing measured is lost, and bad input exits 2 before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.config import Config, Settings, UsageError, build_plan
from bench.execute.runner import Runner
from bench.store.records import RunStore, load_records
from tests.handmade import fake_env

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(warmup_steps=1, windows=6, min_window_s=0.0, timeout_s=20)


def plan_for(batch_sizes, models=("resnet20_cifar",), frameworks=("torch",), **settings):
    options = dict(
        frameworks=list(frameworks), models=list(models), batch_sizes=list(batch_sizes), modes=["infer"],
        precisions=["fp32"], image_size=32, device="cpu", **{**FAST, **settings},
    )  # fmt: skip
    return build_plan(options)


def sweep(tmp_path, plan, fake: dict, monkeypatch) -> list:
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", json.dumps(fake))
    store = RunStore(tmp_path / "run")
    store.path.mkdir(exist_ok=True)
    Runner(plan, store, {"host": "test"}, out=open(os.devnull, "w")).run()
    return store.records()


def by_batch(records):
    return {r.batch_size: r for r in records}


def test_oom_at_a_batch_skips_the_larger_ones(tmp_path, monkeypatch):
    records = by_batch(sweep(tmp_path, plan_for([1, 2, 4, 8]), {"oom_at_batch": 4}, monkeypatch))
    assert [records[b].status for b in (1, 2, 4, 8)] == ["ok", "ok", "oom", "skipped"]
    assert records[8].error == "OOM at batch 4"
    assert "fake out of memory" in records[4].error


def test_an_exception_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    records = sweep(
        tmp_path,
        plan_for([2], models=["resnet20_cifar", "resnet32_cifar", "resnet44_cifar"]),
        {"error_model": "resnet32_cifar"},
        monkeypatch,
    )
    assert [(r.model, r.status) for r in records] == [
        ("resnet20_cifar", "ok"), ("resnet32_cifar", "error"), ("resnet44_cifar", "ok"),
    ]  # fmt: skip
    assert "fake failure building resnet32_cifar" in records[1].error


def test_a_hang_hits_the_timeout_and_a_fresh_worker_continues(tmp_path, monkeypatch):
    records = by_batch(sweep(tmp_path, plan_for([1, 2, 4], timeout_s=5), {"hang_batch": 2}, monkeypatch))
    assert [records[b].status for b in (1, 2, 4)] == ["ok", "timeout", "ok"]
    assert "--timeout 5" in records[2].error


def test_a_sigkilled_worker_is_recorded_and_earlier_records_stay(tmp_path, monkeypatch):
    records = by_batch(sweep(tmp_path, plan_for([1, 2, 4]), {"kill_batch": 2}, monkeypatch))
    assert records[1].status == "ok" and records[1].throughput_img_s > 0
    assert records[2].status == "error" and "SIGKILL" in records[2].error
    assert records[4].status == "ok"


def test_every_record_has_every_field_and_the_environment(tmp_path, monkeypatch):
    (record,) = sweep(tmp_path, plan_for([2]), {}, monkeypatch)
    from bench.store.records import RECORD_FIELDS

    (line,) = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert set(RECORD_FIELDS) <= set(json.loads(line))  # every field on disk, None where not measured
    assert record.env["host"] == "test" and record.env["intra_op_threads"] >= 1
    assert len(record.window_throughputs_img_s) == 6
    assert record.gpu_util_pct_mean is None and "no GPU" in record.unavailable["gpu_util_pct_mean"]
    assert record.flops_per_img == 2 * 40_551_040  # ResNet-20 at 32 px: 40.6 MMACs (He et al. 2015)


def test_resume_measures_only_what_is_missing(tmp_path, monkeypatch):
    plan = plan_for([1, 2, 4])
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    store.write_json("plan.json", plan.to_dict())
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    first = Runner(plan, store, {}, out=open(os.devnull, "w"))
    first.plan = plan_for([1])  # an interrupted run: only the first configuration got recorded
    first.run()
    before = store.results.read_text()
    Runner(plan, store, {}, out=open(os.devnull, "w")).run()
    after = store.results.read_text()
    assert after.startswith(before)  # nothing rewritten
    assert [r.batch_size for r in load_records(store.results)] == [1, 2, 4]


def test_ctrl_c_keeps_finished_records_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    env = fake_env(hang_batch=4)
    args = [sys.executable, "-m", "bench", "run", "--frameworks", "torch", "--models", "resnet20_cifar",
            "--batch-sizes", "1,2,4", "--modes", "infer", "--image-size", "32", "--device", "cpu", "--out", str(out),
            "--min-window-s", "0", "--warmup-steps", "0", "--no-report"]  # fmt: skip
    from tests.test_reliability import as_from_a_terminal

    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    import time

    deadline = time.time() + 60
    while time.time() < deadline and len(load_records(out / "results.jsonl")) < 2:
        time.sleep(0.2)
    process.send_signal(2)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "--resume" in stderr
    assert [r.status for r in load_records(out / "results.jsonl")] == ["ok", "ok"]
    env["CNN_BENCH_FAKE"] = "{}"
    subprocess.run(
        [sys.executable, "-m", "bench", "run", "--resume", str(out), "--no-report"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    assert [r.batch_size for r in load_records(out / "results.jsonl")] == [1, 2, 4]


def test_a_missing_framework_is_reported_and_recorded_as_skipped(tmp_path, monkeypatch):
    import bench.execute.runner

    monkeypatch.setattr(bench.execute.runner, "is_installed", lambda framework: framework != "keras-tensorflow")
    records = sweep(tmp_path, plan_for([2], frameworks=["torch", "tensorflow"]), {}, monkeypatch)
    status = {r.framework: r for r in records}
    assert status["torch"].status == "ok"
    assert status["keras-tensorflow"].status == "skipped" and "not installed" in status["keras-tensorflow"].error


def test_max_batch_doubles_then_bisects(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", json.dumps({"oom_at_batch": 11}))
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    (result,) = Runner(plan_for([1]), store, {}, out=open(os.devnull, "w")).find_max_batches()
    assert result["max_batch_size"] == 10 and result["first_failing_batch"] == 11
    assert [b for b, _ in result["probes"]] == [1, 2, 4, 8, 16, 12, 10, 11]


def test_max_batch_starts_from_the_largest_measured_batch_and_prints_each_probe(tmp_path, monkeypatch):
    import io

    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", json.dumps({"oom_at_batch": 11}))
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    plan = plan_for([1, 4], compile=["off", "on"])
    out = io.StringIO()
    runner = Runner(plan, store, {}, out=out)
    runner.run()
    (result,) = runner.find_max_batches()  # the compiled group is not searched
    assert result["start_batch"] == 4 and result["max_batch_size"] == 10
    assert [b for b, _ in result["probes"]] == [8, 16, 12, 10, 11]  # never batch 1, 2 or 4 again
    text = out.getvalue()
    assert "from b=4, which the run measured" in text
    probe_lines = [line for line in text.splitlines() if line.strip().startswith("probe ")]
    assert len(probe_lines) == 5 and "b=16: oom" in text and "b=8: ok (first step" in text
    assert "compiled: not searched (eager only)" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frameworks", "mxnet"], "valid frameworks: torch, keras-tensorflow, keras-jax"),
        (["--models", "resnet51"], "Did you mean 'resnet50'"),
        (["--models", "resnet21_cifar"], "6n+2"),
        (["--precision", "fp8"], "valid precisions: fp32, bf16, fp16"),
        (["--batch-sizes", "0"], "batch size on the command line must be between 1 and 65536, got 0"),
        (["--batch-sizes", "-4"], "must be between 1 and 65536, got -4"),
        (["--batch-sizes", "eight"], "batch size must be an integer between 1 and 65536, got 'eight'"),
        (["--modes", "fit"], "valid modes: train, infer"),
        (["--image-size", "16", "--models", "vgg11"], "at least 32 px"),
        (["--preset", "huge"], "valid presets: cpu-default, gpu-default, gpu-resnet50, gpu-full, smoke"),
        (["--windows", "5"], "windows on the command line must be between 6 and 1000, got 5"),
        (["--out", "/proc/forbidden/run"], "not writable"),
        (["--models", ""], "no models given"),
        (["--batch-sizes", ","], "no batch sizes given"),
    ],
)
def test_bad_input_exits_2_naming_the_valid_choices(args, message, capsys, tmp_path):
    before = set(tmp_path.iterdir())
    assert main(["run", "--preset", "smoke", *args]) == 2
    assert message in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("{}\n")
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "results.jsonl").read_text() == "{}\n"


def test_unknown_model_from_the_shell_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--models", "vgg17"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "vgg16" in result.stderr and "resnet1202_cifar" in result.stderr


def test_plan_interleaves_frameworks_on_cpu_and_groups_them_on_gpu():
    cpu = plan_for([1, 2], frameworks=["torch", "tensorflow"])
    assert [c.framework for c in cpu.configs][:4] == ["torch", "keras-tensorflow", "torch", "keras-tensorflow"]
    options = dict(
        frameworks=["torch", "tensorflow"],
        models=["resnet18"],
        batch_sizes=[1, 2],
        modes=["infer"],
        precisions=["fp32"],
        image_size=32,
        device="cuda",
    )
    gpu = build_plan(options)
    assert [c.framework for c in gpu.configs] == ["torch", "torch", "keras-tensorflow", "keras-tensorflow"]


def test_config_round_trips_and_groups():
    config = Config("torch", "resnet18", 8, "train")
    assert Config.from_dict(config.to_dict()) == config
    assert config.group() == Config("torch", "resnet18", 16, "train").group()
    with pytest.raises(UsageError):
        build_plan(
            dict(
                frameworks=["torch"],
                models=["resnet18"],
                batch_sizes=["x"],
                modes=["train"],
                precisions=["fp32"],
                image_size=32,
            )
        )
    assert Settings().windows >= 5


def test_a_toml_preset_runs_end_to_end_with_its_report(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    profile = tmp_path / "tiny.toml"
    profile.write_text(
        'frameworks = ["torch", "tensorflow"]\nmodels = ["resnet20_cifar"]\nbatch_sizes = [1, 2]\n'
        'modes = ["infer"]\nprecisions = ["fp32"]\nimage_size = 32\nmin_window_s = 0.0\nwarmup_steps = 0\n'
    )
    out = tmp_path / "run"
    assert main(["run", "--preset", str(profile), "--device", "cpu", "--out", str(out)]) == 0
    records = load_records(out / "results.jsonl")
    assert sorted((r.framework, r.batch_size) for r in records) == [
        ("keras-tensorflow", 1), ("keras-tensorflow", 2), ("torch", 1), ("torch", 2),
    ]  # fmt: skip
    assert json.loads((out / "plan.json").read_text())["preset"] == "tiny"
    assert "keras-tensorflow vs torch" in (out / "report.md").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = 4\n")
    assert main(["run", "--preset", str(bad)]) == 2


def test_without_a_gpu_the_default_preset_is_the_cpu_one(monkeypatch):
    import bench.config

    monkeypatch.setattr(bench.config.presets, "detect_gpu", lambda: None)
    assert bench.config.default_preset_name() == "cpu-default"
    monkeypatch.setattr(bench.config.presets, "detect_gpu", lambda: "NVIDIA H100 80GB HBM3")
    assert bench.config.default_preset_name() == "gpu-default"
