"""Nothing lost, nothing hidden: torn records, signals, damaged runs, a gate that fails closed, typed
inputs. Real worker processes with the fake backend; every failure path is checked by its exit code,
its message and the files it leaves."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.config import Config
from bench.store.records import Record, RunStore, make_record, read_results
from tests.handmade import fake_env

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--models", "resnet20_cifar", "--modes", "infer", "--image-size", "32", "--device", "cpu",
         "--min-window-s", "0", "--warmup-steps", "0", "--timeout", "30"]  # fmt: skip


def as_from_a_terminal() -> None:
    """In the child: Ctrl-C and hang-up act by default, even when this test runs as a background job
    (whose shell starts it with SIGINT ignored, which the child would inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def bench(*args, **behaviour) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env=fake_env(**behaviour), capture_output=True, text=True
    )


_FINISHED: dict[tuple, Path] = {}  # one finished sweep per set of arguments, copied for each test that damages one


def finished_run(path: Path, batches="1,2,4", frameworks="torch", **behaviour) -> Path:
    """A finished fake sweep at `path`: made once per set of arguments in this process, then copied (a sweep is
    a few seconds of worker start-up; a dozen tests start from the same one and each damages its own copy)."""
    key = (batches, frameworks, tuple(sorted(behaviour.items())))
    if key not in _FINISHED:
        pristine = Path(tempfile.mkdtemp(prefix="finished-run-")) / "run"
        result = bench("run", *SMALL, "--frameworks", frameworks, "--batch-sizes", batches, "--out", str(pristine),
                       **behaviour)  # fmt: skip
        assert result.returncode == 0, result.stderr
        _FINISHED[key] = pristine
    shutil.copytree(_FINISHED[key], path, symlinks=True)
    return path


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- records that survive a crash ----------------------------------------------------------------


def test_a_torn_tail_is_set_aside_and_resume_loses_nothing(tmp_path):
    run = finished_run(tmp_path / "run")
    data = (run / "results.jsonl").read_bytes()
    body, last = data[:-1].rsplit(b"\n", 1)
    fragment = last[: len(last) // 2]
    (run / "results.jsonl").write_bytes(body + b"\n" + fragment)  # the crash: half of the last line

    report = bench("report", str(run))
    assert report.returncode == 0 and "line 3 is a torn record" in report.stderr
    assert "1 of the 3 planned configurations have no record" in (run / "report.md").read_text()

    resumed = bench("run", "--resume", str(run), "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert "moved to results.jsonl.torn" in resumed.stderr
    results = read_results(run / "results.jsonl")
    assert not results.problems and not results.torn_tail
    assert sorted(r.batch_size for r in results.records) == [1, 2, 4]
    assert (run / "results.jsonl.torn").read_bytes() == fragment + b"\n"
    assert "None: every one of the 3 planned configurations has a record" in (
        bench("report", str(run)) and (run / "report.md").read_text()
    )


def test_a_whole_record_without_its_newline_is_kept_and_not_glued_to(tmp_path):
    store = RunStore(tmp_path)
    first = make_record(Config("torch", "resnet20_cifar", 1, "infer"), "error", error="x")
    (tmp_path / "results.jsonl").write_text(json.dumps(first.to_json()))  # complete, but no newline
    store.append(make_record(Config("torch", "resnet20_cifar", 2, "infer"), "error", error="y"))
    assert [r.batch_size for r in read_results(store.results).records] == [1, 2]
    assert not store.torn.exists()


# --- signals ------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, seconds=60.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_records_print_the_resume_command_and_end_every_worker(tmp_path, signum, code):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "bench", "run", *SMALL, "--frameworks", "torch,tensorflow", "--batch-sizes",
            "1,2,4", "--out", str(out), "--no-report"]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=ROOT, env=fake_env(hang_batch=4), stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    assert wait_until(lambda: len(read_results(out / "results.jsonl").records) >= 4)
    workers = children_of(process.pid)
    assert len(workers) == 2  # one per framework, the torch one hanging at batch 4
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code
    assert f"interrupted by {signal.Signals(signum).name}: 4 records kept" in stderr and "--resume" in stderr
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 5)
    assert len(read_results(out / "results.jsonl").records) == 4


