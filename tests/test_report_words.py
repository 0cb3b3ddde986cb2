"""Report words that mean what they say: the trust line's four counts, build and first step apart, p99
marked or withheld by its steps, and flags that name what they change, calibrated on the committed runs."""

import json
import statistics
from pathlib import Path

import pytest

from bench.measure import stats
from bench.measure.monitors import HEAP_SOURCE, POOL_SOURCE
from bench.report import tables
from bench.report.run import load_source, render_markdown, trust_summary
from tests.handmade import BASE, pair, record

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"


def test_the_trust_line_counts_decided_below_margin_same_and_no_interval_apart():
    base = [100.0] * 9
    verdicts = [
        stats.paired_ratio(base, [130.0] * 9, margin=0.05),  # decided
        stats.paired_ratio(base, [88.0, 90, 91, 92, 92, 93, 95, 98, 99], margin=0.05),  # [0.90-0.98]
        stats.paired_ratio(base, [95.0, 99, 100, 101, 102, 98, 100, 104, 97], margin=0.05),  # holds 1
        stats.paired_ratio(base[:3], [120.0] * 3, margin=0.05),  # three pairs: no interval
    ]
    assert trust_summary(verdicts, [], 8) == (
        "4 engine comparisons: 1 decided, 1 below the 5% margin (not called), 1 same within noise, "
        "1 without an interval (fewer than 6 windows); 0 flagged record(s) of 8"
    )


def test_build_and_first_step_have_columns_of_their_own():
    records = [
        record("torch", "resnet20_cifar", 2, 100.0, build_s=1.5, first_step_s=1.75),
        record("torch", "resnet20_cifar", 8, 300.0, build_s=0.002, first_step_s=0.252),
        record("keras-tensorflow", "resnet20_cifar", 2, 80.0, first_step_s=3.0),  # before build_s was recorded
    ]
    markdown = render_markdown(records, {}, [])[0]
    assert "| model          | framework        | layout        | b=2 build (s)   | b=2 first step (s)   |" in markdown
    assert "| resnet20_cifar | torch            | auto          | 1.50            | 0.250                | 0.00200         " \
           "| 0.250                |" in markdown  # fmt: skip
    assert "| resnet20_cifar | keras-tensorflow | channels_last | —               | 3.00†" in markdown
    assert "`†` build and first step together" in markdown


def test_p99_is_marked_below_100_steps_and_withheld_below_20_old_records_by_their_step_times():
    records = [
        record("torch", "resnet20_cifar", 2, 100.0, latency_ms_p50=10.0, latency_ms_p99=20.0, latency_samples=150),
        record("torch", "resnet32_cifar", 2, 100.0, latency_ms_p50=10.0, latency_ms_p99=21.0, latency_samples=50),
        record("torch", "resnet44_cifar", 2, 100.0, latency_ms_p50=10.0, latency_ms_p99=22.0, latency_samples=12),
        record("torch", "resnet56_cifar", 2, 100.0, latency_ms_p50=10.0, latency_ms_p99=23.0,
               step_seconds=[0.01] * 30),  # an older record: no latency_samples, its step times kept
    ]  # fmt: skip
    markdown = render_markdown(records, {}, [])[0]
    latency = markdown[markdown.index("### Latency") : markdown.index("### Utilization")]
    rows = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in latency.splitlines()
            if line.startswith("| resnet")}  # fmt: skip
    assert rows == {"resnet20_cifar": "20.0", "resnet32_cifar": "21.0*", "resnet56_cifar": "23.0*",
                    "resnet44_cifar": "—"}  # fmt: skip
    assert "`*` p99 from 30-50 steps: under 100 steps" in markdown
    assert "`—` p99 withheld: from 12 steps (under 20)" in markdown


