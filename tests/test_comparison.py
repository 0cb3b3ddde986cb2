"""Comparisons a sceptic accepts: intervals computed by hand, the warm-up rule on synthetic step times,
the layout trial and its tie rule, windows that alternate between engines, and records that say so."""

import json
import math
import os
import time

import pytest

from bench.config import PRESETS, Config, build_plan
from bench.execute.runner import Runner, cells
from bench.measure import stats, timing
from bench.report import tables
from bench.report.run import render_markdown
from bench.store.records import RunStore, load_records, make_record

QUIET = open(os.devnull, "w")  # noqa: SIM115


# --- the interval for a median, and ratios ----------------------------------------------------------


def coverage(n: int, k: int) -> float:
    """1 - 2 P(Binomial(n, 1/2) < k), written out for the test."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


def test_median_interval_ranks_match_the_binomial_coverage():
    # n=6: [x(1), x(6)] covers with 1 - 2/64 = 96.9%; n=9: [x(2), x(8)] 1 - 2*10/512 = 96.1%, and k=3 only 82%.
    assert [stats.median_rank(n) for n in (5, 6, 8, 9, 11, 12, 20)] == [None, 1, 1, 2, 2, 3, 6]
    assert coverage(9, 2) == pytest.approx(0.9609375) and coverage(9, 3) < 0.95
    assert stats.median_interval([5, 1, 4, 2, 3, 9, 7, 6, 8]) == (2, 8)
    assert stats.median_interval([1, 2, 3, 4, 5]) is None


def test_paired_ratio_is_the_median_of_pair_ratios_with_its_interval():
    base = [100.0] * 9
    engine = [120, 110, 130, 125, 115, 120, 122, 99, 130]
    ratio = stats.paired_ratio(base, engine)
    assert ratio.ratio == pytest.approx(1.20) and (ratio.low, ratio.high) == pytest.approx((1.10, 1.30))
    assert ratio.decided and ratio.words() == "1.20x faster [1.10-1.30]"
    mixed = stats.paired_ratio(base, [120, 90, 130, 95, 115, 120, 122, 99, 130])
    assert not mixed.decided and mixed.words() == "same within noise [0.95-1.30]"
    slower = stats.paired_ratio([100.0] * 6, [80, 81, 79, 82, 80, 78])
    assert slower.words() == "1.25x slower [0.78-0.82]"


def test_a_drift_cancels_in_pairs_but_not_in_a_ratio_of_medians():
    drift = [100 * (1 + 0.1 * i) for i in range(9)]  # the machine speeds up 10% a window
    engine = [1.05 * d for d in drift]  # 5% faster than the baseline in every pair
    paired = stats.paired_ratio(drift, engine)
    assert paired.ratio == pytest.approx(1.05) and paired.decided
    assert not stats.sequential_ratio(drift, engine).decided  # unpaired, the drift swamps the 5%


def test_sequential_ratio_uses_each_medians_interval():
    ratio = stats.sequential_ratio([1, 1.1, 0.9, 1, 1, 1, 1], [2, 2.1, 1.9, 2, 2, 2, 2])
    assert ratio.ratio == 2 and (ratio.low, ratio.high) == pytest.approx((1.9 / 1.1, 2.1 / 0.9))
    assert ratio.method == "sequential" and ratio.pairs == 0


# --- steady state before the clock --------------------------------------------------------------------


def stepper(durations):
    """A step that sleeps the given seconds in turn, then the last one forever."""
    it = iter(durations)
    last = [durations[-1]]

    def step():
        last[0] = next(it, last[0])
        time.sleep(last[0])

    return step


def test_warm_up_continues_while_steps_get_faster_and_stops_when_they_settle():
    # Blocks of 1 step (each step is above the 0.2 s block target would need: 0.2 s / 0.25 s -> 1).
    warm = timing.warm_up(stepper([0.25, 0.2, 0.15, 0.1, 0.05, 0.05, 0.05]), lambda: None, min_steps=1, cap_s=10)
    assert warm.steady and warm.steps == 6 and warm.step_estimate_s == pytest.approx(0.05, rel=0.5)


def test_warm_up_stops_at_its_time_cap_and_says_so():
    speeds = [0.3 * 0.8**i for i in range(40)]  # always 20% faster than the step before
    warm = timing.warm_up(stepper(speeds), lambda: None, min_steps=1, cap_s=0.8)
    assert not warm.steady and warm.seconds < 1.5


def test_windows_read_the_clock_per_step_only_where_execution_is_synchronous():
    cpu = timing.window(stepper([0.01]), lambda: None, 5, per_step_marks=True)
    gpu = timing.window(stepper([0.01]), lambda: None, 5, per_step_marks=False)
    assert len(cpu.step_seconds) == 5 and sum(cpu.step_seconds) == pytest.approx(cpu.seconds)
    assert gpu.step_seconds == () and gpu.seconds >= 0.05


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


def test_the_default_cpu_preset_keeps_both_families_two_depths_both_modes_and_two_batches():
    preset = PRESETS["cpu-default"]
    families = {}
    for name in preset["models"]:
        from implementations import get_spec

        spec = get_spec(name)
        families.setdefault(spec.family.split("_")[0].replace("plain", "resnet"), set()).add(spec.depth)
    assert set(families) == {"vgg", "resnet"} and all(len(d) >= 2 for d in families.values())
    assert set(preset["modes"]) == {"train", "infer"} and len(preset["batch_sizes"]) >= 2
    assert preset["windows"] >= 6  # a 95% interval for every ratio


def test_flags_are_grouped_and_ranked():
    # Six windows: the median's 95% interval is their range, [80, 120] (20% off) and [50, 150] (50% off).
    noisy = [
        make_record(Config("torch", model, 2, "infer"), "ok", throughput_img_s=100.0, throughput_cv=cv,
                    window_throughputs_img_s=[100 - spread, 100, 100, 100, 100, 100 + spread])
        for model, cv, spread in (("resnet20_cifar", 0.13, 20.0), ("resnet32_cifar", 0.32, 50.0))
    ]  # fmt: skip
    flags = tables.sanity_flags(noisy)
    assert [round(f.severity, 2) for f in flags] == [3.33, 1.33]  # reach over the 15% limit
    ((kind, members),) = tables.grouped_flags(flags)
    assert kind.startswith("throughput uncertain by more than 15%") and len(members) == 2
    assert "100 img/s is uncertain by up to 50% (95% interval of the median: 50.0-150 img/s)" in flags[0].text
    assert flags[0].text.endswith("no engine comparison uses it")


def paired_records(model: str, batch: int, torch_rates, tf_rates, cell: str) -> list[dict]:
    out = []
    for framework, rates, layout in (("torch", torch_rates, "auto"), ("keras-tensorflow", tf_rates, "channels_last")):
        config = Config(framework, model, batch, "infer", layout=layout)
        out.append(
            make_record(config, "ok", throughput_img_s=stats.median(rates), window_throughputs_img_s=list(rates),
                        cell_id=cell, pairing="interleaved")
        )  # fmt: skip
    return out


def test_two_runs_are_checked_for_contradictions_agreement_and_decided_cells():
    from bench.report.compare import ratio_consistency, render_consistency

    base = [100.0] * 9
    faster = [130.0, 128, 131, 129, 130, 127, 132, 130, 129]
    slower = [80.0, 81, 79, 82, 80, 78, 80, 81, 79]
    noisy = [90.0, 110, 95, 105, 100, 98, 103, 97, 101]
    run_a = paired_records("resnet20_cifar", 2, base, faster, "a1") + paired_records(
        "resnet20_cifar", 8, base, faster, "a2"
    )
    run_b = paired_records("resnet20_cifar", 2, base, [x * 1.05 for x in faster], "b1") + paired_records(
        "resnet20_cifar", 8, base, slower, "b2"
    )
    result = ratio_consistency(run_a, run_b)
    assert result.cells == 2 and result.agreeing == 1 and result.decided == (2, 2)
    assert len(result.opposed) == 1 and "b=8" in result.opposed[0]
    same = ratio_consistency(run_a, paired_records("resnet20_cifar", 2, base, noisy, "c1"))
    assert same.opposed == [] and same.decided == (2, 0)
    one_machine = render_consistency(result)
    assert (
        "contradictions (faster beyond the interval in one run" in one_machine and "  - contradiction: " in one_machine
    )
    two_machines = render_consistency(result, "different machines")
    assert "contradiction" not in two_machines and "  - different machines: infer_fp32" in two_machines


def test_a_difference_inside_the_margin_is_not_called():
    base = [100.0] * 9
    slightly = [103.0, 102, 104, 103, 103, 102, 104, 103, 103]  # 3% faster, tightly: [1.02-1.04]
    assert stats.paired_ratio(base, slightly).decided  # no margin: the interval excludes 1
    within = stats.paired_ratio(base, slightly, margin=0.05)
    assert not within.decided
    assert within.words() == "1.03x faster [1.02-1.04]: not called (interval not beyond the 5% margin)"
    # 1.09x slower, but the interval [0.90-0.98] reaches inside the band: it once read "within the 5% margin"
    slower = stats.paired_ratio(base, [88.0, 90, 91, 92, 92, 93, 95, 98, 99], margin=0.05)
    assert not slower.decided
    assert slower.words() == "1.09x slower [0.90-0.98]: not called (interval not beyond the 5% margin)"
    assert stats.paired_ratio(base, [x * 1.05 for x in slightly], margin=0.05).decided  # [1.07-1.09]
    assert tables.NOISE_MARGIN == 0.05


def test_a_window_settles_for_about_a_tenth_of_a_second_before_its_clock():
    from bench.measure.timing import SETTLE_MAX_STEPS, SETTLE_S, settle_steps

    assert settle_steps(0.004) == round(SETTLE_S / 0.004) == 25  # a CIFAR ResNet inference step
    assert settle_steps(0.06) == 2 and settle_steps(0.3) == 0  # a VGG training step: none
    assert settle_steps(1e-6) == SETTLE_MAX_STEPS