def test_ctrl_c_during_a_worker_start_up_ends_that_worker(tmp_path):
    args = [sys.executable, "-m", "bench", "run", *SMALL, "--frameworks", "torch", "--batch-sizes", "1",
            "--out", str(tmp_path / "run"), "--no-report"]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=ROOT, env=fake_env(start_delay_s=60), stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    assert wait_until(lambda: any((tmp_path / "run").glob("worker-torch*.log")))  # the worker is starting
    time.sleep(1.0)
    workers = children_of(process.pid)
    assert workers
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted by SIGINT" in stderr
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 5)


def test_a_runner_killed_outright_takes_its_workers_with_it(tmp_path):
    args = [sys.executable, "-m", "bench", "run", *SMALL, "--frameworks", "torch", "--batch-sizes", "1,2",
            "--out", str(tmp_path / "run"), "--no-report"]  # fmt: skip
    process = subprocess.Popen(args, cwd=ROOT, env=fake_env(hang_batch=2), stderr=subprocess.DEVNULL)
    assert wait_until(lambda: len(read_results(tmp_path / "run" / "results.jsonl").records) == 1)
    workers = children_of(process.pid)
    process.kill()
    process.wait()
    assert workers and wait_until(lambda: not any(alive(pid) for pid in workers), 5)


# --- damaged or foreign input: exit 2, a message, nothing rewritten ----------------------------------


def _drop_status(line: bytes) -> bytes:
    record = json.loads(line)
    del record["status"]
    return json.dumps(record).encode()


def _weird_status(line: bytes) -> bytes:
    return json.dumps({**json.loads(line), "status": "weird"}).encode()


def _wrong_type(line: bytes) -> bytes:
    return json.dumps({**json.loads(line), "throughput_img_s": "fast"}).encode()


def _non_utf8(line: bytes) -> bytes:
    return line[:10] + b"\xff" + line[11:]