def test_a_deeper_model_faster_only_within_noise_is_not_flagged():
    noisy = [90.0, 95, 100, 100, 105, 110]
    records = [
        record("torch", "vgg11", 2, 0, rates=noisy),
        record("torch", "vgg13", 2, 0, rates=[x * 1.04 for x in noisy]),  # 4% faster, intervals overlap
    ]
    assert not [f for f in tables.sanity_flags(records) if f.kind == "depth"]
    records[1] = record("torch", "vgg13", 2, 0, rates=[x * 1.5 for x in noisy])  # beyond both intervals
    (flag,) = [f for f in tables.sanity_flags(records) if f.kind == "depth"]
    assert "although deeper; the depth-scaling table cannot be read for this pair" in flag.text


def test_an_uncertain_record_names_what_it_does_to_its_comparison():
    torch_rates = [100.0, 50, 104, 98, 55, 102, 101, 99, 60, 100]  # half-speed bursts, as PyTorch VGG training
    records = pair("vgg11", 2, torch_rates, [x * 1.01 for x in BASE] + [100.0], "c1", mode="train")
    (flag,) = tables.sanity_flags(records)
    assert flag.kind == "uncertain" and flag.record.framework == "torch"
    assert "is uncertain by up to 45% (95% interval of the median: 55.0-102 img/s)" in flag.text
    assert flag.text.endswith("its comparison keras-tensorflow vs torch: not decided (same within noise [0.97-1.87])")


DEFAULT_RUNS = sorted(
    run for run in RUNS.glob("*") if (run / "plan.json").exists()
    and json.loads((run / "plan.json").read_text()).get("preset") == "cpu-default"
)  # fmt: skip


def test_the_committed_default_runs_exist():
    assert len(DEFAULT_RUNS) >= 3


def heap_measured(run: Path) -> bool:
    """A run made with this version's CPU memory measure (the heap's bytes in use, not resident memory)."""
    return all(r.memory_source in (HEAP_SOURCE, POOL_SOURCE) for r in load_source(run).records if r.status == "ok")


def test_a_committed_default_run_was_made_with_this_versions_memory_measure():
    assert any(heap_measured(run) for run in DEFAULT_RUNS)


@pytest.mark.parametrize("run", DEFAULT_RUNS, ids=lambda p: p.name)
def test_at_most_a_quarter_of_a_committed_default_runs_records_carry_a_flag(run):
    """The quarter holds for runs of this version on a quiet machine; older runs measured CPU memory as resident
    size, whose peaks could fall as the batch grew (flagged, and counted in their trust line all the same). A run
    whose windows' median CV passes tables.NOISY_RUN_CV, or more than a quarter of whose medians are uncertain, says
    so above its tables instead, with how many, and why, and is held to no quarter: there the flags are the figures'
    own uncertainty."""
    loaded = load_source(run)
    markdown, _ = render_markdown(loaded.records, loaded.env, [], loaded)
    flags = tables.sanity_flags(loaded.records)
    flagged = {id(f.record) for f in flags}
    noisy = (
        statistics.median(r.throughput_cv for r in loaded.records if r.throughput_cv is not None) > tables.NOISY_RUN_CV
    )
    uncertain = len({id(f.record) for f in flags if f.kind == "uncertain"})
    noisy_line = f"**Noisy run**: {uncertain} of {len(loaded.records)} records' throughput is uncertain"
    shown = noisy or 4 * uncertain > len(loaded.records)
    assert (noisy_line in markdown) == shown
    if shown:  # the line gives the reason that holds
        assert (f"above the {tables.NOISY_RUN_CV:.0%} this report calls noisy" in markdown) == noisy
    if heap_measured(run) and not shown:
        assert 4 * len(flagged) <= len(loaded.records), [f.text for f in flags]
    assert all("; " in f.text for f in flags)  # each says what it changes after what it found
    trust = next(line for line in markdown.splitlines() if line.startswith("**Trust**"))
    assert f"{len(flagged)} flagged record(s) of {len(loaded.records)}" in trust
    committed = (run / "report.md").read_text()
    assert trust in committed, "report.md was not rendered by this version: python -m bench report " + str(run)
