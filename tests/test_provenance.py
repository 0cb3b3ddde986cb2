"""Every run and study records its start, end and wall time and the git state beside its commit: a run's
env.json at its start and again at its end (also when stopped or crashed), a resumed run as a second segment,
and the studies' JSON through the same `stamp`."""

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.store import provenance
from bench.store.atomic import write_json
from bench.store.provenance import git_state, stamp

SMOKE = ["run", "--preset", "smoke", "--frameworks", "torch", "--modes", "infer", "--no-report"]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", "{}")


def _env(run: Path) -> dict:
    return json.loads((run / "env.json").read_text())


def _seconds(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


def test_a_run_records_its_start_end_wall_time_and_git_state(tmp_path, fake):
    out = tmp_path / "run"
    assert main([*SMOKE, "--out", str(out)]) == 0
    env = _env(out)
    assert env["wall_s"] > 0 and _seconds(env["start"]) <= _seconds(env["end"])
    # the wall time is the run's, not a rounding of the ISO stamps: the two agree within their 1 s resolution
    assert abs((_seconds(env["end"]) - _seconds(env["start"])) - env["wall_s"]) <= 1.5
    here = git_state()  # a checkout: the commit and a boolean; outside git (an unpacked sdist): both null
    assert env["git_commit"] == here["git_commit"] and env["git_modified"] in (
        (None,) if here["git_commit"] is None else (True, False)
    )
    (segment,) = env["segments"]
    assert segment["outcome"] == "completed" and segment["wall_s"] == env["wall_s"]
    assert segment["command"].startswith("python -m bench ") and segment["git_commit"] == env["git_commit"]
    assert not list(out.glob(".env.json.*")), "the atomic write left its temporary file behind"


def test_a_resumed_run_appends_its_own_segment_and_keeps_the_first(tmp_path, fake):
    out = tmp_path / "run"
    assert main([*SMOKE, "--batch-sizes", "2,4", "--out", str(out)]) == 0
    first = _env(out)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0] + "\n")  # as if stopped after the first configuration
    assert main(["run", "--resume", str(out), "--no-report"]) == 0
    env = _env(out)
    assert [s["start"] for s in env["segments"]][:1] == [first["segments"][0]["start"]]
    assert len(env["segments"]) == 2 and env["segments"][1]["outcome"] == "completed"
    assert env["start"] == first["start"] and env["end"] == env["segments"][1]["end"]
    assert env["wall_s"] == pytest.approx(sum(s["wall_s"] for s in env["segments"]), abs=1e-3)
    assert env["time"] == first["time"]  # the first segment's host and commit fields are kept, not overwritten


def test_an_interrupted_run_records_its_end_and_how_it_ended(tmp_path, fake, monkeypatch):
    from bench.execute.runner import Runner

    def stop(self, retry_errors=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", stop)
    out = tmp_path / "run"
    assert main([*SMOKE, "--out", str(out)]) == 130
    (segment,) = _env(out)["segments"]
    assert segment["outcome"] == "interrupted by SIGINT (exit 130)" and segment["end"] and segment["wall_s"] >= 0


def test_a_crashed_run_records_what_is_known(tmp_path, fake, monkeypatch):
    from bench.execute.runner import Runner

    def crash(self, retry_errors=False):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(Runner, "run", crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        main([*SMOKE, "--out", str(out)])
    env = _env(out)
    assert env["segments"][0]["outcome"] == "failed: RuntimeError: the disk caught fire"
    assert env["end"] is not None and env["wall_s"] is not None


def test_a_segment_still_running_has_no_end_and_a_killed_one_stays_so():
    segment = provenance.Segment("python -m bench run")
    env = stamp({"time": "2026-01-01T00:00:00+00:00"}, segment.open())
    assert env["end"] is None and env["wall_s"] is None and env["segments"][0]["outcome"] == "running"
    assert env["start"] == "2026-01-01T00:00:00+00:00"  # an older env.json's time is its start
    ended = stamp(env, segment.closed("completed"))
    assert len(ended["segments"]) == 1 and ended["segments"][0]["outcome"] == "completed"


def test_the_wall_so_far_counts_the_running_last_segment_and_not_one_that_died_unrecorded():
    def ago(seconds):
        return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)).isoformat()

    running = {"start": ago(100), "wall_s": None, "outcome": "running"}
    died = {"start": ago(10_000), "wall_s": None, "outcome": "running"}
    ended = {"start": ago(20_000), "wall_s": 50.0, "outcome": "completed"}
    assert provenance.wall_so_far({"segments": [ended, running]}) == pytest.approx(150, abs=5)
    assert provenance.wall_so_far({"segments": [died, ended]}) == 50.0  # the dead segment's time is unknown
    assert provenance.wall_so_far({"segments": [died, running]}) == pytest.approx(100, abs=5)
    assert provenance.wall_so_far({"wall_s": 7.0}) == 7.0 and provenance.wall_so_far({}) is None


