"""The figures README.md (and docs/*.md) quote, regenerated from the committed result files.

A quoted figure sits between two markers, inline or around a block (a table, a code block):

    On this CPU the runs took <!-- figure:window-s 20261128-094532-cpu-cpu-default -->179 s<!-- /figure --> ...

The marker names a figure function below and its arguments (shell words: positional, then key=value filters;
a filter's value may be a comma list). `python -m bench docs` rewrites every figure's text from its files;
`python -m bench docs --check` changes nothing and exits 1 naming each figure whose text no longer matches
them (or that cannot be computed: a file gone, a record missing). A new figure is one small function
registered with `@figure("name")`: it receives the `Sources` (cached readers of the checkout's files) and
the marker's arguments, and returns the text.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A marker quoted in inline code (`<!-- figure:...`) is text about markers, not a figure.
MARKER = re.compile(r"(?<!`)<!-- figure:(?P<name>[\w.-]+)(?P<args>[^>]*?) -->(?P<body>.*?)<!-- /figure -->", re.DOTALL)
FIGURES: dict = {}


class FigureError(Exception):
    """A figure that cannot be computed from its files (a file or record missing, an ambiguous filter)."""


def figure(name: str):
    def register(function):
        FIGURES[name] = function
        return function

    return register


# --- reading the committed files ---------------------------------------------------------------------------


class Sources:
    """Readers of one checkout's result files, each read once per invocation."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict = {}

    def _once(self, key, load):
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def path(self, relative: str) -> Path:
        path = self.root / relative
        if not path.exists():
            raise FigureError(f"{relative} does not exist")
        return path

    def run(self, name: str) -> list:
        """A run folder's current records (one per configuration), after the report's checks."""
        from bench.report.run import load_source

        folder = self.path(f"results/runs/{name}")
        return self._once(("run", name), lambda: load_source(folder).records)

    def json(self, relative: str):
        return self._once(("json", relative), lambda: json.loads(self.path(relative).read_text(encoding="utf-8")))

    def jsonl(self, relative: str) -> list[dict]:
        text = self._once(("text", relative), lambda: self.path(relative).read_text(encoding="utf-8"))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def text(self, relative: str) -> str:
        return self._once(("text", relative), lambda: self.path(relative).read_text(encoding="utf-8"))

    def profile(self, name: str) -> dict:
        return self.json(f"results/profiles/{name}/profile.json")

    def flow(self, name: str) -> dict:
        return self.json(f"results/gradient-flow/{name}/gradient_flow.json")

    def scaling(self, name: str) -> list:
        from bench.studies.scaling.scaling import ScaleRecord

        return [ScaleRecord.from_json(r) for r in self.jsonl(f"results/scaling/{name}/scaling.jsonl")]

    def overhead(self, name: str) -> list[dict]:
        """The overhead benchmark's per-engine results (older files are the bare list, newer ones
        {"env", "results"})."""
        data = self.json(f"results/overhead/{name}.json")
        return data["results"] if isinstance(data, dict) else data


# --- formatting --------------------------------------------------------------------------------------------


def _sig(value: float) -> str:
    from bench.report.tables import sig3

    return sig3(value)


def _img_s(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else _sig(value)


def _span(values, fmt) -> str:
    """'a-b' from the smallest to the largest value, or one figure when both print the same."""
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low}-{high}"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {round(rest / 60)} min"
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest:02d} s"
    return f"{seconds} s"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def _table(headers, rows) -> str:
    from bench.report.render import markdown_table

    return markdown_table(rows, headers)


NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


# --- run records -------------------------------------------------------------------------------------------

RECORD_KEYS = {"engine": "framework", "framework": "framework", "model": "model", "batch": "batch_size",
               "mode": "mode", "precision": "precision", "compile": "compile", "image_size": "image_size",
               "layout": "layout"}  # fmt: skip


def _matches(record, filters: dict) -> bool:
    for key, wanted in filters.items():
        if key not in RECORD_KEYS:
            raise FigureError(f"unknown filter {key!r}; valid: {', '.join(RECORD_KEYS)}")
        if str(getattr(record, RECORD_KEYS[key])) not in wanted.split(","):
            return False
    return True


def _records(sources: Sources, run: str, filters: dict) -> list:
    return [r for r in sources.run(run) if _matches(r, filters)]


def _one(sources: Sources, run: str, filters: dict):
    chosen = [r for r in _records(sources, run, filters) if r.ok]
    if len(chosen) != 1:
        raise FigureError(f"{run}: {len(chosen)} ok records match {filters}, not one")
    return chosen[0]


def _comparisons(sources: Sources, run: str, filters: dict) -> list[tuple]:
    """(section, engine, model, batch, Ratio) of every engine comparison the run's report shows, filtered."""
    from bench.report import tables

    records = sources.run(run)
    found = []
    for section in tables.sections(records):
        comparison = tables.compare_engines(tables.select(records, section))
        if comparison is None:
            continue
        for (engine, model, batch), ratio in comparison.ratios.items():
            row = dict(engine=engine, framework=engine, model=model, batch=str(batch), mode=section.mode,
                       precision=section.precision, compile=section.compile, image_size=str(section.image_size))  # fmt: skip
            unknown = set(filters) - set(row)
            if unknown:
                raise FigureError(f"unknown filter {sorted(unknown)}; valid: {', '.join(row)}")
            if all(row[k] in v.split(",") for k, v in filters.items()):
                found.append((section, engine, model, batch, ratio))
    if not found:
        raise FigureError(f"{run}: no engine comparison matches {filters}")
    return found


