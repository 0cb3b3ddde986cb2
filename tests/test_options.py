"""One option schema for every command: types, ranges, the 6n+2 rule, replicas against the cores, cuda only
where a GPU is found. Bad input exits 2 before any work (no output folder), with the valid range or choices."""

import os

import pytest

import bench.config.options as options
from bench.commands import submit
from bench.commands.cli import main, make_parser
from bench.config import UsageError
from bench.config.options import check_command, gpu_count

CORES = os.cpu_count()
DEPTH = "a CIFAR-style depth must be 6n+2 with n >= 1, at most 1202"
SMOKE = ["--preset", "smoke", "--frameworks", "torch", "--modes", "infer", "--batch-sizes", "2"]


def refused(capsys, tmp_path, argv: list[str], message: str) -> None:
    before = sorted(tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert sorted(tmp_path.iterdir()) == before  # nothing made: no output folder, no probe left behind


# --- the 6n+2 rule: the same in models, profile, scale, gradient-flow and run -----------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "resnet21_cifar"],
        ["models", "plain27_cifar"],
        ["models", "resnet21_cifar_nobn"],
        ["profile", "resnet21_cifar"],
        ["profile", "plain27_cifar_nobn"],
        ["profile", "resnet600002_cifar"],
        ["scale", "--models", "resnet21_cifar"],
        ["scale", "--models", "resnet20_cifar,plain9_cifar"],
        ["scale", "--models", "resnet1208_cifar"],
        ["gradient-flow", "--depths", "600002"],
        ["gradient-flow", "--depths", "20,21"],
        ["gradient-flow", "--depths", "2"],
        ["run", "--preset", "smoke", "--models", "resnet1208_cifar"],
    ],
)
def test_a_cifar_depth_off_the_6n_plus_2_rule_or_past_1202_exits_2(capsys, tmp_path, argv):
    out = [] if argv[0] == "models" else ["--out", str(tmp_path / "out")]
    refused(capsys, tmp_path, [*argv, *out], DEPTH)


def test_the_deepest_cifar_depth_is_accepted():
    values = check_command("gradient-flow", vars(make_parser().parse_args(["gradient-flow", "--depths", "8,1202"])))
    assert values["depths"] == (8, 1202)


# --- ranges and choices, from the one schema ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["scale", "--batch-size", "0"], "batch size on the command line must be between 1 and 65536, got 0"),
        (["scale", "--batch-size", "-1"], "must be between 1 and 65536, got -1"),
        (["scale", "--batch-size", "2.5"], "batch size must be an integer between 1 and 65536, got '2.5'"),
        (["scale", "--timeout", "-1"], "timeout s on the command line must be between 1 and 86400, got -1.0"),
        (["scale", "--timeout", "nan"], "timeout s on the command line must be a finite number, got nan"),
        (["scale", "--min-window-s", "-5"], "min window s on the command line must be between 0 and 3600, got -5.0"),
        (["scale", "--image-size", "100000"], "image size on the command line must be between 1 and 4096"),
        (["scale", "--windows", "5"], "windows on the command line must be between 6 and 1000, got 5"),
        (["scale", "--replicas", "64"], f"--replicas must be between 1 and {CORES} here (one replica per core"),
        (["scale", "--replicas", "1,,2"], "replicas on the command line has an empty item"),
        (["scale", "--replicas", "0"], "must be between 1 and 1024, got 0"),
        (["scale", "--nodes", "0"], "nodes on the command line must be between 1 and 1024, got 0"),
        (["scale", "--device", "tpu"], "unknown device 'tpu'; valid devices: cpu, cuda"),
        (["scale", "--frameworks", "keras-jax"], "valid engines here: torch, keras-tensorflow"),
        (["scale", "--models", "vgg11", "--image-size", "16"], "at least 32 px"),
        (["profile", "resnet8_cifar", "--image-size", "100000"], "must be between 1 and 4096, got 100000"),
        (["profile", "vgg11", "--image-size", "4096", "--batch-size", "4096"], "more than this machine's"),
        (["profile", "resnet8_cifar", "--windows", "1001"], "windows on the command line must be between 6 and 1000"),
        (["profile", "resnet8_cifar", "--min-window-s", "inf"], "min window s on the command line must be a finite"),
        (["profile", "resnet8_cifar", "--batch-size", "0"], "batch size on the command line must be between 1 and"),
        (["profile", "resnet8_cifar", "--mode", "fit"], "unknown mode 'fit'; valid modes: train, infer"),
        (["profile", "resnet8_cifar", "--precision", "fp16"], "unknown precision 'fp16'; valid precisions: fp32, bf16"),
        (["profile", "resnet8_cifar", "--device", "tpu"], "valid devices: auto, cpu, cuda"),
        (["profile", "resnet8_cifar", "--frameworks", "mxnet"], "valid frameworks: torch, keras-tensorflow"),
        (["profile", "resnet9000"], "unknown model 'resnet9000'"),
        (["gradient-flow", "--steps", "101"], "steps on the command line must be between 0 and 100, got 101"),
        (["gradient-flow", "--batch-size", "0"], "batch size on the command line must be between 1 and 65536"),
        (["gradient-flow", "--depths", "eight"], "depth must be an integer, got 'eight'"),
    ],
)
def test_bad_values_exit_2_naming_the_valid_range_and_make_no_folder(capsys, tmp_path, argv, message):
    refused(capsys, tmp_path, [*argv, "--out", str(tmp_path / "out")], message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "--image-size", "16"], "image size 16 is too small for vgg11: it needs at least 32 px"),
        (["models", "--image-size", "0"], "must be between 1 and 4096, got 0"),
        (["models", "vgg11", "--image-size", "x"], "image size must be an integer between 1 and 4096, got 'x'"),
    ],
)
def test_models_checks_its_image_size_by_the_schema(capsys, tmp_path, argv, message):
    refused(capsys, tmp_path, argv, message)


