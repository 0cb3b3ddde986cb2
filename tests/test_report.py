"""Reports from records made by hand: golden tables, CSV round trip, memory fit, compare, plots, flags."""

import csv
import dataclasses
import json

import pytest

from bench.commands.cli import main
from bench.config import Config
from bench.measure.stats import iqr, latency_summary, median, percentile, throughput_summary
from bench.report import tables
from bench.report.compare import compare_runs
from bench.report.run import write_report
from bench.store.records import RECORD_FIELDS, Record, RecordError, make_record


def rec(framework, model, batch, img_s, mode="train", status="ok", memory=None, spread=0.01, **extra):
    config = Config(framework, model, batch, mode, image_size=32)
    if status != "ok":
        return make_record(config, status, error=extra.pop("error", "boom"))
    return make_record(
        config, "ok", throughput_img_s=img_s, throughput_iqr_img_s=img_s * spread, throughput_min_img_s=img_s * (1 - spread),
        throughput_max_img_s=img_s * (1 + spread), throughput_cv=spread / 2, latency_ms_p50=1000 * batch / img_s,
        window_throughputs_img_s=[img_s * f for f in (1 - spread, 1 + spread, 1, 1, 1 - spread / 2, 1 + spread / 2)],
        latency_ms_p90=1100 * batch / img_s, latency_ms_p99=1200 * batch / img_s, first_step_s=1.5,
        peak_memory_bytes=memory, memory_source="hand-made", flops_per_img=2e9, achieved_tflops=img_s * 6e9 / 1e12,
        cpu_util_cores=1.9, **extra,
    )  # fmt: skip


def test_statistics_against_hand_computed_values():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)
    assert median([5, 1, 3]) == 3
    assert iqr([1, 2, 3, 4, 5]) == 2.0
    summary = throughput_summary([1.0, 2.0, 0.5, 1.0, 1.0], [100] * 5)
    assert (
        summary["throughput_img_s"] == 100
        and summary["throughput_min_img_s"] == 50
        and summary["throughput_max_img_s"] == 200
    )
    assert latency_summary([0.010, 0.020, 0.030])["latency_ms_p50"] == pytest.approx(20.0)


def test_number_formatting_is_human():
    assert [tables.sig3(v) for v in (12345.6, 123.456, 1.23456, 0.0012345, None, 0)] == [
        "12,300",
        "123",
        "1.23",
        "0.00123",
        "—",
        "0",
    ]


def test_memory_fit_recovers_fixed_and_per_image_cost():
    mib = tables.MIB
    fixed, per_image = tables.memory_fit([(1, 110 * mib), (2, 120 * mib), (4, 140 * mib)])
    assert fixed == pytest.approx(100) and per_image == pytest.approx(10)


RECORDS = [
    rec("torch", "resnet20_cifar", 2, 100.0, memory=110 * 2**20),
    rec("torch", "resnet20_cifar", 4, 180.0, memory=120 * 2**20),
    rec("keras-tensorflow", "resnet20_cifar", 2, 123.0, memory=50 * 2**20),
    rec("keras-tensorflow", "resnet20_cifar", 4, 90.0, status="oom", error="ResourceExhaustedError: OOM"),
    rec("torch", "resnet56_cifar", 2, 40.0),
    rec("torch", "resnet56_cifar", 4, 200.0),  # deeper yet faster: flagged
]

GOLDEN_THROUGHPUT = """| model          | b=2 (img/s)   | b=4 (img/s)   |
|----------------|---------------|---------------|
| resnet20_cifar | 100           | 180           |
| resnet56_cifar | 40.0          | 200           |"""

# Sequential (no shared cell): 123/100, interval [123 x 0.99 / 101, 123 x 1.01 / 99] = [1.206, 1.255].
GOLDEN_RATIO = """| keras-tensorflow vs torch   | b=2                      | b=4                  |
|-----------------------------|--------------------------|----------------------|
| resnet20_cifar              | 1.23x faster [1.21-1.25] | keras-tensorflow OOM |
| resnet56_cifar              | —                        | —                    |"""


def test_golden_tables_in_the_markdown_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in RECORDS))
    report = write_report(run)
    text = report.path.read_text()
    assert GOLDEN_THROUGHPUT in text
    assert GOLDEN_RATIO in text
    assert (
        "| resnet20_cifar | torch            | 110         | 120         | —                     | 100 + 5.00/img "
        in text
    )
    assert "nan" not in text.lower() and "None" not in text
    assert (
        "| keras-tensorflow | resnet20_cifar | train  | fp32        | 4       | OOM      | ResourceExhaustedError: OOM |"
        in text
    )


def test_csv_round_trip(tmp_path):
    from bench.report.run import write_csv

    write_csv(RECORDS, tmp_path / "summary.csv")
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == len(RECORDS)
    assert set(RECORD_FIELDS) <= set(rows[0])
    assert (
        float(rows[0]["throughput_img_s"]) == 100.0 and rows[3]["status"] == "oom" and rows[3]["throughput_img_s"] == ""
    )


