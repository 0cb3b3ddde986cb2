"""Shards of a sweep: the partition, merging, the hardware check, resume, and submitit's local executor."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.config import PRESETS, build_plan
from bench.execute.runner import cell_key
from bench.execute.shards import parse_shard, shard_plan
from bench.store.records import load_records

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--preset", "smoke", "--min-window-s", "0", "--windows", "6"]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", "{}")


def test_the_partition_is_deterministic_covers_every_configuration_once_and_keeps_cells_whole():
    plan = build_plan({**PRESETS["cpu-default"]}, "cpu-default")
    parts = [shard_plan(plan, i, 3) for i in (1, 2, 3)]
    assert [p.configs for p in parts] == [shard_plan(plan, i, 3).configs for i in (1, 2, 3)]
    every = [c for p in parts for c in p.configs]
    assert sorted(every, key=str) == sorted(plan.configs, key=str) and len(set(every)) == len(every)
    for part in parts:
        cells = {cell_key(c) for c in part.configs}
        assert all(cell_key(c) in cells for c in part.configs)
        assert all(
            {c.framework for c in part.configs if cell_key(c) == cell} == {"torch", "keras-tensorflow"}
            for cell in cells
        )
    assert {p.shard["plan_digest"] for p in parts} == {plan.digest()}
    with pytest.raises(Exception, match="I/N"):
        parse_shard("3/2")


def _records(folder: Path) -> list:
    return load_records(folder / "results.jsonl")


def test_two_shards_merged_equal_the_same_sweep_run_whole(tmp_path, fake):
    assert main(["run", *SMOKE, "--out", str(tmp_path / "whole"), "--no-report"]) == 0
    for index in (1, 2):
        assert main(["run", *SMOKE, "--shard", f"{index}/2", "--out", str(tmp_path / f"s{index}"), "--no-report"]) == 0
    shard_sizes = [len(_records(tmp_path / f"s{i}")) for i in (1, 2)]
    assert all(size > 0 for size in shard_sizes)
    assert main(["merge", str(tmp_path / "merged"), str(tmp_path / "s1"), str(tmp_path / "s2")]) == 0
    merged, whole = _records(tmp_path / "merged"), _records(tmp_path / "whole")
    assert len(merged) == len(whole) == sum(shard_sizes) == 8
    assert {r.config for r in merged} == {r.config for r in whole}
    assert (
        json.loads((tmp_path / "merged" / "plan.json").read_text())["configs"]
        == json.loads((tmp_path / "whole" / "plan.json").read_text())["configs"]
    )
    assert "merged from 2 run folders" in (tmp_path / "merged" / "report.md").read_text()
    # the same shard twice is refused: one record per configuration
    assert main(["merge", str(tmp_path / "again"), str(tmp_path / "s1"), str(tmp_path / "s1")]) == 2


def test_shards_from_other_hardware_are_refused_unless_forced_and_then_reported(tmp_path, fake, capsys):
    for index in (1, 2):
        assert main(["run", *SMOKE, "--shard", f"{index}/2", "--out", str(tmp_path / f"s{index}"), "--no-report"]) == 0
    env_path = tmp_path / "s2" / "env.json"
    env_path.write_text(json.dumps({**json.loads(env_path.read_text()), "cpu_model": "Another CPU"}))
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "s1"), str(tmp_path / "s2")]) == 2
    assert "different hardware" in capsys.readouterr().err and not (tmp_path / "m" / "results.jsonl").exists()
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "s1"), str(tmp_path / "s2"), "--force"]) == 0
    assert "**Warning**: merged from different hardware" in (tmp_path / "m" / "report.md").read_text()


def test_a_shard_resumes_like_any_run(tmp_path, fake):
    folder = tmp_path / "s1"
    assert main(["run", *SMOKE, "--shard", "1/2", "--out", str(folder), "--no-report"]) == 0
    lines = (folder / "results.jsonl").read_text().splitlines(keepends=True)
    (folder / "results.jsonl").write_text("".join(lines[:-1]))  # as if it had stopped before its last record
    assert main(["run", "--resume", str(folder), "--no-report"]) == 0
    records = _records(folder)
    assert len(records) == len(lines) and len({r.config for r in records}) == len(records)


def test_shards_submitted_through_submitits_local_executor_merge_into_the_whole_sweep(tmp_path, fake):
    submitit = pytest.importorskip("submitit")
    from bench.commands.submit import submit_shards

    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=10)
    folders = submit_shards([*SMOKE], 2, tmp_path, executor)
    assert main(["merge", str(tmp_path / "merged"), *map(str, folders)]) == 0
    assert main(["run", *SMOKE, "--out", str(tmp_path / "whole"), "--no-report"]) == 0
    merged, whole = _records(tmp_path / "merged"), _records(tmp_path / "whole")
    assert {r.config for r in merged} == {r.config for r in whole} and len(merged) == len(whole)


# --- a merge is whole or absent ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    """Shards 1 and 2 of the smoke sweep (fake backend), made once; tests copy them before changing them."""
    folder = tmp_path_factory.mktemp("shards")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNN_BENCH_BACKEND", "fake")
        patch.setenv("CNN_BENCH_FAKE", "{}")
        for index in (1, 2):
            assert (
                main(["run", *SMOKE, "--shard", f"{index}/2", "--out", str(folder / f"s{index}"), "--no-report"]) == 0
            )
    return folder


def _copy(two_shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    for name in ("s1", "s2"):
        shutil.copytree(two_shards / name, tmp_path / name)
    return tmp_path / "s1", tmp_path / "s2"


# Runs `bench merge ARGS` and sends itself `signal` as the merged run's records are about to be written
# (its plan.json and env.json are written by then).
STOPPED_MERGE = """
import os, sys, time
import bench.execute.shards as shards
from bench.commands.cli import main
write_bytes = shards.write_bytes
def stop_at_the_records(path, data):
    if path.name == "results.jsonl":
        os.kill(os.getpid(), int(sys.argv[1]))
        time.sleep(30)
    return write_bytes(path, data)