def test_env_json_is_replaced_atomically(tmp_path):
    path = tmp_path / "env.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # fails while writing: the old file stays whole
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_modified_ignores_results_and_sees_any_other_change(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert git_state(tmp_path)["git_modified"] is False and len(git_state(tmp_path)["git_commit"]) == 40
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "new-run.json").write_text("{}")
    assert git_state(tmp_path)["git_modified"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_modified"] is True
    assert git_state(tmp_path / "nowhere") == {"git_commit": None, "git_modified": None}


def test_a_profile_study_json_carries_the_same_fields(tmp_path, monkeypatch):
    from bench.studies.profiling import run as profiling

    monkeypatch.setattr(profiling, "run_engine", lambda engine, *rest: {"engine": engine, "error": "not here"})
    request = profiling.GradientFlowRequest(models=("resnet20_cifar",), engines=("torch",))
    data = profiling._each_engine("gradient_flow", "test", request, tmp_path, 10.0, say=lambda text: None)
    written = json.loads((tmp_path / "gradient_flow.json").read_text())
    assert written["env"] == data["env"]
    assert written["env"]["wall_s"] >= 0 and written["env"]["end"] and "git_modified" in written["env"]
    assert written["env"]["segments"][0]["outcome"] == "completed"


def test_the_overhead_json_carries_them_beside_its_results(tmp_path, monkeypatch):
    from bench.studies import overhead

    result = {"framework": "torch", "env": {}, "cases": [], "noop_step_us": 0.07}

    def fake_run(engine, task, request, log, scratch, timeout_s, empty=None):
        assert (engine, task) == ("torch", "overhead")
        return result

    monkeypatch.setattr("bench.execute.tasks.run", fake_run)  # the one task entry: no benchmark runs here
    monkeypatch.setattr("implementations.is_installed", lambda framework: True)
    path = tmp_path / "overhead.json"
    assert overhead.main(["--frameworks", "torch", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["results"] == [result]
    assert data["env"]["command_line"] == f"python -m bench.studies.overhead --frameworks torch --json {path}"
    assert data["env"]["wall_s"] >= 0 and data["env"]["segments"][0]["outcome"] == "completed"


def test_a_scaling_folder_env_json_gets_its_end(tmp_path, monkeypatch):
    from bench.studies.scaling import scaling, scaling_report

    monkeypatch.setattr(scaling, "run_scaling", lambda request, out, say: [])
    monkeypatch.setattr(scaling_report, "write_scaling_report", lambda out, env: _write(out / "scaling.md"))
    out = tmp_path / "scale"
    assert main(["scale", "--models", "resnet8_cifar", "--out", str(out)]) == 0
    env = _env(out)
    assert env["end"] and env["wall_s"] >= 0 and env["segments"][0]["outcome"] == "completed"


def _write(path: Path) -> Path:
    path.write_text("# scaling\n")
    return path


def test_a_run_through_the_command_line_process_records_its_segment(tmp_path):
    """The real entry point (python -m bench), in its own process."""
    out = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    env = {"CNN_BENCH_BACKEND": "fake", "CNN_BENCH_FAKE": "{}", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "bench", *SMOKE, "--out", str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (segment,) = _env(out)["segments"]
    assert (
        segment["outcome"] == "completed"
        and segment["command"] == "python -m bench " + " ".join(SMOKE) + f" --out {out}"
    )
