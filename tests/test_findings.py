"""Findings: decided comparisons ranked by effect with their evidence; the categories' gap arithmetic."""

import pytest

from bench.findings import GAP_TOLERANCE, explain_gap, findings, render
from bench.report import render_markdown
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
    text, adds_up = explain_gap(fast, off)
    assert adds_up is False and f"do not account for it within {GAP_TOLERANCE:.0%}" in text


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
    found = backend.operator_categories(prepared, config, 2)
    backend.release()
    assert found["profiled_steps"] == 2
    assert found["categories"]["convolution"] > 0 and found["categories"]["optimizer"] > 0
    assert found["categories"]["convolution"] == max(found["categories"].values())
