"""The training study's report: training.md, training.csv and training.png from training.json's data.

Pure arithmetic on the workers' records: the curves' mean and spread over seeds, the time and images to each stated
accuracy, the engines' agreement against the seed-to-seed spread, the input pipeline's cost against the harness's
synthetic-input throughput, and the verdict on He et al.'s degradation claim.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from bench.backends.recipe import BASE_LEARNING_RATE

REFERENCE_ENGINE = "torch"
TOO_EASY_ERROR = 0.01  # both depths below 1% final training error: the data set cannot show a degradation at the end
# He et al. 2015, CIFAR-10 test error (%): Table 6 for the ResNets; plain nets read from Figure 6's curves (+-1%).
HE_TEST_ERROR = {"resnet20_cifar": "8.75", "resnet32_cifar": "7.51", "resnet44_cifar": "7.17",
                 "resnet56_cifar": "6.97", "resnet110_cifar": "6.43", "plain20_cifar": "~9.5 (Fig. 6)",
                 "plain56_cifar": "~13.5 (Fig. 6)"}  # fmt: skip
# A public reproduction, 5 runs each, mean +- std test error (%) (/work/shared/REFERENCE.md).
REPRODUCTION_TEST_ERROR = {"plain20_cifar": "9.78 +- 0.13", "plain56_cifar": "12.95 +- 0.22",
                           "resnet56_cifar": "7.40 +- 0.27"}  # fmt: skip
CSV_FIELDS = ("engine", "model", "kind", "depth", "seed", "epoch", "steps", "images", "train_loss", "train_error",
              "train_eval_loss", "held_error", "held_loss", "wall_s", "cumulative_wall_s", "data_s", "step_s",
              "eval_s", "img_s")  # fmt: skip


# --- arithmetic ------------------------------------------------------------------------------------------------


def kind_depth(model: str) -> tuple[str, int]:
    """("plain" | "resnet", depth) of a CIFAR net's name."""
    kind = "plain" if model.startswith("plain") else "resnet"
    return kind, int(model.removeprefix(kind).split("_")[0])


def label(model: str) -> str:
    kind, depth = kind_depth(model)
    return f"{'plain' if kind == 'plain' else 'ResNet'}-{depth}"


