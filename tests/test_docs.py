"""The README's and docs/'s figures are generated from the committed result files: `python -m bench docs --check` passes on
the real README, and fails, naming the figure, as soon as a result file or a quoted figure is edited."""

import io
import json
import shutil
from pathlib import Path

import pytest

from bench.commands.docs import Sources, render, run_docs

ROOT = Path(__file__).resolve().parent.parent
R1 = "20261128-094532-cpu-cpu-default"


def _check(root: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = run_docs(root, check=True, out=out)
    return code, out.getvalue()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the README, docs/ and the committed results (plots and traces left out: no figure reads them)."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "results", tmp_path / "results", ignore=shutil.ignore_patterns("*.png", "*trace*"))
    return tmp_path


def test_every_figure_the_readme_quotes_matches_its_committed_file():
    code, out = _check(ROOT)
    assert code == 0, out
    total = int(out.strip().splitlines()[-1].split(" of ")[1].split()[0])
    assert total >= 100, "the README's figures are expected to be generated, not typed"


def test_the_command_line_check_passes_on_this_checkout(capsys):
    from bench.commands.cli import main

    assert main(["docs", "--check"]) == 0
    assert "figures match their files" in capsys.readouterr().out


def test_the_figures_once_misquoted_are_generated_now():
    """Each of these was quoted by hand and had drifted from its file; now each is a marker its file fills in."""
    text = "".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for marker in [
        "figure:preset cpu-default windows -->10<",  # the default preset alternates 10 windows, not 9
        "figure:ratio-range 20261128-104724-cpu-cpu-default engine=keras-tensorflow -->1.21-1.94x slower<",
        f"figure:layout-gain {R1} model=resnet20_cifar,resnet32_cifar mode=infer -->22-33%<",
        f"figure:verdicts {R1} model=vgg13 mode=train -->",  # not "a tie": b=8 excludes 1 in both runs
        "figure:verdicts 20261128-095109-cpu-cpu-default model=vgg13 mode=train -->",
        "figure:estimate gpu-full machine=h200-20261128-sweep engine=torch -->",
        "figure:rerun-spread 20261128-094532-cpu-cpu-default 20261128-095109-cpu-cpu-default -->11%<",
        "0.999-1.003 in the five batch-256 cases and 0.86 in the batch-1 case",  # b=1 is in the same file
    ]:
        assert marker in text, marker
    for gone in ["9 pairs in the default preset", "ran 1.5-1.9x slower", "by 10-22%", "differ by 15-25%"]:
        assert gone not in text


def test_editing_a_committed_result_file_fails_the_check_and_names_the_figure(checkout):
    assert _check(checkout)[0] == 0
    path = checkout / "results" / "overhead" / "20261128-cpu.json"
    data = json.loads(path.read_text())
    data[0]["noop_step_us"] = 0.5  # the window loop's own cost, as if re-measured
    data[1]["cases"][3]["ratio_low"] = 1.001  # TensorFlow ResNet-18 inference's interval moved
    path.write_text(json.dumps(data))
    code, out = _check(checkout)
    assert code == 1
    assert "figure overhead-noop 20261128-cpu: the text says '0.07-0.08 µs', its files give '0.08-0.50 µs'" in out
    assert "figure overhead-table 20261128-cpu" in out and "figure overhead-outside-one 20261128-cpu" in out
    assert "figure overhead-layout" not in out  # figures that read other values of the file still match


def test_a_re_made_run_fails_the_figures_that_quote_it(checkout):
    results = checkout / "results" / "runs" / R1 / "results.jsonl"
    lines = []
    for line in results.read_text().splitlines():
        record = json.loads(line)
        if (record["framework"], record["model"], record["mode"], record["batch_size"]) == (
            "tensorflow", "vgg13", "train", 8,
        ):  # fmt: skip
            record["window_throughputs_img_s"] = [rate * 1.3 for rate in record["window_throughputs_img_s"]]
        lines.append(json.dumps(record))
    results.write_text("\n".join(lines) + "\n")
    code, out = _check(checkout)
    assert code == 1
    assert f"figure ratio-table {R1} train" in out and f"figure verdicts {R1} model=vgg13 mode=train" in out
    assert f"figure verdicts {R1} model=vgg11 mode=train" not in out


def test_editing_a_quoted_figure_fails_the_check_and_docs_writes_it_back(checkout):
    readme = checkout / "docs" / "models.md"
    original = readme.read_text()
    edited = original.replace(
        "figure:rerun-spread 20261128-094532-cpu-cpu-default 20261128-095109-cpu-cpu-default -->11%<",
        "figure:rerun-spread 20261128-094532-cpu-cpu-default 20261128-095109-cpu-cpu-default -->15-25%<",
    )
    assert edited != original
    readme.write_text(edited)
    code, out = _check(checkout)
    assert code == 1 and "the text says '15-25%', its files give '11%'" in out
    assert out.strip().splitlines()[0].startswith("docs/models.md:")  # names the file and line
    assert run_docs(checkout, out=io.StringIO()) == 0
    assert readme.read_text() == original
    assert _check(checkout)[0] == 0


def test_a_figure_whose_file_is_gone_cannot_be_computed_and_fails(checkout):
    (checkout / "results" / "profiles" / "20261202-vgg11-train-64px" / "profile.json").unlink()
    code, out = _check(checkout)
    assert code == 1
    assert "figure profile-sum 20261202-vgg11-train-64px torch: cannot be computed from its files" in out
    assert "profile.json does not exist" in out
    before = (checkout / "docs" / "studies.md").read_text()
    assert run_docs(checkout, out=io.StringIO()) == 1  # rewriting keeps that figure's text and fails too
    assert (checkout / "docs" / "studies.md").read_text() == before


def test_an_unknown_figure_exits_2_naming_the_valid_ones(checkout, capsys):
    readme = checkout / "README.md"
    readme.write_text(readme.read_text() + "\n<!-- figure:no-such-figure x -->1<!-- /figure -->\n")
    assert run_docs(checkout, check=True, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "unknown figure 'no-such-figure'" in err and "ratio-table" in err


def test_docs_md_files_are_read_too(checkout):
    (checkout / "docs").mkdir(exist_ok=True)
    (checkout / "docs" / "notes.md").write_text(
        "The default preset alternates <!-- figure:plan 20261128-094532-cpu-cpu-default windows -->9<!-- /figure -->.\n"
    )
    code, out = _check(checkout)
    assert code == 1 and "docs/notes.md:1: figure plan" in out


def test_a_block_figure_keeps_its_indentation_and_an_inline_one_its_place(tmp_path):
    text = (
        "- a list item:\n\n  <!-- figure:overhead-noop 20261128-cpu -->\n  old\n  <!-- /figure -->\n\n"
        "inline <!-- figure:overhead-pairs 20261128-cpu -->7<!-- /figure --> pairs\n"
    )
    new, quotes = render(text, Sources(ROOT))
    assert new == (
        "- a list item:\n\n  <!-- figure:overhead-noop 20261128-cpu -->\n  0.07-0.08 µs\n  <!-- /figure -->\n\n"
        "inline <!-- figure:overhead-pairs 20261128-cpu -->9<!-- /figure --> pairs\n"
    )
    assert [q.stale for q in quotes] == [True, True]
    again, quotes = render(new, Sources(ROOT))
    assert again == new and not any(q.stale for q in quotes)


def test_the_categories_figure_counts_the_findings_that_add_up():
    """'N of M': findings whose operator categories add up to the gap, of those profiled on both sides, as the
    run's own findings line says; a run without categories has no such figure."""
    from bench.commands.docs import FigureError, categories_add_up
    from bench.report.findings import findings

    sources = Sources(ROOT)
    run = "20261202-033537-cpu-cpu-default"
    found = findings(sources.run(run))
    assert categories_add_up(sources, run) == f"{found.adding_up} of {found.profiled}"
    assert 0 < found.profiled <= len(found.decided)
    assert (
        f"in {found.adding_up} of {found.profiled} profiled findings"
        in (ROOT / f"results/runs/{run}/report.md").read_text()
    )
    with pytest.raises(FigureError):
        categories_add_up(sources, R1)  # made before the explain pass


def test_the_interval_figure_counts_the_findings_inside_the_gaps_own_interval():
    from bench.commands.docs import FigureError, categories_inside_interval
    from bench.report.findings import findings

    sources = Sources(ROOT)
    run = "20261202-060804-cpu-cpu-default"  # made with the shared-wall-time explain pass
    found = findings(sources.run(run))
    inside = [f for f in found.decided if f.inside_interval]
    assert categories_inside_interval(sources, run) == str(len(inside)) and inside
    assert all(not f.adds_up and "inside the gap's 95% interval" in f.evidence[-1] for f in inside)
    assert (
        f"in {len(inside)} more, inside the gap's own 95% interval"
        in (ROOT / f"results/runs/{run}/report.md").read_text()
    )
    with pytest.raises(FigureError):
        categories_inside_interval(sources, R1)


def test_the_suite_figure_reads_a_passing_log_and_refuses_a_failing_one(tmp_path):
    from bench.commands.docs import FigureError, suite

    (tmp_path / "results" / "tests").mkdir(parents=True)
    head = "# tox -e py on a clean clone of abc1234 (bash .ci/run), Some CPU, 2 cores, 2026-12-02\n"
    (tmp_path / "results/tests/ok.txt").write_text(head + "=== 10 passed, 2 skipped in 75.50s (0:01:15) ===\n")
    (tmp_path / "results/tests/bad.txt").write_text(head + "=== 1 failed, 9 passed in 75.50s (0:01:15) ===\n")
    assert suite(Sources(tmp_path), "ok.txt") == "12 tests (2 skipped) in 1 min 16 s on Some CPU, 2 cores"
    with pytest.raises(FigureError):
        suite(Sources(tmp_path), "bad.txt")


def test_the_two_committed_training_studies_hold_the_same_curves_as_the_docs_say():
    """docs/studies.md: the study re-made on a quiet machine gave the same curves to the last digit."""
    import json

    def epochs(study):
        data = json.loads((ROOT / f"results/training/{study}/training.json").read_text())
        return {(r["engine"], run["model"], run["seed"], e["epoch"]): (e["train_loss"], e["train_error"], e["held_error"])
                for r in data["results"] for run in r["runs"] for e in run["epochs"]}  # fmt: skip

    first, again = epochs("20261201-235540-digits"), epochs("20261202-063032-digits")
    assert first == again and len(first) == 72
    assert "gave the\nsame curves to the last digit" in (ROOT / "docs/studies.md").read_text()


def test_settling_each_window_removed_the_cold_first_step_the_docs_quote():
    """docs/methodology.md: before the rule a window's first CIFAR ResNet step was up to 4x the median; after it,
    within a few percent."""
    from bench.commands.docs import _window_starts, window_first_step

    sources = Sources(ROOT)
    before = _window_starts(sources, "20261202-060804-cpu-cpu-default", "resnet*")
    after = _window_starts(sources, "20261202-064724-cpu-cpu-default", "resnet*")
    assert max(f for f, _ in before) > 2.0 and max(f for f, _ in after) < 1.1
    assert max(e for _, e in after) < min(0.02, max(e for _, e in before))
    assert window_first_step(sources, "20261202-060804-cpu-cpu-default", "resnet*") == "1.10-4.12x"


def test_the_gaps_figure_counts_the_findings_whose_gap_the_windows_measured_to_the_tolerance():
    from bench.commands.docs import FigureError, gaps_measured_within
    from bench.report.findings import findings

    sources = Sources(ROOT)
    run = "20261204-192347-cpu-cpu-default"
    found = findings(sources.run(run))
    measured = [f for f in found.decided if f.adds_up is not None and f.gap_measured_within]
    assert (
        gaps_measured_within(sources, run) == f"{len(measured)} of {found.profiled}"
        and 0 < len(measured) < found.profiled
    )
    assert (
        f"The windows themselves measured {len(measured)} of these {found.profiled} gaps to within 15%"
        in (ROOT / f"results/runs/{run}/report.md").read_text()
    )
    with pytest.raises(FigureError):
        gaps_measured_within(sources, R1)
