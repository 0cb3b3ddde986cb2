"""Cells: the engines of one configuration prepared together, windows alternating with the order reversed
every pair, paired records with a decided ratio from real (fake-backend) workers, the layout trial, a pinned
layout, withheld memory figures and latency percentiles that say how many steps back them."""

import json
import os

import pytest

from bench.config import build_plan
from bench.execute.runner import Runner, cells
from bench.measure.session import EXPLAIN_CHUNKS, explain_chunks
from bench.report import tables
from bench.report.run import render_markdown
from bench.store.records import RunStore, load_records, make_record

QUIET = open(os.devnull, "w")  # noqa: SIM115


# --- cells: engines prepared together, windows alternating ----------------------------------------------


def plan(**overrides):
    options = dict(
        frameworks=["torch", "tensorflow"], models=["resnet20_cifar"], batch_sizes=[2], modes=["infer"],
        precisions=["fp32"], image_size=32, device="cpu", warmup_steps=1, windows=6, min_window_s=0.0, timeout_s=30,
    )  # fmt: skip
    options.update(overrides)
    return build_plan(options)


def test_cells_group_the_engines_of_one_configuration():
    configs = list(plan(batch_sizes=[2, 4], layouts=["auto", "channels_last"]).configs)
    grouped = cells(configs, interleave=True)
    assert [[(c.framework, c.layout) for c in cell] for cell in grouped] == [
        [("torch", "auto"), ("torch", "channels_last"), ("keras-tensorflow", "channels_last")]
    ] * 2
    assert [c.batch_size for c in grouped[1]] == [4, 4, 4]
    assert cells(configs, interleave=False) == [[c] for c in configs]


def test_windows_alternate_between_engines_with_the_order_reversed_every_pair(tmp_path, monkeypatch):
    calls = []

    def ask(self, config, message, budget=None):
        calls.append((message["cmd"], config.framework))
        if message["cmd"] == "finish":
            return {"record": make_record(config, "ok", throughput_img_s=1.0, **message["cell"])}
        return {"prepared": {}} if message["cmd"] == "prepare" else {"window": {}}

    monkeypatch.setattr(Runner, "_ask", ask)
    records = Runner(plan(), RunStore(tmp_path), {}, out=QUIET).run_cell(list(plan().configs))
    windows = ["A" if framework == "torch" else "B" for cmd, framework in calls if cmd == "window"]
    assert "".join(windows) == "BA" + "ABBA" * 3  # an untimed settling pair, then AB BA ... (A: torch)
    # The explain pass's unprofiled runs after the windows, paired the same way, before either record is made.
    chunks = ["A" if framework == "torch" else "B" for cmd, framework in calls if cmd == "explain_chunk"]
    assert EXPLAIN_CHUNKS % 2 == 0 and "".join(chunks) == "AB" + "BAAB" * (EXPLAIN_CHUNKS // 2 - 1) + "BA"
    assert explain_chunks(2) == 2 and explain_chunks(10) == EXPLAIN_CHUNKS  # never more runs than timed windows
    last_chunk = max(i for i, (cmd, _) in enumerate(calls) if cmd == "explain_chunk")
    assert last_chunk < min(i for i, (cmd, _) in enumerate(calls) if cmd == "finish")
    assert [cmd for cmd, _ in calls[:2]] == ["prepare", "prepare"] and [cmd for cmd, _ in calls[-2:]] == [
        "finish",
        "finish",
    ]
    assert records[0].cell_id == records[1].cell_id and {r.pairing for r in records} == {"interleaved"}


def fake_run(tmp_path, monkeypatch, behaviour, **overrides):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", json.dumps(behaviour))
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    Runner(plan(**overrides), store, {"host": "test"}, out=QUIET).run()
    return load_records(store.results)


def test_a_cell_measured_in_real_workers_gives_paired_records_and_a_decided_ratio(tmp_path, monkeypatch):
    torch_rec, tf_rec = fake_run(
        tmp_path, monkeypatch, {"framework_cost": {"keras-tensorflow": 3.0}, "step_ms_per_image": 1.0}
    )
    assert torch_rec.cell_id == tf_rec.cell_id and tf_rec.pairing == "interleaved"
    assert len(torch_rec.window_throughputs_img_s) == len(tf_rec.window_throughputs_img_s) == 6
    ratio = tables.ratio_between(torch_rec, tf_rec)
    assert ratio.method == "paired" and ratio.decided and 2.0 < 1 / ratio.ratio < 3.5
    markdown, console = render_markdown([torch_rec, tf_rec], {}, [])
    assert (
        "x slower [" in markdown
        and "keras-tensorflow vs torch" in console
        and "trust: 1 engine comparisons: 1 decided" in console
    )


@pytest.mark.parametrize(
    "cost, chosen",
    [
        ({"channels_last": 3.0}, "channels_first"),
        ({"channels_first": 3.0}, "channels_last"),
        ({"channels_first": 1.04}, "channels_last"),  # inside the margin: still the faster format, not a default
        ({}, None),  # a tie: whichever median is higher, never a fixed default
    ],
)
def test_the_layout_trial_measures_with_the_format_of_the_higher_median(tmp_path, monkeypatch, cost, chosen):
    (record,) = fake_run(tmp_path, monkeypatch, {"layout_cost": cost, "step_ms_per_image": 2.0}, frameworks=["torch"])
    trial = record.layout_trial
    rates = {name: trial[f"{name}_img_s"] for name in ("channels_first", "channels_last")}
    assert record.layout == "auto" and record.layout_chosen == max(rates, key=rates.get)
    if chosen is not None:
        assert record.layout_chosen == chosen
    assert len(trial["round_ratios"]) == trial["rounds"] == 6 and trial["ratio_low"] is not None
    assert trial["ratio_low"] <= trial["channels_last_over_channels_first"] <= trial["ratio_high"]
    assert trial["decided"] is (max(cost.values(), default=1.0) > 2)
    assert trial["verdict"].startswith("channels_last ")


def test_a_pinned_layout_is_measured_as_pinned(tmp_path, monkeypatch):
    (record,) = fake_run(
        tmp_path, monkeypatch, {"layout_cost": {"channels_last": 3.0}}, frameworks=["torch"], layouts=["channels_last"]
    )
    assert record.layout_chosen == "channels_last" and record.layout_trial is None


def test_a_memory_figure_below_the_weights_is_withheld_and_flagged(tmp_path, monkeypatch):
    (record,) = fake_run(tmp_path, monkeypatch, {}, frameworks=["torch"])  # the fake allocates nothing
    assert record.peak_memory_bytes is None and record.memory_bound_bytes > 0
    assert "below the weights bound" in record.unavailable["peak_memory_bytes"]
    assert any(f.kind == "memory" for f in tables.sanity_flags([record]))


def test_latency_percentiles_say_how_many_steps_back_them(tmp_path, monkeypatch):
    (record,) = fake_run(tmp_path, monkeypatch, {"step_ms_per_image": 20.0}, frameworks=["torch"], min_window_s=0.05)
    assert record.latency_samples == 6 * record.steps_per_window < 20
    markdown = render_markdown([record], {}, [])[0]
    assert f"`—` p99 withheld: from {record.latency_samples} steps (under 20)" in markdown
    assert f"| resnet20_cifar | torch    | {tables.sig3(record.latency_ms_p50)}" in markdown
