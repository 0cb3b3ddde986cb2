"""`bench compare` knows its machines and fails closed: both runs' hardware and framework versions first,
the gate refused across machines unless allowed, and decided before compare.md is written."""

import json
import os
import pathlib
from pathlib import Path

import pytest

from bench.commands.cli import main
from bench.report.run import load_source
from tests.handmade import BASE, EPYC, FASTER, SLOWER, VERSIONS, XEON, pair, record, write_run


def compare(tmp_path, capsys, *args):
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- comparisons know their machines -------------------------------------------------------------------


def test_compare_prints_both_machines_first_with_their_framework_versions(tmp_path, capsys):
    write_run(tmp_path / "a", pair("resnet20_cifar", 2, BASE, FASTER, "a1"))
    write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, FASTER, "b1"))
    code, out, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    assert code == 0 and "regression gate passed: 2 configuration(s) compared" in err
    assert out.index("## Machines") < out.index("## Throughput") < out.index("## Engine ratios")
    assert "| CPU model  | Intel Xeon" in out and "| torch      | 2.13.0+cpu" in out and "| keras      | 3.15.1" in out
    assert "Same hardware (CPU model, core count, GPU names) and framework versions in both runs." in out
    assert (tmp_path / "b" / "compare.md").read_text() == out


@pytest.mark.parametrize(
    "host, versions, difference",
    [
        (EPYC, VERSIONS, "CPU model differs: 'Intel Xeon' vs 'AMD EPYC 7B13'; core count differs: 2 vs 64"),
        (XEON, {**VERSIONS, "torch": "2.12.0+cpu"}, "torch version differs: '2.13.0+cpu' vs '2.12.0+cpu'"),
    ],
)
def test_the_gate_refuses_other_hardware_or_versions_unless_allowed(tmp_path, capsys, host, versions, difference):
    write_run(tmp_path / "a", pair("resnet20_cifar", 2, BASE, FASTER, "a1"))
    write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, FASTER, "b1", host=host, versions=versions), host=host)
    code, out, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    assert code == 2 and difference in err and "--allow-other-hardware" in err and "Traceback" not in err
    assert "## Machines" in out and not (tmp_path / "b" / "compare.md").exists()  # refused before anything is written
    code, out, err = compare(tmp_path, capsys, "--fail-on-regression", "5", "--allow-other-hardware")
    setting = "different machines" if host is EPYC else "different framework versions"
    assert code == 0 and f"**The runs come from {setting}**: {difference}." in out
    assert f"regression gate passed: 2 configuration(s) compared (runs from {setting}, allowed: {difference})" in err
    assert f"The runs come from {setting}: a change may be theirs, not the code's." in out


def test_gpu_names_are_part_of_the_hardware(tmp_path, capsys):
    gpu = {"device": "cuda"}
    a = [dict(record("torch", "resnet50", 8, 100.0).to_json(), **gpu, env={**XEON, "device_name": "NVIDIA H100"})]
    b = [dict(record("torch", "resnet50", 8, 100.0).to_json(), **gpu, env={**XEON, "device_name": "NVIDIA H200"})]
    for name, lines in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, _, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    assert code == 2 and "GPU names differ: 'NVIDIA H100' vs 'NVIDIA H200'" in err


def test_opposite_verdicts_from_different_machines_are_never_called_contradictions(tmp_path, capsys):
    write_run(tmp_path / "a", pair("resnet20_cifar", 8, BASE, FASTER, "a1"))
    write_run(tmp_path / "b", pair("resnet20_cifar", 8, BASE, SLOWER, "b1", host=EPYC), host=EPYC)
    code, out, _ = compare(tmp_path, capsys)
    assert code == 0 and "contradiction" not in out.lower()
    assert "- opposite verdicts (faster beyond the interval in one run, slower beyond it in the other), " \
           "different machines: 1" in out  # fmt: skip
    assert "  - different machines: infer_fp32 keras-tensorflow resnet20_cifar b=8: 1.30x faster" in out


