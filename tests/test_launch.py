"""One launcher, one writer per folder: every child of the harness, at any depth and in whatever session
it made for itself, ends with it (SIGTERM, SIGINT, SIGKILL), and a second writer of a folder stops with
exit status 2 naming the first. Real processes, checked by PID from /proc; the fake backend where the
command allows it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.execute import launch
from bench.store import folders
from bench.store.records import read_results
from tests.handmade import fake_env

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--models", "resnet20_cifar", "--modes", "infer", "--image-size", "32", "--device", "cpu",
         "--min-window-s", "0", "--warmup-steps", "0", "--timeout", "60", "--frameworks", "torch"]  # fmt: skip
EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -9}


def as_from_a_terminal() -> None:
    """In the child: Ctrl-C acts by default even when the tests run as a background job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


ROOTS: dict[int, str] = {}  # PID -> "PID:START" of each process `start` made, as its children name it


def start(*args, module="bench", env=None) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env or fake_env(),
                               stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)  # fmt: skip
    ROOTS[process.pid] = launch.identity(process.pid)
    return process


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rooted_at(identity: str) -> list[int]:
    """Live processes anywhere whose environment names `identity` ("PID:START") as the harness's root."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and launch.alive(int(entry.name)):
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"{launch.ROOT_ENV}={identity}".encode() in environ:
                found.append(int(entry.name))
    return found


def wait_until(condition, seconds: float = 60.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def running(process: subprocess.Popen, module: str, count: int = 1) -> list[int] | None:
    """The process's descendants once `count` of them run `module`, else None."""
    below = launch.descendants(process.pid)
    return below if sum(module in command_line(p) for p in below) >= count else None


def check_stopped(process: subprocess.Popen, signum: int, below: list[int]) -> str:
    """After `signum`: the exit status a shell would report, no traceback, and no descendant left, neither
    one seen before the signal nor any other process that names it as its root. Its stderr."""
    identity = ROOTS[process.pid]
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT[signum], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert wait_until(lambda: not any(launch.alive(p) for p in below), 10), [command_line(p) for p in below]
    assert wait_until(lambda: not rooted_at(identity), 10), [command_line(p) for p in rooted_at(identity)]
    if signum != signal.SIGKILL:
        assert f"interrupted by {signal.Signals(signum).name}: " in stderr, stderr[-3000:]
    return stderr


def stop_when_running(process: subprocess.Popen, signum: int, module: str, count: int = 1, seconds=120.0) -> str:
    """Send `signum` once `count` descendants run `module`, then check_stopped."""
    assert wait_until(lambda: running(process, module, count) is not None, seconds)
    below = running(process, module, count) or []
    process.send_signal(signum)
    return check_stopped(process, signum, below)


# --- the launcher ---------------------------------------------------------------------------------


def test_reaping_a_child_ends_descendants_that_made_sessions_of_their_own():
    grandchild = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); time.sleep(60)"  # fmt: skip
    process = launch.start([sys.executable, "-c", grandchild])
    assert wait_until(lambda: launch.descendants(process.pid), 20)
    (below,) = launch.descendants(process.pid)
    assert wait_until(lambda: os.getsid(below) == below, 5)  # a session of its own: killpg would miss it
    assert os.getsid(process.pid) == process.pid != below  # and the child's own, not this process's
    assert launch.reap(process) == -signal.SIGKILL
    assert wait_until(lambda: not launch.alive(below), 5)
    assert process.pid not in launch._live


# --- one writer per folder --------------------------------------------------------------------------