@figure("findings-table")
def findings_table(sources: Sources, run: str, top: str = "6") -> str:
    """The run's ranked findings (findings.py) as a table: cell, verdict with its interval, and why."""
    from bench.report.findings import findings

    found = findings(sources.run(run))
    rows = ["| configuration | verdict [95% interval] | why (measured in the same run) |", "|---|---|---|"]
    for finding in found.decided[: int(top)]:
        speed = finding.sentence().replace("**", "").split(": ", 1)[1]
        rows.append(
            f"| {finding.model} {finding.section}, b={finding.batch} | {speed} | {'; '.join(finding.evidence)} |"
        )
    if found.same:
        rows.append(f"| {len(found.same)} more | same within noise | — |")
    if found.not_called:
        rows.append(f"| {len(found.not_called)} more | below the 5% margin: not called | — |")
    return "\n".join(rows)


@figure("categories-add-up")
def categories_add_up(sources: Sources, run: str) -> str:
    """In how many of a run's profiled findings the operator categories' differences add up to the measured
    gap within findings.GAP_TOLERANCE: '2 of 11'."""
    from bench.report.findings import findings

    found = findings(sources.run(run))
    if not found.profiled:
        raise FigureError(f"results/runs/{run} has no finding with operator categories")
    return f"{found.adding_up} of {found.profiled}"


@figure("categories-inside-interval")
def categories_inside_interval(sources: Sources, run: str) -> str:
    """In how many more of a run's profiled findings the categories' differences miss the gap by more than
    findings.GAP_TOLERANCE but fall inside the gap's own 95% interval: '4'."""
    from bench.report.findings import findings

    found = findings(sources.run(run))
    if not found.profiled:
        raise FigureError(f"results/runs/{run} has no finding with operator categories")
    return str(found.inside_interval)


@figure("gaps-measured-within")
def gaps_measured_within(sources: Sources, run: str) -> str:
    """In how many of a run's profiled findings the windows' own 95% interval of the gap lies within
    findings.GAP_TOLERANCE of it: '4 of 16'."""
    from bench.report.findings import findings

    found = findings(sources.run(run))
    if not found.profiled:
        raise FigureError(f"results/runs/{run} has no finding with operator categories")
    return f"{found.gaps_measured_within} of {found.profiled}"


@figure("explain-share")
def explain_share(sources: Sources, run: str) -> str:
    """The explain passes' share of a run's wall time, from its records and env.json ('9.5%')."""
    env = sources.json(f"results/runs/{run}/env.json")
    spent = sum(r.explain_s or 0.0 for r in sources.run(run))
    if env.get("wall_s") is None or not spent:
        raise FigureError(f"results/runs/{run} records no explain pass or no wall_s")
    return f"{spent / env['wall_s']:.1%}"


def _window_starts(sources: Sources, run: str, models: str) -> list[tuple[float, float]]:
    """Per record of `models` (a glob) with at least 5 steps per window: the median over its windows of the first
    step's time over the record's median step, and the first five steps' time beyond five median steps as a
    share of the windows' time."""
    import fnmatch
    import statistics

    found = []
    for record in sources.run(run):
        n, steps = record.steps_per_window or 0, record.step_seconds
        if not record.ok or n < 5 or not steps or not fnmatch.fnmatch(record.model, models):
            continue
        median, count = statistics.median(steps), len(steps) // n
        first = statistics.median(steps[i * n] for i in range(count)) / median
        excess = sum(sum(steps[i * n : i * n + 5]) - 5 * median for i in range(count)) / sum(steps)
        found.append((first, excess))
    if not found:
        raise FigureError(f"results/runs/{run} has no record of {models} with 5 or more steps per window")
    return found


@figure("window-first-step")
def window_first_step(sources: Sources, run: str, models: str = "*") -> str:
    """How slow a window's first step is against the median step, across a run's records: '1.10-4.12x'."""
    firsts = [f for f, _ in _window_starts(sources, run, models)]
    return f"{min(firsts):.2f}-{max(firsts):.2f}x"


@figure("window-first-five")
def window_first_five(sources: Sources, run: str, models: str = "*") -> str:
    """What a window's first five steps add beyond five median steps, as a share of the window: '1.2-5.0%'."""
    shares = [e for _, e in _window_starts(sources, run, models)]
    return f"{min(shares):.1%}-{max(shares):.1%}"


@figure("suite")
def suite(sources: Sources, log: str) -> str:
    """The test suite's size and time from a committed log of `tox -e py` (results/tests/LOG):
    '587 tests (1 skipped) in 23 min 22 s on Intel(R) Xeon(R) Processor, 2 cores'."""
    text = sources.text(f"results/tests/{log}")
    summary = re.search(r"^=* ?(\d+) passed(?:, (\d+) skipped)? in ([\d.]+)s", text, re.MULTILINE)
    failures = re.search(r"^=* ?(?:\d+ \w+, )*\d+ (failed|errors?)\b.* in [\d.]+s", text, re.MULTILINE)
    machine = re.search(r"^# .*?\), (.+), (\d+) cores,", text, re.MULTILINE)
    if summary is None or machine is None or failures:
        raise FigureError(f"results/tests/{log} holds no passing pytest summary with its machine")
    passed, skipped, seconds = int(summary[1]), int(summary[2] or 0), float(summary[3])
    return f"{passed + skipped} tests ({skipped} skipped) in {duration(seconds)} on {machine[1]}, {machine[2]} cores"