def test_merge_and_compare_judge_hardware_by_one_function(tmp_path, monkeypatch):
    from bench.execute import shards
    from bench.report import compare as compare_module
    from bench.store import records as store

    folder = write_run(tmp_path / "a", [record("torch", "resnet20_cifar", 2, 100.0)], host=EPYC)
    source = load_source(folder)
    seen = compare_module.machine(source.env, source.records)
    assert shards.hardware_of(folder) == {"cpu_model": "AMD EPYC 7B13", "cpu_cores": 64, "gpus": []}
    assert (seen.cpu_model, seen.cpu_cores, seen.gpus) == ("AMD EPYC 7B13", 64, ())
    monkeypatch.setattr(store, "hardware", lambda env, records: {"cpu_model": "M", "cpu_cores": 7, "gpus": ["G"]})
    seen = compare_module.machine(source.env, source.records)
    assert (seen.cpu_model, seen.cpu_cores, seen.gpus) == ("M", 7, ("G",))


# --- the gate fails closed ------------------------------------------------------------------------------


def _empty(folder: Path) -> None:
    folder.mkdir()
    (folder / "results.jsonl").write_text("")


def _only_errors(folder: Path) -> None:
    write_run(folder, [record("torch", "resnet20_cifar", b, 0, status="error") for b in (2, 8)])


def _profile_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "profile.md").write_text("# Profile\n")
    (folder / "profile.json").write_text("{}")


def _dev_null(folder: Path) -> None:
    folder.mkdir()
    (folder / "results.jsonl").symlink_to("/dev/null")


@pytest.mark.parametrize(
    "make_baseline, reason",
    [
        (_empty, "the baseline has no successful measurement (0 record(s))"),
        (_only_errors, "the baseline has no successful measurement (2 record(s): 2 error)"),
        (_dev_null, "results.jsonl is not a regular file (a link to /dev/null)"),
    ],
)
def test_a_baseline_that_measured_nothing_fails_the_gate(tmp_path, capsys, make_baseline, reason):
    make_baseline(tmp_path / "a")
    write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, FASTER, "b1"))
    code, _, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    assert code == 1 and "regression gate FAILED" in err and reason in err and "Traceback" not in err


def test_a_baseline_that_is_not_a_run_is_refused_before_the_gate(tmp_path, capsys):
    _profile_folder(tmp_path / "a")
    write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, FASTER, "b1"))
    code, _, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    assert code == 2 and "is not a run folder" in err and "Traceback" not in err
    assert not (tmp_path / "b" / "compare.md").exists()


def test_a_candidate_folder_that_cannot_be_written_fails_after_the_gate_is_decided(tmp_path, capsys, monkeypatch):
    write_run(tmp_path / "a", pair("resnet20_cifar", 2, BASE, FASTER, "a1"))
    candidate = write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, FASTER, "b1"))
    candidate.chmod(0o555)
    if os.access(candidate, os.W_OK):  # root writes into a read-only folder: refuse as the file system would
        import bench.store.atomic

        real = bench.store.atomic.write_text

        def write_text(path, *args, **kwargs):
            if pathlib.Path(path).parent == candidate:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(bench.store.atomic, "write_text", write_text)
    try:
        code, out, err = compare(tmp_path, capsys, "--fail-on-regression", "5")
    finally:
        candidate.chmod(0o755)
    assert code == 1 and "## Machines" in out and "Traceback" not in err
    assert err.index("regression gate passed") < err.index(f"error: cannot write {candidate / 'compare.md'}")
    assert "Permission denied" in err and not (candidate / "compare.md").exists()


def test_an_out_path_that_cannot_be_made_is_reported_without_a_traceback(tmp_path, capsys):
    write_run(tmp_path / "a", pair("resnet20_cifar", 2, BASE, FASTER, "a1"))
    write_run(tmp_path / "b", pair("resnet20_cifar", 2, BASE, SLOWER, "b1"))
    (tmp_path / "file").write_text("")
    code, _, err = compare(tmp_path, capsys, "--fail-on-regression", "5", "--out", str(tmp_path / "file" / "c.md"))
    assert code == 1 and err.index("regression gate FAILED") < err.index("error: cannot write")