def test_sanity_flags_trip_on_records_built_to_trip_them():
    noisy = rec("torch", "resnet20_cifar", 8, 150.0)
    noisy = dataclasses.replace(noisy, throughput_cv=0.12, window_throughputs_img_s=(120, 150, 150, 150, 150, 160))
    flags = tables.sanity_flags(RECORDS + [noisy])
    assert any(f.kind == "depth" and "resnet56_cifar" in f.text and "vs resnet20_cifar's 180" in f.text for f in flags)
    assert any(f.kind == "uncertain" and "CV 12.0%" in f.text and "uncertain by up to 20%" in f.text for f in flags)
    assert not any(f.kind == "batch" and "b=8" in f.text for f in flags)  # 150 img/s at b=8 is 83% of b=4's
    dropping = [rec("torch", "resnet20_cifar", 2, 100.0), rec("torch", "resnet20_cifar", 4, 50.0)]
    assert any(f.kind == "batch" and "50% of batch 2's" in f.text for f in tables.sanity_flags(dropping))


def test_plots_are_valid_non_empty_pngs(tmp_path):
    from bench.report.plots import write_plots

    files = write_plots(RECORDS, tmp_path)
    assert {f.name.split("_train")[0] for f in files} == {
        "throughput_vs_batch",
        "depth",
        "ratio_heatmap",
        "memory_vs_batch",
    }
    for path in files:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_compare_flags_a_planted_20_percent_regression(tmp_path, capsys):
    baseline = [rec("torch", "resnet20_cifar", b, 100.0 * b) for b in (2, 4, 8)]
    candidate = [
        rec("torch", "resnet20_cifar", 2, 200.0 * 0.8),
        rec("torch", "resnet20_cifar", 4, 401.0),
        rec("torch", "resnet20_cifar", 8, 800.0 * 1.3),
    ]
    verdicts = {c.config.batch_size: (c.verdict, round(c.change, 3)) for c in compare_runs(baseline, candidate)}
    assert verdicts == {2: ("regression", -0.2), 4: ("within spread", 0.002), 8: ("improvement", 0.3)}
    for name, records in (("a", baseline), ("b", candidate)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on-regression", "10"]) == 1
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on-regression", "25"]) == 0
    assert "-20.0%" in capsys.readouterr().out


def test_report_from_a_pytest_benchmark_json(tmp_path):
    data = {"machine_info": {"node": "box"}, "benchmarks": [{"extra_info": {"record": r.to_json()}} for r in RECORDS]}
    source = tmp_path / "out.json"
    source.write_text(json.dumps(data))
    assert main(["report", str(source)]) == 0
    assert GOLDEN_THROUGHPUT in (tmp_path / "out-report" / "report.md").read_text()


def test_a_vgg_and_its_5x5_twin_get_the_kernel_section(tmp_path):
    records = [
        rec("torch", "vgg11", 2, 10.0),
        rec("torch", "vgg11_5x5", 2, 8.0),
        rec("keras-tensorflow", "vgg11", 2, 9.0),
        rec("keras-tensorflow", "vgg11_5x5", 2, 9.9),
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    text = write_report(run).path.read_text()
    assert "### 3x3 pairs against one 5x5" in text
    assert "| vgg11   | 132.9M / 134.4M" in text
    assert "0.80x" in text and "1.10x" in text  # torch 8 / 10, keras-tensorflow 9.9 / 9


def test_records_of_the_old_tensorflow_name_load_as_keras_tensorflow(tmp_path):
    old = dict(rec("keras-tensorflow", "resnet20_cifar", 2, 100.0).to_json(), framework="tensorflow")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(
        json.dumps(rec("torch", "resnet20_cifar", 2, 80.0).to_json()) + "\n" + json.dumps(old) + "\n"
    )
    text = write_report(run).path.read_text()
    assert "keras-tensorflow vs torch" in text and "1.25x faster" in text


def test_a_record_is_immutable_and_its_json_round_trips():
    record = rec("torch", "resnet20_cifar", 2, 100.0, memory=110 * 2**20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "error"
    assert isinstance(record.window_throughputs_img_s, tuple)
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert record.config == Config("torch", "resnet20_cifar", 2, "train", image_size=32)


def test_a_record_of_the_first_schema_loads_and_a_foreign_field_is_named():
    first_schema = {  # schema 1: no schema_version, pairing, cell or layout-trial fields; the engine "tensorflow"
        "framework": "tensorflow", "model": "resnet20_cifar", "family": "resnet_cifar", "depth": 20, "batch_size": 2,
        "mode": "infer", "precision": "fp32", "compile": "off", "layout": "auto", "image_size": 32, "device": "cpu",
        "status": "ok", "error": None, "throughput_img_s": 90.0, "window_throughputs_img_s": [89.0, 91.0],
        "unavailable": {}, "env": {"host": "old"},
    }  # fmt: skip
    record = Record.from_json(first_schema)
    assert (record.framework, record.schema_version, record.cell_id) == ("keras-tensorflow", 1, None)
    with pytest.raises(RecordError, match="unknown field"):
        Record.from_json({**first_schema, "throughput": 3})
    with pytest.raises(RecordError, match="window_seconds must be a list of numbers"):
        Record.from_json({**first_schema, "window_seconds": "fast"})