def _other_plan(line: bytes) -> bytes:
    return json.dumps({**json.loads(line), "image_size": 64}).encode()


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop_status, "line 2: missing field(s) status"),
        (_weird_status, "line 2: status 'weird' is not one of ok, oom, error, timeout, skipped"),
        (_wrong_type, "line 2: throughput_img_s must be a number or null, got 'fast'"),
        (_non_utf8, "line 2: not UTF-8 (byte 10)"),
        (_other_plan, "not in its plan.json (lines 2)"),
    ],
)
def test_damaged_records_exit_2_in_report_compare_and_resume_and_nothing_is_rewritten(tmp_path, damage, message):
    run = finished_run(tmp_path / "run")
    lines = (run / "results.jsonl").read_bytes().split(b"\n")
    lines[1] = damage(lines[1])
    (run / "results.jsonl").write_bytes(b"\n".join(lines))
    before = snapshot(run)
    for args in (["report", str(run)], ["compare", str(run), str(run)], ["run", "--resume", str(run)]):
        result = bench(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert snapshot(run) == before


def test_an_invalid_plan_exits_2_on_resume_and_report(tmp_path):
    run = finished_run(tmp_path / "run")
    (run / "plan.json").write_text("{not json")
    before = snapshot(run)
    for args in (["run", "--resume", str(run)], ["report", str(run)]):
        result = bench(*args)
        assert result.returncode == 2 and "plan.json is not" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(run) == before


def test_an_unwritable_run_directory_prints_the_measured_record_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", "{}")
    real_append = RunStore.append
    calls = []

    def append(self, record):
        calls.append(record)
        if len(calls) > 1:
            raise PermissionError(13, "Permission denied")
        return real_append(self, record)

    monkeypatch.setattr(RunStore, "append", append)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--frameworks", "torch", "--batch-sizes", "1,2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot write to" in err and "Permission denied" in err and f"--resume {out}" in err
    printed = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert printed == [calls[1].to_json()] and printed[0]["batch_size"] == 2 and printed[0]["status"] == "ok"


def test_retry_errors_measures_failed_configurations_again_and_keeps_the_old_record(tmp_path):
    run = finished_run(tmp_path / "run", kill_batch=2)
    assert [r.status for r in read_results(run / "results.jsonl").records] == ["ok", "error", "ok"]
    assert "0 error/timeout" not in bench("run", "--resume", str(run), "--no-report").stderr
    assert len(read_results(run / "results.jsonl").records) == 3  # a plain resume does not retry
    retried = bench("run", "--resume", str(run), "--retry-errors", "--no-report")
    assert retried.returncode == 0 and "1 error/timeout record(s) measured again" in retried.stderr
    records = read_results(run / "results.jsonl").records
    assert [(r.batch_size, r.status) for r in records] == [(1, "ok"), (2, "error"), (4, "ok"), (2, "ok")]
    assert bench("report", str(run)).returncode == 0
    report = (run / "report.md").read_text()
    assert "1 earlier attempt(s) were measured again" in report and "None: every recorded configuration" in report


# --- the regression gate fails closed ---------------------------------------------------------------


def hand_run(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    store = RunStore(path)
    store.results.touch()
    for record in records:
        store.append(record)
    return path


def ok(batch, img_s=100.0):
    return make_record(
        Config("torch", "resnet20_cifar", batch, "infer"), "ok", throughput_img_s=img_s,
        throughput_min_img_s=img_s * 0.99, throughput_max_img_s=img_s * 1.01,
    )  # fmt: skip


def failed(batch):
    return make_record(Config("torch", "resnet20_cifar", batch, "infer"), "error", error="worker killed by SIGKILL")


@pytest.mark.parametrize(
    "candidate, reason",
    [
        ([], "the candidate has no successful measurement (0 record(s))"),
        ([failed(1), failed(2)], "2 configuration(s) failed in the candidate but ran in the baseline"),
        ([ok(1)], "1 configuration(s) of the baseline are missing from the candidate"),
        ([ok(1), ok(2, img_s=50.0)], "1 regression(s) beyond 10% and the spread"),
    ],
)
def test_the_regression_gate_fails_closed(tmp_path, capsys, candidate, reason):
    baseline = hand_run(tmp_path / "a", [ok(1), ok(2)])
    run_b = hand_run(tmp_path / "b", candidate)
    assert main(["compare", str(baseline), str(run_b), "--fail-on-regression", "10"]) == 1
    err = capsys.readouterr().err
    assert "regression gate FAILED" in err and reason in err


def test_the_regression_gate_passes_an_equal_candidate(tmp_path, capsys):
    baseline = hand_run(tmp_path / "a", [ok(1), ok(2)])
    candidate = hand_run(tmp_path / "b", [ok(1), ok(2, 99.5)])
    assert main(["compare", str(baseline), str(candidate), "--fail-on-regression", "10"]) == 0
    assert "regression gate passed: 2 configuration(s)" in capsys.readouterr().err


# --- typed, ranged inputs: exit 2 before any work -------------------------------------------------------


@pytest.mark.parametrize(
    "toml, message",
    [
        ('batch_sizes = "24"', "batch_sizes in preset file"),
        ('models = "resnet20_cifar"', "models in preset file"),
        ('tf32 = "false"', "tf32 in preset file"),
        ("batch_sizes = 8", "must be a list such as [1, 8], got 8"),
        ('seed = "abc"', "seed in preset file"),
        ("threads = 1.7", "threads in preset file"),
        ("batch_sizes = []", "batch_sizes in preset file"),
        ("image_size = 100000", "must be between 1 and 4096"),
    ],
)
def test_preset_files_are_checked_by_type_and_range(tmp_path, capsys, toml, message):
    preset = tmp_path / "p.toml"
    preset.write_text(toml + "\n")
    assert main(["run", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "100000"], "image size on the command line must be between 1 and 4096"),
        (["--image-size", "4096", "--batch-sizes", "256"], "more than this machine's"),
        (["--timeout", "inf"], "timeout s on the command line must be a finite number, got inf"),
        (["--min-window-s", "inf"], "must be a finite number"),
        (["--min-window-s", "nan"], "must be a finite number"),
        (["--threads", "100000"], f"threads on the command line must be between 0 and {os.cpu_count()}"),
        (["--threads", "1.7"], f"threads must be an integer between 0 and {os.cpu_count()}, got '1.7'"),
        (["--warmup-steps", "1e12"], "warmup steps must be an integer between 0 and 10000, got '1e12'"),
        (["--warmup-steps", "100001"], "between 0 and 10000"),
        (["--batch-sizes", "1,,2"], "batch sizes on the command line has an empty item in '1,,2'"),
        (["--seed", "abc"], "seed must be an integer between 0 and 4294967295, got 'abc'"),
        (["--device", "tpu"], "valid devices: auto, cpu, cuda"),
        (["--retry-errors"], "--retry-errors applies to --resume RUN_DIR only"),
    ],
)
def test_command_line_values_are_checked_by_type_and_range(tmp_path, capsys, args, message):
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_options_that_would_change_the_plan(tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    assert main(["run", "--resume", str(run), "--batch-sizes", "8", "--threads", "1"]) == 2
    assert "it cannot change --batch-sizes, --threads" in capsys.readouterr().err
    assert snapshot(run) == before


def test_the_old_profile_flag_still_works_with_a_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    out = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--frameworks", "torch", "--modes", "infer", "--batch-sizes", "2",
                 "--min-window-s", "0", "--device", "cpu", "--out", str(out), "--no-report"]) == 0  # fmt: skip
    assert "--profile is now --preset" in capsys.readouterr().err
    assert json.loads((out / "plan.json").read_text())["preset"] == "smoke"
    legacy = json.loads((out / "plan.json").read_text())
    legacy["profile"] = legacy.pop("preset")  # a run made before the rename
    (out / "plan.json").write_text(json.dumps(legacy))
    assert main(["report", str(out)]) == 0


