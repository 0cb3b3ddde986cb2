"""Shards of a sweep: the partition, merging, the hardware check, resume, and submitit's local executor."""

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import PRESETS, build_plan
from bench.records import load_records
from bench.runner import cell_key
from bench.scaleout.shards import parse_shard, shard_plan

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
    from bench.scaleout.submit import submit_shards

    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=10)
    folders = submit_shards([*SMOKE], 2, tmp_path, executor)
    assert main(["merge", str(tmp_path / "merged"), *map(str, folders)]) == 0
    assert main(["run", *SMOKE, "--out", str(tmp_path / "whole"), "--no-report"]) == 0
    merged, whole = _records(tmp_path / "merged"), _records(tmp_path / "whole")
    assert {r.config for r in merged} == {r.config for r in whole} and len(merged) == len(whole)