@figure("coverage")
def coverage(sources: Sources, log: str) -> str:
    """Line coverage of bench/ and implementations/ in the test processes, from pytest-cov's TOTAL row in a
    committed log (results/tests/LOG): '70.4% of 9,397 lines'."""
    total = re.search(r"^TOTAL\s+(\d+)\s+(\d+)\s+\d+%", sources.text(f"results/tests/{log}"), re.MULTILINE)
    if total is None:
        raise FigureError(f"results/tests/{log} holds no coverage TOTAL row")
    statements, missed = int(total[1]), int(total[2])
    return f"{100 * (statements - missed) / statements:.1f}% of {statements:,} lines"


@figure("machine")
def machine_of(sources: Sources, run: str) -> str:
    """The machine a run was made on: 'Intel(R) Xeon(R) Processor, 2 cores' (a GPU's name where it ran on one)."""
    from bench.report.html import machine_name

    return machine_name(sources.json(f"results/runs/{run}/env.json"), sources.run(run))


@figure("wall")
def wall(sources: Sources, run: str) -> str:
    """A run's wall time from its env.json ('7 min 12 s')."""
    env = sources.json(f"results/runs/{run}/env.json")
    if env.get("wall_s") is None:
        raise FigureError(f"results/runs/{run}/env.json records no wall_s")
    return duration(env["wall_s"])


@figure("ratio-table")
def ratio_table(sources: Sources, run: str, mode: str, **filters) -> str:
    """The report's comparison table of one mode: one row per model, one column per batch."""
    from bench.report import tables
    from bench.report.run import _md

    records = [r for r in sources.run(run) if r.mode == mode and _matches(r, filters)]
    blocks = []
    for section in tables.sections(records):
        chosen = tables.select(records, section)
        comparison = tables.compare_engines(chosen)
        if comparison is None:
            continue
        for other in tables.engine_order(chosen)[1:]:
            blocks.append(_md(*tables.comparison_table(chosen, comparison, other)))
    if not blocks:
        raise FigureError(f"{run}: no {mode} comparison")
    return "\n\n".join(blocks)