# --- pytest-benchmark options --------------------------------------------------------------------


def benchmark_suite(tmp_path, *options) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "out.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/benchmarks", "--benchmark-only", "-q", "-p", "no:cacheprovider",
         "-k", "torch and resnet20 and infer", "--benchmark-json", str(out), *options],
        cwd=ROOT, env=fake_env(step_ms_per_image=0.5), capture_output=True, text=True,
    )  # fmt: skip
    benchmarks = json.loads(out.read_text())["benchmarks"] if out.exists() else []
    return result, benchmarks


def test_benchmark_min_rounds_and_max_time_set_the_worker_rounds(tmp_path):
    result, (bench_,) = benchmark_suite(tmp_path, "--benchmark-min-rounds", "7", "--benchmark-max-time", "0.000001")
    assert result.returncode == 0, result.stdout + result.stderr
    assert bench_["stats"]["rounds"] == 7 and bench_["extra_info"]["applied"]["rounds"] == 7
    result, (bench_,) = benchmark_suite(tmp_path, "--benchmark-min-rounds", "2", "--benchmark-max-time", "0.1")
    rounds = bench_["stats"]["rounds"]  # steps of 4 ms (8 images x 0.5 ms): about 25 rounds fill 0.1 s
    assert 15 <= rounds <= 26 and bench_["stats"]["total"] >= 0.1 * 0.9


