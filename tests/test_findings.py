"""Findings: decided comparisons ranked by effect with their evidence; the categories' gap arithmetic."""

import pytest

from bench.backends.categories import OUTSIDE_OPERATORS
from bench.backends.xplane import wall_shares
from bench.measure.stats import Ratio
from bench.report.findings import GAP_TOLERANCE, explain_gap, findings, gap_interval, gap_measured_within, render
from bench.report.run import render_markdown
from tests.handmade import BASE, FASTER, SLOWER, pair, record

SAME = [100.5, 99.5, 100.2, 99.8, 100.1, 99.9, 100.0, 100.3, 99.7]


def test_decided_comparisons_are_ranked_by_effect_and_ties_grouped():
    records = (
        pair("resnet20_cifar", 2, BASE, SLOWER, "a", cpu_util_cores=1.9)  # 0.8x
        + pair("vgg11", 2, BASE, [r * 2 for r in BASE], "b")  # 2x: the larger effect first
        + pair("vgg13", 2, BASE, SAME, "c")
    )
    result = findings(records)
    assert [f.model for f in result.decided] == ["vgg11", "resnet20_cifar"]
    assert result.same == ["vgg13 infer, fp32 b=2"]
    lines = render(result, markdown=False)
    assert "vgg11 infer, fp32, b=2: keras-tensorflow is 2.00x faster than torch [" in lines[1]
    assert "1.90 cores busy" in lines[2] and "Same within noise (1): vgg13" in lines[3]
    assert "operator categories: not profiled" in lines[2]


def test_the_categories_name_what_makes_the_gap_and_whether_they_add_up():
    # 100 img/s at batch 2: 20 ms per step; 80 img/s: 25 ms. Gap 5 ms.
    fast = record("torch", "vgg11", 2, 100.0, op_categories={"convolution": 0.015, "linear": 0.005})
    slow = record("keras-tensorflow", "vgg11", 2, 80.0, op_categories={"convolution": 0.016, "linear": 0.009})
    text, adds_up = explain_gap(fast, slow)
    assert adds_up is True and text.startswith(
        "linear 1.8x slower in keras-tensorflow (9 vs 5 ms per step): 80% of the gap"
    )
    assert "convolution 1.1x slower" in text and "add to 5 of the 5 ms gap" in text
    off = record("keras-tensorflow", "vgg11", 2, 80.0, op_categories={"convolution": 0.015, "linear": 0.006})
    text, adds_up = explain_gap(fast, off)  # 1 ms of a 5 ms gap
    assert adds_up is False and f"do not account for it within {GAP_TOLERANCE:.0%} or the gap's 95% interval" in text
    text, adds_up = explain_gap(fast, off, (0.8, 7.0))  # a gap measured no closer than 0.8-7 ms
    assert adds_up is False and "not within 15%, but inside the gap's 95% interval (0.8-7 ms)" in text
    text, _ = explain_gap(fast, off, (2.0, 7.0))
    assert "do not account for it within 15% or the gap's 95% interval (2-7 ms)" in text


def test_a_gap_counts_as_measured_to_the_tolerance_only_when_its_whole_interval_lies_within_it():
    fast, slow = record("torch", "vgg11", 2, 100.0), record("keras-tensorflow", "vgg11", 2, 80.0)  # a 5 ms gap
    assert gap_measured_within(fast, slow, (4.3, 5.7))  # 0.86-1.14 of the gap
    assert not gap_measured_within(fast, slow, (4.3, 5.8))  # reaches 16% above it
    assert not gap_measured_within(fast, slow, (4.2, 5.5)) and not gap_measured_within(fast, slow, None)
    assert gap_measured_within(fast, slow, (-5.5, -4.5))  # the interval's sign follows the ratio's direction


def test_the_gap_interval_follows_from_the_paired_ratio_on_the_baseline_step():
    base = record("torch", "vgg11", 2, 100.0)  # 20 ms per step
    slower = Ratio(0.8, 0.75, 0.85, 8, "paired")  # the other engine: 25 ms, between 23.5 and 26.7 ms
    low, high = gap_interval(base, slower)
    assert low == pytest.approx(20 / 0.85 - 20) and high == pytest.approx(20 / 0.75 - 20)
    faster = Ratio(1.25, 1.2, 1.3, 8, "paired")  # 16 ms: the gap 4 ms, between 3.33 and 4.62 ms
    low, high = gap_interval(base, faster)
    assert low == pytest.approx(20 - 20 / 1.2) and high == pytest.approx(20 - 20 / 1.3)
    assert gap_interval(base, Ratio(0.8, None, None, 2, "paired")) is None


def test_wall_time_is_shared_among_the_operators_running_in_it_never_counted_twice():
    spans = [
        (0, 10, "convolution", "a"),
        (2, 5, "batch norm", "a"),  # inside the convolution on the same thread: the innermost holds the moment
        (4, 8, "optimizer", "b"),  # on another thread at the same time: each moment shared
        (20, 30, "convolution", "a"),
    ]
    shares = wall_shares(spans)
    assert shares == pytest.approx({"convolution": 2 + 1.5 + 2 + 10, "batch norm": 2 + 0.5, "optimizer": 0.5 + 1.5})
    assert sum(shares.values()) == pytest.approx(10 + 10)  # the time in which any operator runs


def test_the_explain_pass_adds_the_time_outside_operators_to_the_unprofiled_step(tmp_path, monkeypatch):
    from tests.test_runner import fake_run

    behaviour = {"step_ms_per_image": 2.0, "categories": {"torch": {"convolution": 0.5, "linear": 0.2}}}
    (rec,) = fake_run(tmp_path, monkeypatch, behaviour, frameworks=["torch"])
    categories = rec.op_categories
    assert set(categories) == {"convolution", "linear", OUTSIDE_OPERATORS}
    assert sum(categories.values()) == pytest.approx(rec.explain_step_s)  # they add up to the unprofiled step
    assert categories[OUTSIDE_OPERATORS] == pytest.approx(rec.explain_step_s - 0.7 * rec.profiled_step_s)
    assert categories[OUTSIDE_OPERATORS] > 0.2 * rec.explain_step_s  # the 30% no operator was given


def test_the_report_and_console_open_with_the_findings():
    records = pair("vgg11", 2, BASE, FASTER, "b")
    markdown, console = render_markdown(records, {}, [])
    assert markdown.index("## Findings") < markdown.index("**Trust**") < markdown.index("### Throughput")
    assert console.splitlines()[2] == "Findings (ranked by effect):"


@pytest.mark.parametrize("framework", ["torch", "keras-tensorflow"])
def test_a_real_step_gets_operator_categories_from_the_explain_pass(framework):
    from bench.backends import get_backend
    from bench.config import Config, Settings

    pytest.importorskip("torch" if framework == "torch" else "tensorflow")
    backend = get_backend(framework)
    config = Config(framework, "resnet20_cifar", 2, "train", image_size=16,
                    layout="channels_first" if framework == "torch" else "channels_last")  # fmt: skip
    prepared = backend.prepare(config, Settings(inputs=1))
    prepared.step()
    prepared.sync()
    found = backend.operator_categories(prepared, config, 2)
    backend.release()
    assert found["profiled_steps"] == 2
    # Operators on parallel threads share the wall time: together they never exceed the profiled step.
    assert sum(found["categories"].values()) <= found["profiled_step_s"] * 1.02
    assert found["categories"]["convolution"] > 0 and found["categories"]["optimizer"] > 0
    assert found["categories"]["convolution"] == max(found["categories"].values())