shards.write_bytes = stop_at_the_records
sys.exit(main(sys.argv[2:]))
"""


def _as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_merge_stopped_mid_write_leaves_no_run_and_the_same_merge_then_completes(
    tmp_path, two_shards, signum, capsys
):
    s1, s2 = _copy(two_shards, tmp_path)
    out = tmp_path / "merged"
    stopped = subprocess.run([sys.executable, "-c", STOPPED_MERGE, str(int(signum)), "merge", str(out), str(s1), str(s2)],
                             cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=_as_from_a_terminal)  # fmt: skip
    assert stopped.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[signum], stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (out / "results.jsonl").exists() and not (out / "plan.json").exists()  # it does not look like a run
    if signum == signal.SIGKILL:
        (partial,) = (tmp_path / ".building").iterdir()  # the build it was writing: a plan and no records
        assert (partial / "plan.json").exists() and not (partial / "results.jsonl").exists()
    else:
        assert f"interrupted by {signum.name}: {out} was not written" in stopped.stderr and "again" in stopped.stderr
        assert not (tmp_path / ".building").exists() and not out.exists()  # made for the merge, removed empty
    assert main(["merge", str(out), str(s1), str(s2)]) == 0
    assert len(_records(out)) == 8 and len(json.loads((out / "plan.json").read_text())["configs"]) == 8
    assert "None: every one of the 8 planned configurations has a record" in (out / "report.md").read_text()
    assert not (tmp_path / ".building").exists() and not (out / ".lock").exists()
    if signum == signal.SIGKILL:
        assert "which is no longer running; taken over" in capsys.readouterr().err


def test_one_shard_of_two_merges_into_the_whole_plan_and_the_report_lists_what_is_missing(tmp_path, two_shards):
    s1, _ = _copy(two_shards, tmp_path)
    assert main(["merge", str(tmp_path / "merged"), str(s1)]) == 0
    plan = json.loads((tmp_path / "merged" / "plan.json").read_text())
    assert len(plan["configs"]) == 8 and "shard" not in plan  # the whole sweep, not shard 1's half
    report = (tmp_path / "merged" / "report.md").read_text()
    assert "4 of the 8 planned configurations have no record" in report
    assert "shard(s) 2 of 2 not given" in report


def test_a_shard_with_a_torn_tail_merges_with_a_warning_naming_it(tmp_path, two_shards, capsys):
    s1, s2 = _copy(two_shards, tmp_path)
    data = (s2 / "results.jsonl").read_bytes()
    (s2 / "results.jsonl").write_bytes(data[: len(data) - 200])  # a crash in the middle of its last record
    assert main(["merge", str(tmp_path / "merged"), str(s1), str(s2)]) == 0
    err = capsys.readouterr().err
    assert f"warning: shard 2 ({s2}): {s2 / 'results.jsonl'}: line 4 is a torn record" in err
    assert f"--resume {s2}" in err
    assert len(_records(tmp_path / "merged")) == 7
    report = (tmp_path / "merged" / "report.md").read_text()
    assert "1 of the 8 planned configurations have no record" in report and "line 4 is a torn record" in report


def test_a_second_merge_into_one_folder_exits_2_naming_the_first(tmp_path, two_shards, capsys):
    from bench.store import folders

    s1, s2 = _copy(two_shards, tmp_path)
    out = tmp_path / "merged"
    folders.hold(out)  # as a merge under way holds it
    try:
        assert main(["merge", str(out), str(s1), str(s2)]) == 2
    finally:
        folders.release_all()
    assert f"{out} is being written by PID {os.getpid()} (" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".building").exists()