def test_benchmark_warmup_and_disable_gc_are_applied_in_the_worker(tmp_path):
    result, (bench_,) = benchmark_suite(
        tmp_path, "--benchmark-warmup", "on", "--benchmark-warmup-iterations", "4", "--benchmark-disable-gc"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    applied = bench_["extra_info"]["applied"]
    assert applied["benchmark_warmup_rounds"] == 4 and applied["gc_disabled_in_worker"] is True


def test_benchmark_disable_runs_one_honest_round(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/benchmarks", "--benchmark-disable", "-q", "-p", "no:cacheprovider",
         "-k", "torch and resnet20 and infer"],
        cwd=ROOT, env=fake_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_options_the_suite_cannot_honour_are_refused(tmp_path):
    result, _ = benchmark_suite(tmp_path, "--benchmark-timer", "time.process_time")
    assert result.returncode == 4 and "cannot honour: --benchmark-timer" in result.stderr


def test_benchmark_histogram_writes_its_chart(tmp_path):
    pytest.importorskip("pygal", reason="pytest-benchmark[histogram] is not installed in this environment")
    result, _ = benchmark_suite(tmp_path, "--benchmark-histogram", str(tmp_path / "hist"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(tmp_path.glob("hist*.svg"))


def test_the_suite_picks_cuda_when_a_gpu_is_found_and_names_the_device(tmp_path, monkeypatch):
    """The CUDA path is chosen (not run here): with a GPU found, or forced, every test id and record says cuda."""
    import bench.config.options
    from tests.benchmarks.conftest import suite_device

    monkeypatch.delenv("CNN_BENCH_DEVICE", raising=False)
    monkeypatch.setattr(bench.config.options, "detect_gpu", lambda: "NVIDIA H100 80GB HBM3")
    assert suite_device() == "cuda"
    monkeypatch.setattr(bench.config.options, "detect_gpu", lambda: None)
    assert suite_device() == "cpu"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/benchmarks", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env={**fake_env(), "CNN_BENCH_DEVICE": "cuda"}, capture_output=True, text=True,
    )  # fmt: skip
    ids = [line for line in collected.stdout.splitlines() if "test_step[" in line]
    assert ids and all("test_step[cuda-" in line for line in ids), collected.stdout[-2000:]


def test_each_suite_record_carries_its_device_size_and_cores(tmp_path):
    result, (bench_,) = benchmark_suite(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[cpu-torch-resnet20_cifar-32-8-infer]" in bench_["name"]
    extra = bench_["extra_info"]
    assert extra["device"] == "cpu" and extra["image_size"] == 32
    record = Record.from_json(extra["record"])  # the JSON of a complete record
    assert (record.device, record.image_size) == ("cpu", 32) and record.env["cpu_cores"] >= 1


# --- readers: what is not a run, or not a usable benchmark file, is refused and nothing is written -------


def folder_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def not_a_run(tmp_path: Path, kind: str) -> tuple[Path, str]:
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "profile":
        (folder / "profile.json").write_text('{"request": {}, "results": []}\n')
        return folder, "it holds a profile"
    if kind == "scaling":
        (folder / "scaling.jsonl").write_text('{"engine": "torch"}\n')
        return folder, "it holds a scaling study"
    return folder, "no plan.json or results.jsonl"


@pytest.mark.parametrize("kind", ["empty", "profile", "scaling"])
def test_report_and_compare_refuse_a_folder_that_is_not_a_run_and_write_nothing(tmp_path, capsys, kind):
    folder, message = not_a_run(tmp_path, kind)
    run = hand_run(tmp_path / "run", [ok(1)])
    for argv in (["report", str(folder)], ["compare", str(run), str(folder)], ["compare", str(folder), str(run)]):
        before = folder_state(tmp_path)
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{folder} is not a run folder" in err and message in err
        assert folder_state(tmp_path) == before


def benchmark_file(tmp_path: Path, benchmarks: list, **top) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine_info": {"node": "h"}, "benchmarks": benchmarks, **top}))
    return path


def entry(name: str, extra) -> dict:
    return {"name": name, "extra_info": extra}


@pytest.mark.parametrize(
    "benchmarks, top, messages",
    [
        (
            [entry("a", {"record": ok(1).to_json()}), entry("b", {}), entry("c", {"record": ok(2).to_json()})],
            {},
            ["benchmark 1 (b): no extra_info.record"],
        ),
        (
            [entry("a", "fast"), "not an entry", entry("c", {"record": "x"})],
            {},
            [
                "benchmark 0 (a): extra_info must be an object holding the record, got str",
                "benchmark 1: must be an object, got str",
                "benchmark 2 (c): a record is a JSON object, got str",
            ],
        ),
        ([entry("a", {"record": ok(1).to_json()})], {"machine_info": "box"}, ["machine_info must be an object"]),
        ([entry("a", {"record": ok(1).to_json()})], {"commit_info": []}, ["commit_info must be an object, got list"]),
        ([], {}, ["benchmarks is empty"]),
    ],
)
def test_a_pytest_benchmark_file_is_checked_whole_and_every_unusable_entry_named(
    tmp_path, capsys, benchmarks, top, messages
):
    path = benchmark_file(tmp_path, benchmarks, **top)
    before = folder_state(tmp_path)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "has unusable entries; nothing was written" in err and "Traceback" not in err
    assert all(message in err for message in messages), err
    assert folder_state(tmp_path) == before


def test_a_complete_pytest_benchmark_file_still_reports(tmp_path, capsys):
    path = benchmark_file(tmp_path, [entry("a", {"record": ok(1).to_json()}), entry("b", {"record": ok(2).to_json()})])
    assert main(["report", str(path)]) == 0
    assert "| resnet20_cifar" in (tmp_path / "bench-report" / "report.md").read_text()


# --- writers: exit 1 with a message, never a 0-byte or half-written file -------------------------------


class FullDisk:
    """bench.store.atomic's one write call, failing as a disk that fills: `room` calls go through, the next
    writes half its bytes, and every later one raises ENOSPC."""

    def __init__(self, room: int):
        self.room, self.calls = room, 0

    def __call__(self, descriptor, data):
        import errno

        self.calls += 1
        if self.calls <= self.room:
            return os.write(descriptor, data)
        if self.calls == self.room + 1 and len(data) > 1:
            return os.write(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def count_writes(monkeypatch, action) -> int:
    import bench.store.atomic

    counter = FullDisk(10**9)
    monkeypatch.setattr(bench.store.atomic, "_write", counter)
    action()
    monkeypatch.undo()
    return counter.calls


def assert_whole(folder: Path) -> None:
    """No 0-byte file, no temporary file, and every JSON and JSON-lines file parses to its end (workers'
    logs aside: a worker that printed nothing leaves an empty log)."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".log":
            assert path.stat().st_size > 0, path
            assert not path.name.endswith(".tmp"), path
            if path.suffix == ".json":
                json.loads(path.read_text())
            if path.suffix == ".jsonl":
                assert path.read_bytes().endswith(b"\n"), path
                [json.loads(line) for line in path.read_text().splitlines()]


def test_report_on_a_full_disk_exits_1_and_leaves_the_earlier_report_whole(tmp_path, monkeypatch, capsys):
    import bench.store.atomic

    run = finished_run(tmp_path / "run")  # its report is rendered: report.md, summary.csv, plots
    before = folder_state(run)
    writes = count_writes(monkeypatch, lambda: main(["report", str(run)]))
    assert writes >= 3
    for room in range(writes):
        monkeypatch.setattr(bench.store.atomic, "_write", FullDisk(room))
        assert main(["report", str(run)]) == 1
        err = capsys.readouterr().err
        assert "cannot write" in err and "No space left on device" in err and "Traceback" not in err
        assert_whole(run)
        changed = {name for name, data in folder_state(run).items() if before.get(name) != data}
        assert changed <= {name for name in before if name.endswith(".png")} | {"summary.csv", "report.html"}  # whole
        assert folder_state(run)["report.md"] == before["report.md"]  # the last one written: never half of it


def test_resume_on_a_full_disk_exits_1_and_leaves_no_half_record(tmp_path, monkeypatch, capsys):
    import bench.store.atomic

    run = finished_run(tmp_path / "run")
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    (run / "results.jsonl").write_bytes(b"".join(lines[:-1]))  # stopped before its last record
    before = folder_state(run)
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    # env.json's open segment goes through; the record's line is half written, then ENOSPC, and so is env.json's
    # closing write (its open segment stays: the run was not finished).
    monkeypatch.setattr(bench.store.atomic, "_write", FullDisk(1))
    assert main(["run", "--resume", str(run), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"--resume {run}" in err
    after = folder_state(run)
    assert after["results.jsonl"] == before["results.jsonl"]  # cut back to the last whole record
    assert json.loads(after["env.json"])["segments"][-1]["outcome"] == "running"
    assert {k: v for k, v in after.items() if not k.startswith("worker-") and k != "env.json"} == {
        k: v for k, v in before.items() if not k.startswith("worker-") and k != "env.json"
    }


def test_a_results_file_replaced_by_a_folder_exits_1_on_resume_and_2_on_report(tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    (run / "results.jsonl").unlink()
    (run / "results.jsonl").mkdir()
    before = folder_state(run)
    assert main(["run", "--resume", str(run)]) == 1
    assert "results.jsonl: it is not a file" in capsys.readouterr().err
    assert main(["report", str(run)]) == 2
    assert "its results.jsonl is not a file" in capsys.readouterr().err
    assert folder_state(run) == before


@pytest.mark.parametrize("target", ["/sys/cnn-bench-report", "file"])
def test_report_into_an_unwritable_out_exits_1(tmp_path, capsys, target):
    run = hand_run(tmp_path / "run", [ok(1)])
    out = tmp_path / "a-file" if target == "file" else Path(target)
    if target == "file":
        out.write_text("keep\n")
    assert main(["report", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot") and "Traceback" not in err
    if target == "file":
        assert out.read_text() == "keep\n"
    else:
        assert not out.exists()


@pytest.mark.parametrize("target", ["/sys/compare.md", "folder"])
def test_compare_into_an_unwritable_out_exits_1(tmp_path, capsys, target):
    run = hand_run(tmp_path / "run", [ok(1)])
    out = tmp_path / "folder" if target == "folder" else Path(target)
    if target == "folder":
        out.mkdir()
    assert main(["compare", str(run), str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "Traceback" not in err
    assert not out.exists() if target != "folder" else list(out.iterdir()) == []


def test_merge_into_a_file_exits_1_and_leaves_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    shard = tmp_path / "s1"
    assert main(["run", *SMALL, "--frameworks", "torch", "--batch-sizes", "1", "--shard", "1/1", "--out", str(shard),
                 "--no-report"]) == 0  # fmt: skip
    target = tmp_path / "merged"
    target.write_text("keep\n")
    assert main(["merge", str(target), str(shard)]) == 1
    assert "it exists and is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep\n"


def no_engine(engine, task, request, out, timeout_s):
    """An engine's worker that failed: the study still writes its JSON and report, with the error."""
    return {"engine": engine, "error": "worker exited with 1: stopped for the test"}


def test_gradient_flow_on_a_full_disk_exits_1_whole_files_only_and_runs_again_there(tmp_path, monkeypatch, capsys):
    import bench.store.atomic
    import bench.studies.profiling.run

    monkeypatch.setattr(bench.studies.profiling.run, "run_engine", no_engine)
    argv = ["gradient-flow", "--depths", "8", "--steps", "1", "--batch-size", "2"]
    counter = FullDisk(10**9)
    monkeypatch.setattr(bench.store.atomic, "_write", counter)
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    writes = counter.calls
    assert writes == 3  # gradient_flow.json, .csv, .md
    for room in range(writes):
        out = tmp_path / f"full-{room}"
        monkeypatch.setattr(bench.store.atomic, "_write", FullDisk(room))
        assert main([*argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        assert_whole(out)
        monkeypatch.setattr(bench.store.atomic, "_write", os.write)
        assert main([*argv, "--out", str(out)]) == 0  # the folder is not taken by the study that failed
        report = (out / "gradient_flow.md").read_text()
        assert "stopped for the test" in report and report.rstrip().endswith("No engine produced figures.")
        assert all(
            "stopped for the test" in r["error"]
            for r in json.loads((out / "gradient_flow.json").read_text())["results"]
        )
        capsys.readouterr()


def test_scale_on_a_full_disk_exits_1_with_whole_files_only(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    import bench.store.atomic
    import bench.studies.scaling.scaling as scaling
    from implementations import get_spec
    from implementations.lowering import params_count

    def failed_job(engine, model, replicas, request, out):  # a job whose ranks all exited with 1, as measure says
        base = scaling.ScaleRecord(engine=engine, model=model, replicas=replicas, nodes=1, batch_per_replica=2,
                                   global_batch=2 * replicas, image_size=32, device="cpu", strategy="x", status="error",
                                   gradient_bytes=4 * params_count(get_spec(model)))  # fmt: skip
        return replace(base, error="exit codes [1]; stopped for the test")

    monkeypatch.setattr(scaling, "measure", failed_job)
    argv = ["scale", "--frameworks", "torch", "--replicas", "2", "--batch-size", "2"]
    counter = FullDisk(10**9)
    monkeypatch.setattr(bench.store.atomic, "_write", counter)
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    assert counter.calls == 7  # env.json (open, then closed), scale_request.json, 2 records, scaling.csv, scaling.md
    for room in range(counter.calls):
        out = tmp_path / f"full-{room}"
        monkeypatch.setattr(bench.store.atomic, "_write", FullDisk(room))
        assert main([*argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        assert_whole(out)
        if not (out / "scaling.jsonl").exists():  # no record was kept: the folder takes the study again
            monkeypatch.setattr(bench.store.atomic, "_write", os.write)
            assert main([*argv, "--out", str(out)]) == 0
            capsys.readouterr()


# --- the timeout bounds a whole configuration ---------------------------------------------------------


def test_the_timeout_covers_a_configurations_prepare_windows_and_finish_together(tmp_path):
    # Seven windows (one discarded) of at least 0.5 s: each request well inside 2 s, the whole well past it.
    result = bench("run", *SMALL[:-2], "--frameworks", "torch", "--batch-sizes", "2", "--windows", "6",
                   "--min-window-s", "0.5", "--timeout", "2", "--out", str(tmp_path / "run"), "--no-report",
                   step_ms_per_image=5)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = read_results(tmp_path / "run" / "results.jsonl").records
    assert record.status == "timeout"
    assert "of its 2 s (prepare, windows and finish together) (--timeout 2)" in record.error