def spread(values: list[float]) -> dict | None:
    """Mean, sample standard deviation, min and max over seeds (None without values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def time_to_accuracy(run: dict, key: str, target: float) -> dict | None:
    """The end of the first epoch whose accuracy (1 - `key`, an error) reaches `target`: its epoch, the images
    trained and the training wall time to then (steps and their batches, evaluation excluded); None if never."""
    for record in run["epochs"]:
        error = record.get(key)
        if error is not None and 1.0 - error >= target - 1e-12:
            return {"epoch": record["epoch"], "images": record["images"], "wall_s": record["cumulative_wall_s"]}
    return None


def runs_by_model(result: dict) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for run in result.get("runs", []):
        grouped.setdefault(run["model"], []).append(run)
    return grouped


def epoch_values(runs: list[dict], key: str) -> list[list[float]]:
    """values[epoch index][seed index] of `key` (only the epochs every run reached)."""
    epochs = min((len(r["epochs"]) for r in runs), default=0)
    return [[r["epochs"][e][key] for r in runs] for e in range(epochs)]


def curve(runs: list[dict], key: str) -> list[dict]:
    return [spread(values) for values in epoch_values(runs, key)]


def steady_throughput(run: dict, batch_size: int) -> float | None:
    """Real-data training img/s over the run, the first step (tracing, compilation, first-touch) left out."""
    images = sum(r["steps"] for r in run["epochs"]) * batch_size - batch_size
    wall = sum(r["wall_s"] for r in run["epochs"]) - (run.get("first_step_s") or 0.0)
    return images / wall if wall > 0 and images > 0 else None


def agreement(reference: list[dict], other: list[dict], key: str) -> dict | None:
    """Engine `other` against the reference engine, run for run on the same seeds: the largest |difference| of
    `key` at any epoch, beside the seed-to-seed spread (max - min over the reference's seeds) at that epoch; and
    whether the difference stayed within the spread at every epoch."""
    by_seed = {r["seed"]: r for r in other}
    pairs = [(r, by_seed[r["seed"]]) for r in reference if r["seed"] in by_seed]
    if not pairs:
        return None
    epochs = min(min(len(a["epochs"]), len(b["epochs"])) for a, b in pairs)
    rows = []
    for e in range(epochs):
        values = [a["epochs"][e][key] for a, _ in pairs]
        others = [b["epochs"][e][key] for _, b in pairs]
        if any(v is None for v in values + others):
            return None
        deviation = max(abs(a - b) for a, b in zip(values, others, strict=True))
        rows.append({"epoch": e + 1, "deviation": deviation, "spread": max(values) - min(values)})
    return _against_spread(rows, len(pairs))


def _against_spread(rows: list[dict], seeds: int) -> dict | None:
    """Per-epoch deviations beside the seed spread, summed up: the largest deviation and where, the worst
    deviation-to-spread ratio, and whether every epoch stayed within its spread."""
    if not rows:
        return None

    def against(row: dict) -> float:
        return row["deviation"] / row["spread"] if row["spread"] > 0 else math.inf

    worst = max(rows, key=lambda row: row["deviation"])
    decisive = max(rows, key=against)  # the epoch nearest to (or furthest beyond) its spread
    return {"max_deviation": worst["deviation"], "epoch": worst["epoch"], "spread_there": worst["spread"],
            "min_spread": min(row["spread"] for row in rows), "worst_ratio": against(decisive), "decisive": decisive,
            "within": all(row["deviation"] <= row["spread"] for row in rows), "seeds": seeds,
            "per_epoch": rows}  # fmt: skip


def chance_outside_spread(seeds: int, draws: int = 200_000) -> float:
    """How often the mean-curve test fails two engines that train alike, at one epoch: the share of simulated
    draws (runs of both engines from one normal distribution, `seeds` each, a fixed generator) in which the
    |difference| of the two means exceeds the reference's max - min. 14% with 3 seeds, 2% with 5: at every one
    of several epochs, with few seeds, a failure can be the test's own."""
    import numpy as np

    rng = np.random.default_rng(20151210)
    reference, other = rng.standard_normal((draws, seeds)), rng.standard_normal((draws, seeds))
    deviation = np.abs(reference.mean(axis=1) - other.mean(axis=1))
    return float(np.mean(deviation > reference.max(axis=1) - reference.min(axis=1)))


def mean_agreement(reference: list[dict], other: list[dict], key: str) -> dict | None:
    """Engine `other`'s mean curve over its seeds against the reference's, on the seeds both ran: the largest
    |difference| of the means of `key` at any epoch, beside the reference's seed-to-seed spread (max - min) at
    that epoch; within when it stayed inside the spread at every epoch. Run for run (`agreement`) asks more: that
    one float32 trajectory follows another, which rounding alone can break in a chaotic run."""
    seeds = {r["seed"] for r in other}
    pairs = [r for r in reference if r["seed"] in seeds]
    others = [r for r in other if r["seed"] in {p["seed"] for p in pairs}]
    if not pairs or not others:
        return None
    epochs = min(len(r["epochs"]) for r in pairs + others)
    rows = []
    for e in range(epochs):
        values = [r["epochs"][e][key] for r in pairs]
        theirs = [r["epochs"][e][key] for r in others]
        if any(v is None for v in values + theirs):
            return None
        deviation = abs(sum(theirs) / len(theirs) - sum(values) / len(values))
        rows.append({"epoch": e + 1, "deviation": deviation, "spread": max(values) - min(values)})
    return _against_spread(rows, len(pairs))


def same_inputs(reference: list[dict], other: list[dict]) -> dict:
    """Did both engines start each seed from the same weights and take the same batches in the same order?"""
    by_seed = {r["seed"]: r for r in other}
    pairs = [(r, by_seed[r["seed"]]) for r in reference if r["seed"] in by_seed]
    return {
        "initial_weights": bool(pairs) and all(a["initial_weights"] == b["initial_weights"] for a, b in pairs),
        "batches": bool(pairs) and all(a["batch_digests"] == b["batch_digests"] for a, b in pairs),
    }


def compare_depths(shallow: list[float], deep: list[float]) -> str:
    """Gives "worse" when every seed of the deeper net has a higher error than every seed of the shallower one,
    "better" when every one is lower, else "within the seed spread"."""
    if min(deep) > max(shallow):
        return "worse"
    if max(deep) < min(shallow):
        return "better"
    return "within the seed spread"


def verdicts(grouped: dict[str, list[dict]], kinds: tuple[str, ...]) -> dict:
    """For each kind, its shallowest against its deepest net: final training error and the mean over all epochs."""
    out = {}
    for kind in kinds:
        models = sorted((m for m in grouped if kind_depth(m)[0] == kind), key=lambda m: kind_depth(m)[1])
        if len(models) < 2:
            continue
        shallow, deep = models[0], models[-1]

        def final(model: str) -> list[float]:
            return [r["epochs"][-1]["train_error"] for r in grouped[model] if r["epochs"]]

        def mean_over_run(model: str) -> list[float]:
            return [statistics.fmean(e["train_error"] for e in r["epochs"]) for r in grouped[model] if r["epochs"]]

        if not final(shallow) or not final(deep):
            continue
        out[kind] = {
            "shallow": shallow, "deep": deep,
            "final": compare_depths(final(shallow), final(deep)),
            "throughout": compare_depths(mean_over_run(shallow), mean_over_run(deep)),
            "final_errors": {shallow: spread(final(shallow)), deep: spread(final(deep))},
            "run_mean_errors": {shallow: spread(mean_over_run(shallow)), deep: spread(mean_over_run(deep))},
            "too_easy": max(final(shallow) + final(deep)) < TOO_EASY_ERROR,
        }  # fmt: skip
    return out


# --- text ------------------------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def pct_spread(s: dict | None) -> str:
    if s is None:
        return "—"
    return f"{100 * s['mean']:.2f}% ± {100 * s['sd']:.2f} [{100 * s['min']:.2f}–{100 * s['max']:.2f}]"


def num_spread(s: dict | None, digits: int = 3) -> str:
    if s is None:
        return "—"
    return f"{s['mean']:.{digits}g} [{s['min']:.{digits}g}–{s['max']:.{digits}g}]"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict_sentence(kind: str, v: dict) -> str:
    shallow, deep = label(v["shallow"]), label(v["deep"])
    finals = v["final_errors"]
    figures = (f"final training error {deep} {pct_spread(finals[v['deep']])} against {shallow} "
               f"{pct_spread(finals[v['shallow']])}; mean over the epochs {deep} "
               f"{pct_spread(v['run_mean_errors'][v['deep']])} against {shallow} "
               f"{pct_spread(v['run_mean_errors'][v['shallow']])}")  # fmt: skip
    wanted = "worse" if kind == "plain" else "better"
    opposite = "better" if wanted == "worse" else "worse"
    question = f"Does deeper-{'plain' if kind == 'plain' else 'residual'} train {wanted} here?"

    def phrase(outcome: str) -> str:
        return "within the seed spread" if outcome not in ("worse", "better") else f"{outcome}, every seed"

    if v["final"] == wanted and v["throughout"] == wanted:
        answer = f"**Yes**: {deep} trains {wanted} than {shallow} at the end and over the whole run, every seed"
    elif v["final"] == wanted or v["throughout"] == wanted:
        answer = (f"**Partly**: {deep} against {shallow}: at the end {phrase(v['final'])}; over the run "
                  f"{phrase(v['throughout'])}")  # fmt: skip
    elif v["final"] == opposite and v["throughout"] == opposite:
        answer = (
            f"**No, the opposite**: {deep} trains {opposite} than {shallow} at the end and over the run, every seed"
        )
    else:
        answer = (f"**Not shown**: {deep} against {shallow}: at the end {phrase(v['final'])}; over the run "
                  f"{phrase(v['throughout'])}")  # fmt: skip
    easy = (f" Both end below {100 * TOO_EASY_ERROR:.0f}% training error: the data set is too easy to show a "
            "difference at the end of training." if v["too_easy"] else "")  # fmt: skip
    return f"- {question} {answer} ({figures}).{easy}"


def _cpu_line(results) -> str:
    """The workers' own CPU seconds (all their threads): what the study costs whatever else runs."""
    timed = [(r["engine"], r["cpu_s"], r["wall_s"]) for r in results if r.get("cpu_s") is not None]
    if not timed:
        return ""
    parts = ", ".join(f"{engine} {cpu:.0f} CPU s in {wall:.0f} s" for engine, cpu, wall in timed)
    return f" The workers used {parts}."


def _engine_results(data: dict) -> dict[str, dict]:
    return {r["engine"]: r for r in data["results"]}


def render(data: dict) -> str:
    request = data["request"]
    results = _engine_results(data)
    batch = request["batch_size"]
    models = request["models"]
    reference = results.get(REFERENCE_ENGINE) or next(iter(results.values()))
    ref_engine = reference["engine"]
    ref_runs = runs_by_model(reference)
    lines = [f"# Training study: plain against residual depth ({request['dataset']})", ""]
    env = data.get("env", {})
    load = data.get("load_average") or {}
    how = "side by side, one worker each" if request.get("parallel") else "one after another"
    threads = request["threads"] or "all cores"
    lines += [
        f"Data: {next((r['data_description'] for r in results.values() if r.get('data_description')), request['dataset'])}.",
        "",
        f"Recipe: {request['recipe']}; batch {batch}; {request['epochs']} epochs; constant learning rate, no weight "
        "decay (the harness's recipe, unchanged). He et al. train CIFAR-10 with batch 128, learning rate 0.1 divided "
        "by 10 at 32k and 48k of 64k iterations, weight decay 1e-4 and momentum 0.9: at batch "
        f"{batch} the linear-scaling rule gives {0.1 * batch / 128:.3g}, so this recipe steps at "
        f"{BASE_LEARNING_RATE / (0.1 * batch / 128):.2g}x the paper's scaled rate, and trains {request['epochs']} epochs of "
        "this data set, not 164 epochs of CIFAR-10. Weight decay 1e-4 is a regulariser of long training and is "
        "left out: the backends' recipe has none.",
        "",
        f"Training steps: each backend's own prepared training step (`prepare` with a StepHook, the step the harness "
        f"times and tests/test_timed_steps.py proves equal across engines), fed each batch by `Prepared.feed`. "
        f"Engines: {', '.join(request['engines'])}; seeds {', '.join(map(str, request['seeds']))}; every seed starts "
        f"from PyTorch's seeded initialisation (copied into Keras) and takes the same batches in the same order in "
        f"every engine. Training error: inference-mode error on a fixed {request['eval_train']} training images "
        "after each epoch; training loss: the mean of the steps' own losses over the epoch (training mode). "
        f"Held-out error: inference mode, after each epoch. Wall time counts the steps and their batches "
        f"(making them, feeding them), not the evaluation; it includes each run's first step (tracing, "
        f"compilation).",
        "",
        f"Machine: {env.get('cpu_model') or 'see training.json'} ({env.get('cpu_cores')} cores); the engines trained "
        f"{how}, {threads} thread(s) per engine; commit {env.get('git_commit') or 'unknown'}. The whole study took "
        f"{data.get('wall_s', float('nan')):.0f} s of wall time; the machine's 1-minute load average was "
        f"{load.get('start', float('nan')):.1f} at the start and {load.get('end', float('nan')):.1f} at the end: "
        "whatever else ran is in every time here." + _cpu_line(results.values()),
        "",
    ]
    failed = [f"- {name}: {res['error']}" for name, res in results.items() if res.get("error")]
    if failed:
        lines += ["Engines that did not finish (their finished runs are reported):", *failed, ""]

    # verdict first
    lines += ["## Verdict", ""]
    found = verdicts(ref_runs, tuple(request["kinds"]))
    for kind, v in found.items():
        lines.append(verdict_sentence(kind, v) + f" ({ref_engine})")
        for name, res in results.items():
            if name == ref_engine:
                continue
            other = verdicts(runs_by_model(res), (kind,)).get(kind)
            if other is not None:
                same = (other["final"], other["throughout"]) == (v["final"], v["throughout"])
                lines.append(f"  - {name}: final {other['final']}, over the run {other['throughout']} "
                             f"({'the same verdict' if same else 'a different verdict'}).")  # fmt: skip
    if not found:
        lines.append("- Needs two depths of a kind: no verdict.")
    lines += [
        "",
        "Rule: deeper is worse (better) when every seed's training error of the deeper net is above "
        "(below) every seed's of the shallower one, at the last epoch and as a mean over all epochs.",
        "",
    ]

    # final table beside the paper
    lines += ["## Final errors beside He et al.", ""]
    rows = []
    for model in models:
        for name, res in results.items():
            runs = runs_by_model(res).get(model, [])
            if not runs:
                continue
            rows.append([label(model), name, len(runs), pct_spread(spread([r["epochs"][-1]["train_error"] for r in runs])),
                         pct_spread(spread([r["epochs"][-1]["held_error"] for r in runs])),
                         HE_TEST_ERROR.get(model, "—"), REPRODUCTION_TEST_ERROR.get(model, "—")])  # fmt: skip
    lines += [table(["network", "engine", "seeds", "training error (mean ± sd [min–max])",
                     f"held-out error ({request['dataset']})", "He et al. CIFAR-10 test error %",
                     "reproduction (5 runs) %"], rows), ""]  # fmt: skip
    lines += [
        "He et al.'s and the reproduction's figures are CIFAR-10 test errors after 64k iterations; this run's "
        f"are {request['dataset']} after {request['epochs']} epochs: compare the ordering of the networks, not "
        "the values.",
        "",
    ]

    # curves
    lines += [f"## Curves ({ref_engine}; mean over seeds, [min–max])", ""]
    rows = []
    epochs = max((len(r["epochs"]) for runs in ref_runs.values() for r in runs), default=0)
    for e in range(epochs):
        row = [e + 1]
        for model in models:
            runs = [r for r in ref_runs.get(model, []) if len(r["epochs"]) > e]
            train = spread([r["epochs"][e]["train_error"] for r in runs])
            held = spread([r["epochs"][e]["held_error"] for r in runs])
            row.append(f"{pct(train and train['mean'])} / {pct(held and held['mean'])}")
        rows.append(row)
    lines += [
        table(["epoch", *[f"{label(m)} train / held-out" for m in models]], rows),
        "",
        "![curves](training.png)",
        "",
    ]

    # time to accuracy
    lines += ["## Time to accuracy", "",
              "At the end of the first epoch that reaches the accuracy (epoch resolution); wall time and images to "
              "then, mean [min–max] over the seeds that reached it. \"harness\" is the images divided by the "
              "harness's synthetic-input training throughput of the same configuration: the time the timed step "
              "alone would take.", ""]  # fmt: skip
    rows = []
    for name, res in results.items():
        grouped = runs_by_model(res)
        synthetic = res.get("synthetic", {})
        for model in models:
            runs = grouped.get(model, [])
            rate = (synthetic.get(model) or {}).get("throughput_img_s")
            for key, targets, what in (("train_error", request["train_targets"], "training"),
                                       ("held_error", request["held_targets"], "held-out")):  # fmt: skip
                for target in targets:
                    reached = [t for t in (time_to_accuracy(r, key, target) for r in runs) if t is not None]
                    images = spread([t["images"] for t in reached])
                    wall = spread([t["wall_s"] for t in reached])
                    rows.append([label(model), name, f"{what} {100 * target:g}%", f"{len(reached)}/{len(runs)}",
                                 num_spread(spread([t["epoch"] for t in reached]), 2),
                                 num_spread(images, 4), num_spread(wall),
                                 f"{images['mean'] / rate:.3g}" if images and rate else "—"])  # fmt: skip
    lines += [table(["network", "engine", "accuracy", "seeds reached", "epochs", "images", "wall s", "harness s"],
                    rows), ""]  # fmt: skip

    # throughput
    lines += ["## Throughput: real data against the harness's synthetic inputs", "",
              "Real data: training img/s over each run's epochs without its first step (making and feeding the "
              "batches included), mean [min–max] over seeds. Harness: `bench run`'s worker Session (warm-up, then "
              f"{request['synthetic_windows']} timed windows on resident synthetic batches) on the same engine, "
              "network, batch, layout and threads, measured after the training in the same worker: median window "
              "[min–max]. Input pipeline: the share of the training wall time spent making and feeding batches.",
              ""]  # fmt: skip
    rows = []
    for name, res in results.items():
        grouped = runs_by_model(res)
        for model in models:
            runs = grouped.get(model, [])
            if not runs:
                continue
            real = spread([steady_throughput(r, batch) for r in runs])
            synthetic = res.get("synthetic", {}).get(model) or {}
            rate = synthetic.get("throughput_img_s")
            harness = (f"{rate:.3g} [{synthetic['throughput_min_img_s']:.3g}–{synthetic['throughput_max_img_s']:.3g}]"
                       if rate else synthetic.get("error", "not measured"))  # fmt: skip
            share = spread(
                [sum(e["data_s"] for e in r["epochs"]) / sum(e["wall_s"] for e in r["epochs"]) for r in runs]
            )
            first = spread([r.get("first_step_s") for r in runs])
            rows.append([label(model), name, num_spread(real), harness,
                         f"{real['mean'] / rate:.2f}" if real and rate else "—", pct_spread(share),
                         num_spread(first)])  # fmt: skip
    lines += [table(["network", "engine", "real-data img/s", "harness img/s", "real / harness", "input pipeline",
                     "first step s"], rows), ""]  # fmt: skip

    # agreement
    lines += [f"## The same training in every engine (against {ref_engine})", "",
              "Per network, on the same seeds, initial weights and batches. Mean curve: the |difference| between the "
              "engines' mean training loss over the seeds (and mean held-out error), beside the seed-to-seed spread "
              f"(max - min over {ref_engine}'s seeds), at the epoch where it comes nearest to (or furthest beyond) "
              "that epoch's spread. Run for run: the same for the largest |difference| between two runs of the "
              "same seed, a stricter test (one float32 trajectory "
              "following another, which rounding alone can break in a chaotic run). \"within\" when the "
              "difference stayed inside the spread at every epoch. With --float64-reference, the control row is "
              "PyTorch itself in float64 on the first seed: how far float32 rounding alone moves a run.", ""]  # fmt: skip
    rows = []
    counts = {"mean": 0, "run": 0, "networks": 0}
    checks: list[tuple[str, str, dict]] = []  # (network, measure, epoch row) of every mean-curve check
    compared = [(name, res.get("runs", [])) for name, res in results.items() if name != ref_engine]
    if reference.get("float64_runs"):  # the control: the reference engine against itself in float64
        compared.append((f"{ref_engine} float64 (control)", reference["float64_runs"]))

    def versus(found: dict | None, percent: bool = False) -> str:
        """The epoch that decides: the one nearest to (or furthest beyond) its spread."""
        if found is None:
            return "—"
        show = pct if percent else (lambda v: f"{v:.3g}")
        worst = found["decisive"]
        within = "yes" if found["within"] else f"no ({found['worst_ratio']:.2f}x)"
        return f"{show(worst['deviation'])} (epoch {worst['epoch']}) vs {show(worst['spread'])}: {within}"

    for name, runs in compared:
        grouped = runs_by_model({"runs": runs})
        for model in models:
            if not grouped.get(model) or not ref_runs.get(model):
                continue
            mean_loss = mean_agreement(ref_runs[model], grouped[model], "train_loss")
            mean_held = mean_agreement(ref_runs[model], grouped[model], "held_error")
            loss = agreement(ref_runs[model], grouped[model], "train_loss")
            held = agreement(ref_runs[model], grouped[model], "held_error")
            same = same_inputs(ref_runs[model], grouped[model])
            if "control" not in name:
                for measure, found in (("training loss", mean_loss), ("held-out error", mean_held)):
                    for row in found["per_epoch"] if found else []:
                        checks.append((label(model), measure, row))
                counts["networks"] += 1
                counts["mean"] += bool(mean_loss and mean_loss["within"] and mean_held and mean_held["within"])
                counts["run"] += bool(loss and loss["within"] and held and held["within"])
            rows.append([label(model), name, versus(mean_loss), versus(mean_held, True), versus(loss),
                         versus(held, True), "yes" if same["initial_weights"] else "NO",
                         "yes" if same["batches"] else "NO"])  # fmt: skip
    if rows:
        lines += [table(["network", "engine", "mean curve: |Δ training loss| vs spread",
                         "mean curve: |Δ held-out error| vs spread", "run for run: max |Δ training loss| vs spread",
                         "run for run: max |Δ held-out error| vs spread", "same initial weights", "same batches"], rows), ""]  # fmt: skip
        if counts["networks"]:
            seeds = min(len(runs) for runs in ref_runs.values() if runs)
            chance = chance_outside_spread(seeds)
            outside = [f"{network} {measure} at epoch {row['epoch']} ({row['deviation'] / row['spread']:.2f}x)"
                       if row["spread"] > 0 else f"{network} {measure} at epoch {row['epoch']} (no spread)"
                       for network, measure, row in checks if row["deviation"] > row["spread"]]  # fmt: skip
            lines += [f"Mean curves within the seed spread (training loss and held-out error, every epoch): "
                      f"{counts['mean']} of {counts['networks']} network-engine pairs; run for run: {counts['run']} of "
                      f"{counts['networks']}.", "",
                      f"Mean-curve checks (network, measure, epoch) outside the spread: {len(outside)} of "
                      f"{len(checks)}" + (f": {', '.join(outside)}." if outside else "."), "",
                      f"How strict the mean-curve test is with {seeds} seeds: two engines that train alike (every run "
                      "drawn from one normal distribution) fall outside the spread at a given epoch in "
                      f"{chance:.1%} of simulated draws, about {chance * len(checks):.1f} of these {len(checks)} "
                      "checks by chance; a difference that stays well beyond the spread is not chance.",
                      ""]  # fmt: skip
    else:
        lines += ["Only one engine ran: no comparison.", ""]
    return "\n".join(lines)


def write_csv(data: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for res in data["results"]:
            for run in res.get("runs", []):
                kind, depth = kind_depth(run["model"])
                for record in run["epochs"]:
                    writer.writerow({"engine": res["engine"], "model": run["model"], "kind": kind, "depth": depth,
                                     "seed": run["seed"], **{k: record.get(k) for k in CSV_FIELDS[5:]}})  # fmt: skip


def plot(data: dict, path: Path) -> None:
    """Mean and min-max band over seeds of training (dashed) and held-out (solid) error per depth, plain against
    residual, one row per engine."""
    from bench.report.render import pyplot

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    results = [r for r in data["results"] if r.get("runs")]
    kinds = data["request"]["kinds"]
    figure, axes = plt.subplots(len(results) or 1, len(kinds), figsize=(5.5 * len(kinds), 3.6 * max(1, len(results))),
                                squeeze=False, sharey=True)  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, res in enumerate(results):
        grouped = runs_by_model(res)
        for column, kind in enumerate(kinds):
            ax = axes[row][column]
            models = sorted((m for m in grouped if kind_depth(m)[0] == kind), key=lambda m: kind_depth(m)[1])
            for index, model in enumerate(models):
                colour = colours[index % len(colours)]
                for key, style, what in (("train_error", "--", "train"), ("held_error", "-", "held-out")):
                    points = curve(grouped[model], key)
                    epochs = list(range(1, len(points) + 1))
                    ax.plot(
                        epochs, [100 * p["mean"] for p in points], style, color=colour, label=f"{label(model)} {what}"
                    )
                    ax.fill_between(epochs, [100 * p["min"] for p in points], [100 * p["max"] for p in points],
                                    color=colour, alpha=0.15)  # fmt: skip
            ax.set_title(f"{res['engine']}: {'plain' if kind == 'plain' else 'residual'}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("error %")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_training_report(data: dict, out: Path) -> Path:
    out = Path(out)
    path = out / "training.md"
    path.write_text(render(data) + "\n")
    write_csv(data, out / "training.csv")
    if any(r.get("runs") for r in data["results"]):
        plot(data, out / "training.png")
    return path
