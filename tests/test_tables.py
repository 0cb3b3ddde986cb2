"""What the tables say of records: the default preset's cells, flags grouped and ranked, and two runs checked
for contradictions, agreement and decided cells."""

import os

from bench.config import PRESETS, Config
from bench.measure import stats
from bench.report import tables
from bench.store.records import make_record

QUIET = open(os.devnull, "w")  # noqa: SIM115


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