def test_a_second_writer_of_a_run_folder_exits_2_naming_the_first_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = start("run", *SMALL, "--batch-sizes", "1,2", "--out", str(out), "--no-report", env=fake_env(hang_batch=2))
    try:
        assert wait_until(lambda: len(read_results(out / "results.jsonl").records) == 1)
        before = {name: (out / name).read_bytes() for name in ("plan.json", "results.jsonl")}
        for args in (
            ["run", *SMALL, "--batch-sizes", "1,2", "--out", str(out)],  # the same plan
            ["run", *SMALL, "--batch-sizes", "4", "--out", str(out)],  # another plan
            ["run", "--resume", str(out)],
        ):
            second = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=fake_env(),
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert f"is being written by PID {first.pid} (" in second.stderr and "bench run" in second.stderr
        assert {name: (out / name).read_bytes() for name in before} == before
    finally:
        first.kill()
        first.wait()
    # killed outright, the first left its lock file; the lock itself died with it: taken over, with a note
    assert json.loads((out / ".lock").read_text())["pid"] == first.pid
    resumed = subprocess.run([sys.executable, "-m", "bench", "run", "--resume", str(out), "--no-report"], cwd=ROOT,
                             env=fake_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"was left by PID {first.pid}" in resumed.stderr and "taken over" in resumed.stderr
    assert sorted(r.batch_size for r in read_results(out / "results.jsonl").records) == [1, 2]
    assert not (out / ".lock").exists()  # a clean exit removes it


@pytest.mark.parametrize(
    "args",
    [
        ["scale", "--frameworks", "torch", "--out", "{out}"],
        ["profile", "resnet20_cifar", "--frameworks", "torch", "--device", "cpu", "--out", "{out}"],
        ["gradient-flow", "--depths", "20", "--frameworks", "torch", "--out", "{out}"],
    ],
    ids=["scale", "profile", "gradient-flow"],
)
def test_every_writing_command_refuses_a_folder_another_process_holds(tmp_path, capsys, args):
    out = tmp_path / "out"
    folders.hold(out)
    try:
        assert main([a.format(out=out) for a in args]) == 2
    finally:
        folders.release_all()
    assert f"{out} is being written by PID {os.getpid()} (" in capsys.readouterr().err
    assert not out.exists()  # made for the lock and removed with it, as it is empty: nothing was written


# --- signals: no descendant left -------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT], ids=lambda s: s.name)
def test_profile_stopped_by_a_signal_leaves_no_worker_and_no_profile(tmp_path, signum):
    out = tmp_path / "profile"
    process = start("profile", "resnet20_cifar", "--frameworks", "torch", "--device", "cpu", "--batch-size", "2",
                    "--windows", "6", "--min-window-s", "0", "--out", str(out))  # fmt: skip
    stderr = stop_when_running(process, signum, "bench.execute.tasks")
    if signum != signal.SIGKILL:
        assert f"nothing written to {out}" in stderr
    assert not (out / "profile.json").exists() and not (out / "profile.md").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_gradient_flow_stopped_by_a_signal_leaves_no_worker(tmp_path, signum):
    out = tmp_path / "flow"
    process = start("gradient-flow", "--depths", "20", "--frameworks", "torch", "--batch-size", "2", "--steps", "1",
                    "--out", str(out))  # fmt: skip
    stop_when_running(process, signum, "bench.execute.tasks")
    assert not (out / "gradient_flow.json").exists()


def test_scale_stopped_by_sigterm_or_sigkill_leaves_neither_torchrun_nor_a_rank(tmp_path):
    """Two runs side by side (the 1-replica baseline comes first in each): each is signalled once its
    two DDP ranks, which torchrun starts in sessions of their own, are running."""
    args = ["scale", "--frameworks", "torch", "--models", "resnet8_cifar", "--image-size", "8", "--replicas", "2",
            "--batch-size", "2", "--windows", "6", "--min-window-s", "0.01", "--timeout", "120"]  # fmt: skip
    processes = {
        signum: start(*args, "--out", str(tmp_path / signum.name)) for signum in (signal.SIGTERM, signal.SIGKILL)
    }
    seen = {}
    try:
        deadline = time.time() + 240
        while len(seen) < len(processes) and time.time() < deadline:
            for signum, process in processes.items():
                below = [] if signum in seen else launch.descendants(process.pid)
                ranks = [p for p in below if _is_rank(p)]
                if len(ranks) == 2:
                    process.send_signal(signum)
                    seen[signum] = below
            time.sleep(0.05)
        assert len(seen) == len(processes), {s.name: p.poll() for s, p in processes.items()}
        for signum, process in processes.items():
            stderr = check_stopped(process, signum, seen[signum])
            if signum == signal.SIGTERM:
                assert "1 scaling record(s) kept in" in stderr
    finally:
        for process in processes.values():
            process.kill()
            process.wait()


def _is_rank(pid: int) -> bool:
    """A DDP rank that torchrun has started (exec'd, not its fork) in a session of its own, where
    torchrun's process group does not reach."""
    line = command_line(pid)
    try:
        leader = os.getsid(pid) == pid
    except OSError:
        return False
    return "bench.execute.tasks torch replica" in line and "torch.distributed.run" not in line and leader


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_submit_local_stopped_by_a_signal_leaves_no_job_shard_runner_or_worker(tmp_path, signum):
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    process = start("submit", "--shards", "2", "--local", "--out", str(out), "--", "--preset", "smoke", "--min-window-s",
                    "0", "--windows", "6", module="bench", env=fake_env(hang_batch=4))  # fmt: skip
    assert wait_until(lambda: running(process, "bench.execute.worker") is not None, 120)
    below = running(process, "bench.execute.worker") or []
    assert any("submitit" in command_line(p) for p in below)  # the job launcher and the job are below it too
    process.send_signal(signum)
    stderr = check_stopped(process, signum, below)
    if signum == signal.SIGTERM:
        assert "shards' records are kept in" in stderr and "--resume" in stderr