@figure("ratio-grid")
def ratio_grid(sources: Sources, run: str, engine: str) -> str:
    """One engine against the baseline in every mode and batch of a run: rows models, columns mode x batch."""
    found = _comparisons(sources, run, {"engine": engine})
    columns = sorted({(s.mode, b) for s, _, _, b, _ in found}, key=lambda c: (c[0] != "train", c[1]))
    models = list(dict.fromkeys(m for _, _, m, _, _ in found))
    from bench.report.tables import BASELINE_ENGINE, model_order

    cells = {(m, s.mode, b): r.words() for s, _, m, b, r in found}
    sizes = {m: s.image_size for s, _, m, _, _ in found}
    rows = [[f"{m} ({sizes[m]} px)", *(cells.get((m, *c), "—") for c in columns)] for m in model_order(models)]
    lines = [
        "| " + " | ".join([f"{engine} vs {BASELINE_ENGINE}", *(f"{mode} b={b}" for mode, b in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


@figure("trust")
def trust(sources: Sources, run: str) -> str:
    """The report's one-line trust summary, as the console prints it."""
    from bench.report import tables
    from bench.report.run import trust_summary

    records = sources.run(run)
    verdicts = [r for *_, r in _comparisons(sources, run, {})]
    return f"```\ntrust: {trust_summary(verdicts, tables.sanity_flags(records))}\n```"


@figure("ratio-range")
def ratio_range(sources: Sources, run: str, **filters) -> str:
    """'1.58-2.08x slower': the span of the matching comparisons (all one way), the engine against PyTorch."""
    ratios = [r.ratio for *_, r in _comparisons(sources, run, filters)]
    if all(r < 1 for r in ratios):
        return _span([1 / r for r in ratios], lambda v: f"{v:.2f}") + "x slower"
    if all(r >= 1 for r in ratios):
        return _span(ratios, lambda v: f"{v:.2f}") + "x faster"
    return f"from {1 / min(ratios):.2f}x slower to {max(ratios):.2f}x faster"


@figure("verdicts")
def verdicts(sources: Sources, run: str, **filters) -> str:
    """Each matching comparison in the report's words, by batch: 'same within noise [0.98-1.03] at b=2, ...'."""
    found = sorted(_comparisons(sources, run, filters), key=lambda f: (f[2], f[3]))
    return ", ".join(f"{r.words()} at b={b}" for _, _, _, b, r in found)


@figure("decided")
def decided(sources: Sources, run: str) -> str:
    """'10 of 16': comparisons whose interval lies beyond the noise margin."""
    found = [r for *_, r in _comparisons(sources, run, {})]
    return f"{sum(r.decided for r in found)} of {len(found)}"


@figure("agreeing")
def agreeing(sources: Sources, run_a: str, run_b: str) -> str:
    """'15 of 16': comparisons of two runs whose ratios are within compare.AGREEMENT of each other."""
    from bench.report.compare import ratio_consistency

    result = ratio_consistency(sources.run(run_a), sources.run(run_b))
    return f"{result.agreeing} of {result.cells}"


@figure("contradictions")
def contradictions(sources: Sources, run_a: str, run_b: str) -> str:
    """'none' or the count of cells decided faster in one run and slower in the other."""
    from bench.report.compare import ratio_consistency

    found = ratio_consistency(sources.run(run_a), sources.run(run_b)).opposed
    return "none" if not found else str(len(found))


@figure("rerun-spread")
def rerun_spread(sources: Sources, run_a: str, run_b: str, statistic: str = "max") -> str:
    """How far one configuration's img/s moved between two runs of one plan: the largest (or median) change."""
    from bench.measure.stats import median

    first = {r.config.key(): r for r in sources.run(run_a) if r.ok}
    changes = [abs(r.throughput_img_s / first[r.config.key()].throughput_img_s - 1)
               for r in sources.run(run_b) if r.ok and r.config.key() in first]  # fmt: skip
    if not changes:
        raise FigureError(f"{run_a} and {run_b} share no measured configuration")
    pick = {"max": max, "median": median}
    if statistic not in pick:
        raise FigureError(f"statistic must be one of {', '.join(pick)}")
    return _pct(pick[statistic](changes))


@figure("speed-range")
def speed_range(sources: Sources, run_a: str, run_b: str, **filters) -> str:
    """'1.3-2.0x': run_a's img/s over run_b's, over the configurations both measured (filtered)."""
    second = {r.config.key(): r for r in _records(sources, run_b, filters) if r.ok}
    ratios = [r.throughput_img_s / second[r.config.key()].throughput_img_s
              for r in _records(sources, run_a, filters) if r.ok and r.config.key() in second]  # fmt: skip
    if not ratios:
        raise FigureError(f"{run_a} and {run_b} share no measured configuration")
    return _span(ratios, lambda v: f"{v:.1f}") + "x"


@figure("img-s")
def img_s(sources: Sources, run: str, **filters) -> str:
    """One record's img/s."""
    return _img_s(_one(sources, run, filters).throughput_img_s)


@figure("cv")
def cv(sources: Sources, run: str, **filters) -> str:
    """The span of the matching records' window CVs: '7-14%'."""
    values = [r.throughput_cv for r in _records(sources, run, filters) if r.ok and r.throughput_cv is not None]
    if not values:
        raise FigureError(f"{run}: no record with a CV matches {filters}")
    return _span(values, lambda v: f"{v:.0%}").replace("%-", "-")


@figure("first-step")
def first_step(sources: Sources, run: str, **filters) -> str:
    """One record's first step (build, trace, compile, first run): '21 s'."""
    return duration(_one(sources, run, filters).first_step_s)


@figure("window-s")
def window_s(sources: Sources, run: str) -> str:
    """The run's seconds in timed windows (every record's windows summed)."""
    return duration(sum(sum(r.window_seconds or []) for r in sources.run(run)))


@figure("plan")
def plan_setting(sources: Sources, run: str, setting: str) -> str:
    """A measurement setting of a run's plan.json: 'windows' gives '10', 'min_window_s' '0.25'."""
    settings = sources.json(f"results/runs/{run}/plan.json")["settings"]
    if setting not in settings:
        raise FigureError(f"{run}/plan.json has no setting {setting!r}; it has {', '.join(settings)}")
    value = settings[setting]
    return f"{value:g}" if isinstance(value, float) else str(value)


@figure("layout-gain")
def layout_gain(sources: Sources, run: str, **filters) -> str:
    """By how much channels_last beat NCHW in PyTorch's layout trial, where the trial chose channels_last."""
    gains = [r.layout_trial["channels_last_img_s"] / r.layout_trial["channels_first_img_s"] - 1
             for r in _records(sources, run, {"engine": "torch", **filters})
             if r.ok and isinstance(r.layout_trial, dict) and r.layout_chosen == "channels_last"]  # fmt: skip
    if not gains:
        raise FigureError(f"{run}: no layout trial chose channels_last among {filters}")
    return _span(gains, lambda v: f"{v:.0%}").replace("%-", "-")


@figure("memory-below-bound")
def memory_below_bound(sources: Sources, run: str) -> str:
    """'No memory figure' or 'N memory figures' withheld or flagged for falling below the model's weights."""
    from bench.report import tables

    n = sum(f.kind == "memory" for f in tables.sanity_flags(sources.run(run)))
    return "No memory figure" if n == 0 else _count(n, "memory figure")


# --- presets and estimates ---------------------------------------------------------------------------------


@figure("preset")
def preset(sources: Sources, name: str, option: str) -> str:
    """An option of an embedded preset (bench/config/presets.py): 'windows' gives '10'."""
    from bench.config import PRESETS

    if name not in PRESETS or option not in PRESETS[name]:
        raise FigureError(f"preset {name!r} has no option {option!r}")
    value = PRESETS[name][option]
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@figure("median-interval")
def median_interval_ranks(sources: Sources, name: str) -> str:
    """The order statistics of the 95% interval for a median of as many pairs as the preset has windows."""
    from bench.config import PRESETS
    from bench.measure.stats import median_rank

    n = PRESETS[name]["windows"]
    k = median_rank(n)
    return f"{n} pairs give [x({k}), x({n + 1 - k})]"


@figure("median-interval-fewest")
def median_interval_fewest(sources: Sources) -> str:
    from bench.measure.stats import median_rank

    return str(next(n for n in range(1, 100) if median_rank(n) is not None))


@figure("estimate")
def estimate_figure(
    sources: Sources, preset_name: str, machine: str, engine: str | None = None, partial: str = "no", **options
) -> str:
    """The duration `bench run` prints for a preset (options overridden) on the machine of a committed run,
    from every committed run's records: '5 min 28 s'; with partial=yes, of the configurations that have records
    ('3 min 03 s for 6 of its 8 configurations')."""
    from bench.config import OPTIONS, PRESETS, build_plan
    from bench.execute.estimate import device_key_of, estimate, load_history

    if preset_name not in PRESETS:
        raise FigureError(f"unknown preset {preset_name!r}")
    key = device_key_of(next(r for r in sources.run(machine) if r.ok))
    parsed = {name: OPTIONS[name].parse(value) for name, value in options.items()}
    plan = build_plan({**PRESETS[preset_name], "device": key[0], **parsed}, preset_name)
    if engine is not None:
        from dataclasses import replace

        plan = replace(plan, configs=tuple(c for c in plan.configs if c.framework == engine))
    result = estimate(plan, load_history(sources.path("results/runs")), key)
    if not result.not_estimated:
        return duration(result.seconds)
    if partial != "yes":
        raise FigureError(f"not estimated, no record: {result.not_estimated} (partial=yes gives the rest)")
    done = result.measured + result.scaled
    return f"{duration(result.seconds)} for {done} of its {len(plan.configs)} configurations"


# --- the H200 bare loops -----------------------------------------------------------------------------------


@figure("bare-loop-ratios")
def bare_loop_ratios(sources: Sources, run: str, loops: str) -> str:
    """Harness img/s (the run) over the bare loop's (the project's model) for every case both measured, by
    batch: '0.999-1.003 in the five batch-256 cases and 0.86 in the batch-1 case'."""
    by_batch: dict[int, list[float]] = {}
    for loop in sources.jsonl(f"results/runs/{loops}"):
        if loop.get("source") != "project":
            continue
        filters = dict(engine="torch", model=loop["model"], mode=loop["mode"], precision=loop["precision"],
                       batch=str(loop["batch"]), compile="off")  # fmt: skip
        harness = _one(sources, run, filters)
        by_batch.setdefault(loop["batch"], []).append(harness.throughput_img_s / loop["img_s"])
    if not by_batch:
        raise FigureError(f"{loops} has no case of the project's model")
    parts = []
    for batch in sorted(by_batch, reverse=True):
        ratios = by_batch[batch]
        digits = 3 if max(abs(r - 1) for r in ratios) < 0.05 else 2
        count = NUMBER_WORDS.get(len(ratios), str(len(ratios)))
        cases = f"the batch-{batch} case" if len(ratios) == 1 else f"the {count} batch-{batch} cases"
        parts.append(f"{_span(ratios, lambda v, d=digits: f'{v:.{d}f}')} in {cases}")
    return " and ".join(parts)


@figure("loop-img-s")
def loop_img_s(sources: Sources, loops: str, **filters) -> str:
    """img/s of one line of a bare-loop JSONL file (filters on its own fields)."""
    chosen = [row for row in sources.jsonl(f"results/runs/{loops}")
              if all(str(row.get(k)) in v.split(",") for k, v in filters.items())]  # fmt: skip
    if len(chosen) != 1:
        raise FigureError(f"{loops}: {len(chosen)} lines match {filters}, not one")
    return _img_s(chosen[0]["img_s"])


# --- the overhead benchmark --------------------------------------------------------------------------------

ENGINE_NAMES = {"torch": "PyTorch", "tensorflow": "TensorFlow", "keras-tensorflow": "TensorFlow",
                "keras-jax": "Keras on JAX"}  # fmt: skip
MODEL_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "resnet20_cifar": "ResNet-20 CIFAR",
               "vgg11": "VGG-11"}  # fmt: skip
LAYOUT_NAMES = {"channels_first": "NCHW", "channels_last": "channels_last"}


def _case_name(framework: str, case: dict) -> str:
    model = MODEL_NAMES.get(case["model"], case["model"])
    return f"{ENGINE_NAMES.get(framework, framework)} {model} {case['image_size']} px {case['mode']}"


def _overhead_cases(sources: Sources, names: tuple[str, ...]) -> list[tuple[str, dict]]:
    return [
        (result["framework"], case) for name in names for result in sources.overhead(name) for case in result["cases"]
    ]


@figure("overhead-table")
def overhead_table(sources: Sources, *names: str) -> str:
    """Harness over hand-written loop per case, with its interval and the layout both used."""
    rows = []
    for framework, case in _overhead_cases(sources, names):
        layout = "NHWC" if framework != "torch" else LAYOUT_NAMES.get(case["harness_layout"], case["harness_layout"])
        interval = f"{case['ratio_low']:.3f}-{case['ratio_high']:.3f}" if case["ratio_low"] is not None else "—"
        rows.append(f"| {_case_name(framework, case)} | {case['ratio']:.3f} | {interval} | {layout} |")
    header = ["| case | harness / hand-written loop | 95% interval | layout (harness = loop's best) |",
              "|---|---|---|---|"]  # fmt: skip
    return "\n".join(header + rows)


@figure("overhead-pairs")
def overhead_pairs(sources: Sources, *names: str) -> str:
    """Alternating pairs of windows per case."""
    pairs = {case["pairs"] for _, case in _overhead_cases(sources, names)}
    if len(pairs) != 1:
        raise FigureError(f"the cases have different pair counts: {sorted(pairs)}")
    return str(pairs.pop())


@figure("overhead-layout")
def overhead_layout(sources: Sources, name: str, model: str) -> str:
    """The memory format PyTorch's harness measured a model in, which must be the hand-written loop's best."""
    cases = [c for f, c in _overhead_cases(sources, (name,)) if f == "torch" and c["model"] == model]
    if not cases:
        raise FigureError(f"overhead {name} has no PyTorch case of {model}")
    if any(c["harness_layout"] != c["bare_layout"] for c in cases):
        raise FigureError(f"overhead {name}: the harness's layout differs from the loop's best for {model}")
    layouts = sorted({LAYOUT_NAMES.get(c["harness_layout"], c["harness_layout"]) for c in cases})
    return " or ".join(layouts)


@figure("overhead-noop")
def overhead_noop(sources: Sources, *names: str) -> str:
    """What the window loop itself costs per step: '0.07-0.08 µs'."""
    values = [result["noop_step_us"] for name in names for result in sources.overhead(name)]
    return _span(values, lambda v: f"{v:.2f}") + " µs"


@figure("overhead-outside-one")
def overhead_outside_one(sources: Sources, *names: str) -> str:
    """Which intervals leave out 1, in words."""
    cases = _overhead_cases(sources, names)
    outside = [(f, c) for f, c in cases if c["ratio_low"] is not None and not c["ratio_low"] <= 1 <= c["ratio_high"]]
    if not outside:
        return "Every interval includes 1"
    described = "; ".join(f"{_case_name(f, c)}: {c['ratio']:.3f} [{c['ratio_low']:.3f}-{c['ratio_high']:.3f}]"
                          for f, c in outside)  # fmt: skip
    lead = "Every interval but one includes 1" if len(outside) == 1 else f"{len(outside)} intervals leave out 1"
    return f"{lead} ({described})"


@figure("overhead-verdicts")
def overhead_verdicts(sources: Sources, *names: str) -> str:
    """Each case's verdict, harness against the loop: 'train 1.02x faster [1.01-1.07], infer same within ...'."""
    return ", ".join(f"{case['mode']} {case['verdict']}" for _, case in _overhead_cases(sources, names))


@figure("tf-signature")
def tf_signature(sources: Sources, model: str, size: str, mode: str) -> str:
    """A line of the TensorFlow signature check's output: '1.08x slower [0.91-0.97]'."""
    text = sources.text("results/overhead/20261128-tf-signature-cpu.txt")
    found = re.search(rf"^{re.escape(model)} {size} px {mode}: polymorphic is (.+)$", text, re.MULTILINE)
    if not found:
        raise FigureError(f"no line for {model} {size} px {mode} in the signature check's output")
    return found.group(1)


# --- profiles ----------------------------------------------------------------------------------------------


def _engine_result(sources: Sources, name: str, engine: str) -> dict:
    data = sources.profile(name)
    for result in data["results"]:
        if result.get("engine") == engine and "error" not in result:
            return result
    raise FigureError(f"profile {name} has no result for {engine}")


def _costs(sources: Sources, name: str) -> dict:
    from implementations import get_spec
    from implementations.lowering import lower, stage_costs

    request = sources.profile(name)["request"]
    return {c.stage: c for c in stage_costs(lower(get_spec(request["model"]), request["image_size"]))}


@figure("profile-sum")
def profile_sum(sources: Sources, name: str, engine: str) -> str:
    """The stages (+ the optimizer) over the whole step: '0.97'."""
    from bench.studies.profiling.report import step_check

    train = sources.profile(name)["request"]["mode"] == "train"
    return f"{step_check(_engine_result(sources, name, engine), train).ratio:.2f}"


@figure("profile-stage-share")
def profile_stage_share(sources: Sources, name: str, stage: str, engines: str) -> str:
    """A stage's share of the stage time, over the engines given: '43-44%'."""
    from bench.studies.profiling.report import stage_times

    train = sources.profile(name)["request"]["mode"] == "train"
    shares = []
    for engine in engines.split(","):
        times = {t.stage: t.total_s for t in stage_times(_engine_result(sources, name, engine), train)}
        if stage not in times:
            raise FigureError(f"profile {name} has no stage {stage!r}")
        shares.append(times[stage] / sum(times.values()))
    return _span(shares, _pct).replace("%-", "-")


@figure("profile-cost-share")
def profile_cost_share(sources: Sources, name: str, stage: str, what: str) -> str:
    """A stage's share of the model's MACs or parameters (from the lowered spec the profile names): '23%'."""
    costs = _costs(sources, name)
    if what not in ("macs", "params"):
        raise FigureError("what must be macs or params")
    return _pct(getattr(costs[stage], what) / sum(getattr(c, what) for c in costs.values()))


@figure("profile-intensity")
def profile_intensity(sources: Sources, name: str, stage: str) -> str:
    """A stage's forward FLOPs per byte of weights and activations at the profile's batch: '3.9'."""
    from bench.studies.profiling.report import BYTES_FP32

    cost, batch = _costs(sources, name)[stage], sources.profile(name)["request"]["batch_size"]
    return _sig(2 * cost.macs * batch / (BYTES_FP32 * (cost.params + cost.activations * batch)))


@figure("profile-category-share")
def profile_category_share(sources: Sources, name: str, category: str, engines: str) -> str:
    """An operator category's share of the profiled operator time, over the engines given: '66-71%'."""
    shares = []
    for engine in engines.split(","):
        categories = _engine_result(sources, name, engine).get("categories") or {}
        if category not in categories:
            raise FigureError(f"profile {name}, {engine}: no category {category!r}")
        shares.append(categories[category] / sum(categories.values()))
    return _span(shares, _pct).replace("%-", "-")


@figure("profile-slowdown")
def profile_slowdown(sources: Sources, name: str, engine: str, baseline: str = "torch") -> str:
    """`engine` against the baseline stage by stage, decided stages only (intervals apart), the optimizer
    among them when training: 'slower in 1 of 7 (layer1 1.29x), faster in none, the rest the same within noise'."""
    from bench.studies.profiling.report import decided_ratio, step_parts

    train = sources.profile(name)["request"]["mode"] == "train"
    base = {t.stage: t for t in step_parts(_engine_result(sources, name, baseline), train)}
    other = {t.stage: t for t in step_parts(_engine_result(sources, name, engine), train)}
    ratios = {stage: decided_ratio(base[stage], other[stage]) for stage in base if stage in other}
    slower = {s: r for s, r in ratios.items() if r is not None and r > 1}
    faster = {s: 1 / r for s, r in ratios.items() if r is not None and r <= 1}

    def listed(found: dict) -> str:
        return "none" if not found else f"{len(found)} ({', '.join(f'{s} {r:.2f}x' for s, r in found.items())})"

    rest = "the rest" if slower or faster else f"all {len(ratios)}"
    return (f"slower in {listed(slower)} and faster in {listed(faster)} of its {len(ratios)} parts, "
            f"{rest} the same within noise")  # fmt: skip


@figure("profile-optimizer-share")
def profile_optimizer_share(sources: Sources, name: str, engine: str) -> str:
    """The optimizer step's share of the training step: '24%'."""
    from bench.studies.profiling.report import step_split

    split = step_split(_engine_result(sources, name, engine))
    return _pct(split["optimizer"] / split["step"])


# --- scaling -----------------------------------------------------------------------------------------------


def _scale_record(sources: Sources, name: str, engine: str, model: str, replicas: str):
    for record in sources.scaling(name):
        if (record.engine, record.model, record.replicas) == (engine, model, int(replicas)):
            return record
    raise FigureError(f"scaling {name} has no record of {engine} {model} x{replicas}")


@figure("scaling-efficiency")
def scaling_efficiency(sources: Sources, name: str, engine: str, model: str, replicas: str) -> str:
    from bench.studies.scaling.scaling_report import efficiency

    value = efficiency(_scale_record(sources, name, engine, model, replicas), sources.scaling(name))
    if value is None:
        raise FigureError(f"scaling {name}: no efficiency for {engine} {model} x{replicas}")
    return _pct(value)


@figure("scaling-exposed")
def scaling_exposed(sources: Sources, name: str, engine: str, model: str, replicas: str, sign: str = "+") -> str:
    """Exposed communication per step with its interval: '10.0 ms [8.4-11.9]' (sign=- for an overshoot)."""
    r = _scale_record(sources, name, engine, model, replicas)
    if r.exposed_comm_s is None or r.exposed_comm_low_s is None:
        raise FigureError(f"scaling {name}: no exposed communication for {engine} {model} x{replicas}")
    values = [r.exposed_comm_s, r.exposed_comm_low_s, r.exposed_comm_high_s]
    if sign == "-":
        values = [-values[0], -values[2], -values[1]]
    ms = [v * 1e3 for v in values]
    digits = 1 if abs(ms[0]) < 100 else 0
    joint = " to " if ms[1] < 0 else "-"  # '[-66.4 to 83.5]', not '[-66.4-83.5]'
    return f"{ms[0]:.{digits}f} ms [{ms[1]:.{digits}f}{joint}{ms[2]:.{digits}f}]"


@figure("scaling-step")
def scaling_step(sources: Sources, name: str, engine: str, model: str, replicas: str) -> str:
    return f"{_scale_record(sources, name, engine, model, replicas).step_s * 1e3:.0f} ms"


@figure("scaling-gradient")
def scaling_gradient(sources: Sources, name: str, model: str) -> str:
    """The gradient bytes each replica all-reduces per step, in MiB."""
    record = next((r for r in sources.scaling(name) if r.model == model and r.gradient_bytes), None)
    if record is None:
        raise FigureError(f"scaling {name} has no {model} record")
    return f"{_sig(record.gradient_bytes / 2**20)} MiB"


@figure("scaling-machine")
def scaling_machine(sources: Sources, name: str) -> str:
    """The CPU a scaling sweep ran on, from its env.json: 'AMD EPYC'."""
    env = sources.json(f"results/scaling/{name}/env.json")
    if not env.get("cpu_model"):
        raise FigureError(f"results/scaling/{name}/env.json records no CPU")
    return env["cpu_model"]


# --- gradient flow -----------------------------------------------------------------------------------------


def _flow_run(sources: Sources, name: str, engine: str, model: str) -> dict:
    for result in sources.flow(name)["results"]:
        if result.get("engine") == engine and "error" not in result:
            if model not in result["models"]:
                raise FigureError(f"gradient flow {name} has no {model}")
            return result["models"][model]
    raise FigureError(f"gradient flow {name} has no result for {engine}")


def _flow_number(value: float) -> str:
    return "diverged (NaN)" if value != value else _sig(value)


@figure("training-wall")
def training_wall(sources: Sources, study: str) -> str:
    """A training study's wall time from its training.json ('11 min 58 s')."""
    data = sources.json(f"results/training/{study}/training.json")
    if data.get("wall_s") is None:
        raise FigureError(f"results/training/{study}/training.json records no wall_s")
    return duration(data["wall_s"])


@figure("training-machine")
def training_machine(sources: Sources, study: str) -> str:
    """The CPU a training study ran on, from its training.json: 'Intel(R) Xeon(R) Processor, 2 cores'."""
    env = sources.json(f"results/training/{study}/training.json").get("env", {})
    if not env.get("cpu_model"):
        raise FigureError(f"results/training/{study}/training.json records no CPU")
    return f"{env['cpu_model']}, {env.get('cpu_cores')} cores"


@figure("quote")
def quote(sources: Sources, path: str, first: str, count: str = "1") -> str:
    """`count` lines of a committed Markdown file, from the first line that starts with `first` (underscores in
    `first` stand for spaces): a study's own generated sentences, quoted whole."""
    lines = sources.path(path).read_text(encoding="utf-8").splitlines()
    prefix = first.replace("_", " ")
    for index, line in enumerate(lines):
        if line.startswith(prefix):
            return "\n".join(lines[index : index + int(count)])
    raise FigureError(f"{path} has no line starting with {prefix!r}")


@figure("model-params")
def model_params(sources: Sources, model: str) -> str:
    from implementations import get_spec
    from implementations.lowering import params_count

    return f"{params_count(get_spec(model)) / 1e6:.1f}M"


@figure("model-stage-params")
def model_stage_params(sources: Sources, model: str, stage: str) -> str:
    """The parameters of one stage of a model's lowered spec: '124M'."""
    from implementations import get_spec
    from implementations.lowering import lower, stage_costs

    spec = get_spec(model)
    costs = {c.stage: c for c in stage_costs(lower(spec, spec.default_image_size))}
    if stage not in costs:
        raise FigureError(f"{model} has no stage {stage!r}; its stages: {', '.join(costs)}")
    return f"{costs[stage].params / 1e6:.0f}M"


@figure("model-gmacs")
def model_gmacs(sources: Sources, model: str) -> str:
    from implementations import get_spec
    from implementations.lowering import macs_per_image

    return f"{macs_per_image(get_spec(model)) / 1e9:.1f}"


# --- rendering and checking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    file: str
    line: int
    name: str
    args: str
    quoted: str
    computed: str | None  # None: it could not be computed
    error: str | None = None

    @property
    def stale(self) -> bool:
        return self.computed != self.quoted

    def describe(self) -> str:
        where = f"{self.file}:{self.line}: figure {self.name}{self.args}"
        if self.error:
            return f"{where}: cannot be computed from its files: {self.error}"
        return f"{where}: the text says {_short(self.quoted)}, its files give {_short(self.computed)}"


def _short(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 160 else text[:157] + "...")


class UnknownFigure(ValueError):
    pass


def compute(sources: Sources, name: str, args: str) -> str:
    if name not in FIGURES:
        raise UnknownFigure(f"unknown figure {name!r}; valid figures: {', '.join(sorted(FIGURES))}")
    positional, options = [], {}
    for word in shlex.split(args):
        key, equals, value = word.partition("=")
        if equals and re.fullmatch(r"[a-z_]+", key):
            options[key] = value
        else:
            positional.append(word)
    try:
        return FIGURES[name](sources, *positional, **options)
    except FigureError:
        raise
    except TypeError as error:
        raise FigureError(f"wrong arguments: {error}") from None
    except (KeyError, ValueError, IndexError, OSError, ZeroDivisionError, StopIteration) as error:
        raise FigureError(f"{type(error).__name__}: {error}") from None


def render(text: str, sources: Sources, file: str = "README.md") -> tuple[str, list[Quote]]:
    """`text` with every figure regenerated (one that cannot be computed keeps its text), and each quote."""
    quotes: list[Quote] = []

    def replace(match: re.Match) -> str:
        name, args, body = match["name"], match["args"], match["body"]
        line = text.count("\n", 0, match.start()) + 1
        # A block figure (its text on lines of its own) keeps the indentation of its marker, as in a list item.
        indent = text[text.rfind("\n", 0, match.start()) + 1 : match.start()]
        block = body.startswith("\n")
        indent = indent if block and not indent.strip() else ""
        quoted = body
        if block:
            quoted = "\n".join(t.removeprefix(indent) for t in body[1:].rstrip(" \t").removesuffix("\n").split("\n"))
        try:
            computed = compute(sources, name, args)
        except FigureError as error:
            quotes.append(Quote(file, line, name, args, quoted, None, str(error)))
            return match[0]
        quotes.append(Quote(file, line, name, args, quoted, computed))
        new_body = (
            "\n" + "\n".join(indent + t if t else t for t in computed.split("\n")) + "\n" + indent
            if block
            else computed
        )
        return f"<!-- figure:{name}{args} -->{new_body}<!-- /figure -->"

    return MARKER.sub(replace, text), quotes


def documents(root: Path) -> list[Path]:
    root = Path(root)
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "results" / "README.md"]
            if p.exists()]  # fmt: skip


def run_docs(root: Path = ROOT, check: bool = False, out=None) -> int:
    """Regenerate (or, with `check`, compare) every figure of the checkout's documents; the exit status."""
    out = out or sys.stdout
    sources = Sources(root)
    problems, total, changed = [], 0, []
    for path in documents(root):
        relative = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        try:
            new, quotes = render(text, sources, relative)
        except UnknownFigure as error:
            print(f"error: {relative}: {error}", file=sys.stderr)
            return 2
        total += len(quotes)
        problems += [q for q in quotes if q.error or (check and q.stale)]
        changed += [q for q in quotes if not q.error and q.stale]
        if not check and new != text:
            path.write_text(new, encoding="utf-8")
    for quote in problems:
        print(quote.describe(), file=out)
    if check:
        print(f"{total - len(problems)} of {total} figures match their files", file=out)
    else:
        print(f"{len(changed)} of {total} figures rewritten from their files", file=out)
        for quote in changed:
            print(f"  {quote.file}:{quote.line}: {quote.name}{quote.args}", file=out)
    return 1 if problems else 0