def test_scale_kill_and_hang_ranks_must_name_a_rank(capsys, tmp_path):
    refused(capsys, tmp_path, ["scale", "--replicas", "2", "--kill-rank", "2", "--out", str(tmp_path / "o")],
            "--kill-rank must be a rank below 2, got 2")  # fmt: skip


def test_one_bound_per_option_across_commands(capsys):
    """windows, seconds per window and the timeout are the run schema's own options in every command."""
    for command in ("profile", "scale"):
        assert options.COMMAND_OPTIONS[command]["windows"] is options.OPTIONS["windows"]
        assert options.COMMAND_OPTIONS[command]["min_window_s"] is options.OPTIONS["min_window_s"]
    assert options.COMMAND_OPTIONS["scale"]["timeout_s"] is options.OPTIONS["timeout_s"]
    accepted = vars(make_parser().parse_args(["profile", "resnet8_cifar", "--windows", "1000", "--device", "cpu"]))
    assert check_command("profile", accepted)["windows"] == 1000
    for command in (["profile", "resnet8_cifar"], ["scale"], ["run"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "6-1000" in capsys.readouterr().out


def test_help_says_the_timeout_covers_the_whole_configuration(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "seconds allowed per configuration, 1-86400: its preparation, timed windows and finish together" in text


# --- the machine's own limits: cores, GPUs ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["profile", "resnet8_cifar", "--device", "cuda"],
        ["scale", "--device", "cuda"],
        ["run", *SMOKE, "--device", "cuda"],
    ],
)
def test_cuda_is_refused_where_no_gpu_is_found(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.setattr(options, "gpu_count", lambda: 0)
    refused(capsys, tmp_path, [*argv, "--out", str(tmp_path / "out")], "--device cuda needs an NVIDIA GPU")


def test_with_gpus_cuda_is_accepted_and_replicas_are_bounded_by_their_count(monkeypatch):
    monkeypatch.setattr(options, "gpu_count", lambda: 2)
    profile = check_command("profile", vars(make_parser().parse_args(["profile", "resnet8_cifar", "--device", "cuda"])))
    assert profile["device"] == "cuda" and profile["batch_size"] == 64  # the GPU default
    scale = vars(make_parser().parse_args(["scale", "--device", "cuda", "--replicas", "2"]))
    assert check_command("scale", scale)["replicas"] == (1, 2)
    with pytest.raises(UsageError, match="between 1 and 2 here \\(one replica per GPU"):
        check_command("scale", {**scale, "replicas": "4"})


def test_replicas_up_to_the_cores_are_accepted_on_a_cpu():
    scale = vars(make_parser().parse_args(["scale", "--replicas", str(CORES)]))
    assert check_command("scale", scale)["replicas"][-1] == CORES


def test_gpu_count_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(options, "_nvml_count", lambda: 4)
    for visible, count in (("", 0), ("0,1", 2), ("1,-1,2", 1), ("0,1,2,3,4,5", 4)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert gpu_count() == count
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_count() == 4


# --- merge and submit ------------------------------------------------------------------------------


def test_merge_refuses_shards_that_are_not_folders(capsys, tmp_path):
    refused(capsys, tmp_path, ["merge", str(tmp_path / "merged"), str(tmp_path / "nowhere")], "is not a run folder")


def submitted(capsys, tmp_path, argv: list[str], message: str) -> None:
    before = sorted(tmp_path.rglob("*"))
    assert submit.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "own, run_args, message",
    [
        (["--shards", "2"], ["--preset", "smoke", "--batch-sizes", "0"], "batch size on the command line must be"),
        (["--shards", "2"], ["--preset", "smoke", "--models", "resnet21_cifar"], DEPTH),
        (["--shards", "2"], ["--preset", "nope"], "valid presets:"),
        (["--shards", "5"], ["--preset", "smoke"], "--shards 5 is more than this plan's 4 cell(s)"),
        (["--shards", "0"], ["--preset", "smoke"], "shards on the command line must be between 1 and 10000, got 0"),
        (["--shards", "two"], ["--preset", "smoke"], "shards must be an integer between 1 and 10000, got 'two'"),
        (["--shards", "2", "--timeout-min", "0"], ["--preset", "smoke"], "timeout min on the command line must be"),
        (["--shards", "2"], ["--preset", "smoke", "--shard", "1/2"], "submit sets --shard for each shard itself"),
        (["--shards", "2"], ["--preset", "smoke", "--out", "x"], "submit sets --out for each shard itself"),
    ],
)
def test_submit_checks_its_options_and_the_run_options_before_submitting(capsys, tmp_path, own, run_args, message):
    submitted(capsys, tmp_path, [*own, "--local", "--out", str(tmp_path / "sweep"), "--", *run_args], message)


def test_submit_refuses_a_finished_sweep_and_names_the_commands_for_an_earlier_one(capsys, tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "merged").mkdir(parents=True)
    (sweep / "merged" / "results.jsonl").write_text("")
    argv = ["--shards", "2", "--local", "--out", str(sweep), "--", "--preset", "smoke"]
    submitted(capsys, tmp_path, argv, f"{sweep} already holds a finished sweep")
    (sweep / "merged" / "results.jsonl").unlink()
    (sweep / "shard-2").mkdir()
    (sweep / "shard-2" / "plan.json").write_text("{}")
    submitted(capsys, tmp_path, argv, f"python -m bench run --resume {sweep / 'shard-2'}")


def test_failed_shards_are_named_with_the_command_that_continues_each(tmp_path):
    class Job:
        def __init__(self, code):
            self.code = code

        def result(self):
            if isinstance(self.code, Exception):
                raise self.code
            return self.code

    class Executor:  # submitit's interface: map_array(function, arguments) -> jobs with result()
        def map_array(self, function, argvs):
            return [Job(0), Job(130), Job(RuntimeError("job 3 was killed\nby the scheduler"))]

    (tmp_path / "shard-2").mkdir()
    (tmp_path / "shard-2" / "plan.json").write_text("{}")  # shard 2 started its run: it can be resumed
    with pytest.raises(submit.ShardsFailed) as failure:
        submit.submit_shards(["--preset", "smoke"], 3, tmp_path, Executor())
    text = str(failure.value)
    assert "2 of 3 shard(s) did not finish" in text
    assert f"shard-2 (exit status 130): continue it with python -m bench run --resume {tmp_path / 'shard-2'}" in text
    assert "shard-3 (RuntimeError: by the scheduler): it made no run folder" in text
    assert not any(line.strip().startswith("shard-1") for line in text.splitlines())  # shard 1 finished
    assert f"python -m bench merge {tmp_path / 'merged'} {tmp_path / 'shard-1'}" in text
