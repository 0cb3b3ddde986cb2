"""gradient_flow.md, gradient_flow.csv and the per-layer plot, from the study's JSON (bench/studies/gradient_flow/gradients.py).

What the report judges a network's gradient flow on, and why
------------------------------------------------------------
A layer's gradient norm ||g|| is no measure of gradient flow on its own: it changes when the layer's weight is
rescaled even where the network computes the same function, and it grows with the tensor's size (the 432-element
stem of a CIFAR net against a 36,864-element 64x64x3x3 convolution).

- Behind BatchNorm (every convolution of the BN nets), the output does not change when W becomes cW (c > 0), so
  L(cW) = L(W) and, differentiating, c g(cW) = g(W): the gradient scales as 1/c. So ||g|| scales as 1/c,
  ||g|| / ||W|| as 1/c^2 (it is not invariant), and ||g|| x ||W|| not at all.
- Without BatchNorm (the `_nobn` nets: bias-free convolutions and ReLU, which is positively homogeneous), a
  rescale that keeps the function multiplies one layer by c and the next by 1/c (inside a residual block: its
  two convolutions). The first layer's gradient scales as 1/c and the next one's as c, so again each layer's
  ||g|| x ||W|| is unchanged while ||g|| and ||g|| / ||W|| are not.

||g|| x ||W|| also means something in both kinds of net: it bounds the first-order change of the loss when the
layer's weights change by their own size (|dL| <= ||g|| ||dW|| with ||dW|| = ||W||), in loss units whatever the
tensor's size. And SGD's first-order loss decrease from a layer, lr ||g||^2, is the product of the two:
(lr ||g|| / ||W||), the step relative to the weight, which depends on the weight's scale, times ||g|| x ||W||,
how much the loss cares about the layer, which does not. So the flow is judged on the first weight layer's
||g|| x ||W|| over the last convolution's (the classifier left out): below VANISHED vanishing, above EXPLODED
exploding, between them steady; a rescale of any layer by a function-preserving symmetry leaves it unchanged.

The scale-dependent factor is judged on its own: lr x ||g|| / ||W|| at step 0 is the first update relative to
the weight (the momentum buffer starts empty). Above BLOWN_UP the update is larger than the weight: the first
update blew up the weights, and what is measured after it is the blown-up net (behind BN the grown weight's
gradient shrinks as 1/||W||, which a raw norm would read as vanishing); it is called "blown up", not vanishing
or exploding. NaN or inf anywhere up to a point in time (the loss, or any norm of any layer at any step) is
"diverged" at that point, in every engine, whatever the others show.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.backends import recipe
from bench.report.render import markdown_table, pyplot
from bench.report.tables import sig3
from bench.store.atomic import save_figure, write_csv, write_text
from bench.studies.gradient_flow.gradients import MEASURES
from implementations import get_spec

TUTORIAL = (
    'the tutorial: in a deep plain network the backward signal "gets repeatedly multiplied by small numbers at '
    'each layer, causing it to shrink exponentially", and the skip connection "completely solves the vanishing '
    'gradient problem"'
)
HE_ET_AL = (
    'He et al. 2015 (section 4.1): their plain networks are trained with BN, "which ensures forward propagated '
    'signals to have non-zero variances", the backward gradients "exhibit healthy norms with BN", and the '
    'degradation is "unlikely to be caused by vanishing gradients"'
)
VANISHED = 0.01  # first layer's ||g|| ||W|| below 1% of the last convolution's: vanishing
EXPLODED = 100.0  # above 100 times: exploding
BLOWN_UP = 1.0  # a first update lr ||g|| / ||W|| above this is larger than the weight itself
AGREE = 0.01  # two engines' gradient norms within 1% of each other: agreeing
MEASURE = "‖g‖‖W‖"


def _describe(name: str) -> tuple[str, int, bool]:
    spec = get_spec(name)
    return ("residual" if spec.shortcut != "none" else "plain"), spec.depth, spec.batch_norm


def _num(value: float) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "inf"
    return sig3(value) if value == 0 or 1e-3 <= abs(value) < 1e7 else f"{value:.3g}"


def sensitivity(run: dict, step: int) -> list[float]:
    """||g|| x ||W|| of every layer at `step`: unchanged by the rescales that keep the network's function."""
    return [g * w for g, w in zip(run["grad_norm"][step], run["weight_norm"][step])]


def first_to_last(values: list[float]) -> float:
    """The first weight layer's value over the last convolution's (the classifier left out); NaN where either is
    not finite or both are 0."""
    first, last = values[0], values[-2]
    if not (math.isfinite(first) and math.isfinite(last)) or first == last == 0:
        return math.nan
    return first / last if last else math.inf


def finite_through(run: dict, step: int) -> bool:
    """No NaN or inf in the loss or any norm of any layer, from initialisation through `step`."""
    values = list(run["loss"][: step + 1])
    for key in MEASURES:
        values += [v for layer in run[key][: step + 1] for v in layer]
    return all(math.isfinite(v) for v in values)


def blew_up(run: dict) -> bool:
    """The first update was larger than the weight it changed, in some layer."""
    return not run["first_update_max"] <= BLOWN_UP


def classify(ratio: float) -> str:
    """The flow a first/last ratio of finite figures shows (NaN: both gradients are exactly 0)."""
    if ratio != ratio:
        return "no gradient"
    if ratio < VANISHED:
        return "vanishing"
    if ratio > EXPLODED:
        return "exploding"
    return "steady"


def state(run: dict, step: int) -> str:
    """diverged, blown up (after a first update larger than the weights), vanishing, exploding or steady."""
    if not finite_through(run, step):
        return "diverged"
    if step > 0 and blew_up(run):
        return "blown up"
    return classify(first_to_last(sensitivity(run, step)))


def difference(a: float, b: float) -> float:
    """Relative difference of two positive norms, symmetric: the larger over the smaller, minus 1."""
    low, high = sorted((abs(a), abs(b)))
    return 0.0 if high == 0 else math.inf if low == 0 else high / low - 1


def _difference_text(value: float) -> str:
    return f"{value:.2g}" if value < 1 else f"{value + 1:.3g}x"


def _times(steps: int) -> list[int]:
    return [0, steps] if steps else [0]


def _when(step: int) -> str:
    return "at init" if step == 0 else f"after {step} step{'s' * (step != 1)}"


def _biggest_update(run: dict) -> tuple[float, str]:
    updates = run["first_update"]
    index = max(range(len(updates)), key=lambda i: updates[i] if updates[i] == updates[i] else math.inf)
    return updates[index], run["layers"][index]


def write_flow_report(data: dict, out: Path) -> Path:
    request = data["request"]
    results = [r for r in data["results"] if "error" not in r]
    failed = [r for r in data["results"] if "error" in r]
    steps, times = request["steps"], _times(request["steps"])
    rows = []
    for name in request["models"]:
        kind, depth, norm = _describe(name)
        for result in results:
            run = result["models"][name]
            update, layer = _biggest_update(run)
            row = [name, kind, depth, "yes" if norm else "no", result["engine"],
                   f"{_num(run['loss'][0])} → {_num(run['loss'][-1])}"]  # fmt: skip
            for step in times:
                row += [_num(first_to_last(sensitivity(run, step))), state(run, step)]
                if step == 0:
                    row.append(f"{_num(update)} ({layer})")
            rows.append(row)
    headers = ["model", "kind", "depth", "BN", "engine", f"loss, init → step {steps}"]
    for step in times:
        headers += [f"{MEASURE} first/last {_when(step)}", f"state {_when(step)}"]
        if step == 0:
            headers.append("first update lr‖g‖/‖W‖, max (layer)")
    dtypes = sorted({run["dtype"] for r in results for run in r["models"].values()})
    rates = sorted({run["learning_rate"] for r in results for run in r["models"].values()})
    env = data["env"]
    lines = [
        "# Gradient flow: plain against residual CIFAR networks, with and without batch norm",
        "",
        f"- **Engines**: {', '.join(r['engine'] for r in results) or 'none'}"
        + "".join(f"; {r['engine']} failed: {r['error']}" for r in failed),
        f"- **Machine**: {env.get('cpu_model')}, {env.get('cpu_cores')} cores; commit {env.get('git_commit')}; "
        f"`{env.get('command_line')}` at {env.get('time')}",
        f"- **Setup**: batch {request['batch_size']} of {request['image_size']} px normal images with random labels "
        f"(a fresh seeded batch per step, the same in every engine); the training recipe: "
        f"{recipe.describe(request['lr_scale'])} (the optimizers held {', '.join(f'{r:.6g}' for r in rates)}); "
        f"{steps} steps, in {', '.join(dtypes) or 'no'} weights, from the same initial weights in every engine "
        "(PyTorch's seeded torchvision-style initialisation, transferred). BatchNorm uses batch statistics "
        "(training mode).",
        "- **Measured**, per convolution and linear weight (forward order) and per step (step 0 is the "
        f"initialisation, step k the weights after k updates, up to {steps}): the weight's L2 norm ‖W‖, its "
        "gradient's ‖g‖, their per-element RMS (norm / √numel) and ‖g‖/‖W‖, all in gradient_flow.csv; the "
        "learning rate lr and the first update relative to the weight, lr × ‖g‖/‖W‖ at step 0 (momentum starts "
        "empty, so the first update is lr × g).",
        f"- **Judged on** {MEASURE} = ‖g‖ × ‖W‖, the first weight layer's over the last convolution's "
        f"('first/last'): below {VANISHED:g} vanishing, above {EXPLODED:g} exploding, between them steady. Unlike "
        "‖g‖ or ‖g‖/‖W‖ it does not change when a layer's weight is rescaled without changing the function "
        "(behind BN a weight's gradient scales as 1/‖W‖; without BN a rescale by c of one layer and 1/c of the "
        "next), and it is in loss units whatever the tensor's size (the loss's first-order change when the "
        f"layer moves by its own size). A first update above {BLOWN_UP:g} (larger than the weight) **blew up the "
        "weights**: later figures are called 'blown up', not vanishing or exploding. NaN or inf in the loss or "
        "any norm, at any step up to a point, is 'diverged' there.",
        "",
        markdown_table(rows, headers),
        "",
        "## Do the engines agree?",
        "",
    ]
    lines += _agreement_text(results, request["models"], steps)
    lines += ["", "## What the tutorial says, and what was measured", "", f"- Claim, {TUTORIAL}.", f"- {HE_ET_AL}.", ""]
    lines += _findings(results, request["models"], steps)
    plot = _plot(results, request["models"], steps, out)
    if plot:
        lines += ["", f"![{MEASURE} per layer {' and '.join(_when(t) for t in _times(steps))}]({plot.name})", ""]
    _write_csv(results, out / "gradient_flow.csv")
    return write_text(out / "gradient_flow.md", "\n".join(lines) + "\n")


def _write_csv(results, path: Path) -> None:
    header = ["engine", "model", "step", "loss", "layer_index", "layer", "numel", *MEASURES, "grad_times_weight",
              "learning_rate", "first_update"]  # fmt: skip
    rows = []
    for result in results:
        for name, run in result["models"].items():
            for step in range(len(run["loss"])):
                for index, layer in enumerate(run["layers"]):
                    values = [run[key][step][index] for key in MEASURES]
                    rows.append([result["engine"], name, step, run["loss"][step], index, layer, run["sizes"][index],
                                 *values, values[0] * values[1], run["learning_rate"],
                                 run["first_update"][index] if step == 0 else ""])  # fmt: skip
    write_csv(path, header, rows)


def agreement(results, models, step: int) -> dict[str, dict[str, float | str]]:
    """Per other engine, per network: at `step`, the largest difference of a layer's gradient norm from the
    first engine's (`difference`), or, where either engine diverged by then, who did."""
    found = {}
    for other in results[1:]:
        per_network = {}
        for name in models:
            a, b = results[0]["models"][name], other["models"][name]
            finite = finite_through(a, step), finite_through(b, step)
            if all(finite):
                pairs = zip(a["grad_norm"][step], b["grad_norm"][step])
                per_network[name] = max(difference(x, y) for x, y in pairs)
            else:
                per_network[name] = "both diverged" if not any(finite) else f"only {(results[0], other)[finite.index(False)]['engine']} diverged"  # fmt: skip
        found[other["engine"]] = per_network
    return found


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else math.nan


def _agreement_text(results, models, steps) -> list[str]:
    if len(results) < 2:
        return ["One engine only: nothing to compare."]
    reference = results[0]["engine"]
    blown = sorted(n for n in models if blew_up(results[0]["models"][n]))
    lines = [
        f"Each engine against {reference}, at each point in time: per network the largest relative difference of a "
        f"layer's gradient norm (the larger over the smaller, minus 1; 'x' marks a factor), within {AGREE:g} counted "
        "as agreeing.",
        "",
    ]
    verdicts = {}
    for step in _times(steps):
        for engine, per_network in agreement(results, models, step).items():
            numbers = {n: v for n, v in per_network.items() if not isinstance(v, str)}
            beyond = sorted((n for n, v in numbers.items() if v > AGREE), key=numbers.get)
            if not numbers:
                lines.append(
                    f"- **{_when(step)}**, {engine}: no network to compare"
                    + "".join(f"; {n}: {v}" for n, v in per_network.items())
                    + "."
                )
                continue
            median = _median(list(numbers.values()))
            verdicts.setdefault(engine, []).append((step, median))
            other = next(r for r in results if r["engine"] == engine)["models"]
            judged = {
                n: difference(
                    first_to_last(sensitivity(results[0]["models"][n], step)),
                    first_to_last(sensitivity(other[n], step)),
                )
                for n in numbers
            }
            judged = {n: v for n, v in judged.items() if v == v}
            text = (
                f"- **{_when(step)}**, {engine}: within {AGREE:g} in {len(numbers) - len(beyond)} of {len(numbers)} "
                f"networks (median network {_difference_text(median)})"
                + (f"; beyond: {', '.join(f'{n} {_difference_text(numbers[n])}' for n in beyond)}" if beyond else "")
                + "".join(f"; {n}: {v}" for n, v in per_network.items() if isinstance(v, str))
            )
            if judged:
                worst = max(judged, key=judged.get)
                text += f"; {MEASURE} first/last differs by at most {_difference_text(judged[worst])} ({worst})"
            if step and blown:
                big = [numbers[n] for n in blown if n in numbers]
                rest = [v for n, v in numbers.items() if n not in blown]
                if big:
                    text += (
                        f". Where the first update blew up the weights ({', '.join(n for n in blown if n in numbers)}) "
                        f"the worst layer differs by {_span(big)}; "
                        + (f"in the others by at most {_difference_text(max(rest))}" if rest else "there are no others")
                    )
            states = [n for n in models if state(results[0]["models"][n], step) != state(other[n], step)]
            text += (
                ". The states agree in every network" if not states else f". The states differ in {', '.join(states)}"
            )
            lines.append(text + ".")
    lines.append("")
    for engine, points in verdicts.items():
        said = [
            f"{'agrees' if median <= AGREE else 'does not agree'} with {reference} {_when(step)} (median network "
            f"{_difference_text(median)})"
            for step, median in points
        ]
        lines.append(f"So {engine} " + " and ".join(said) + ".")
    if steps and all(len(points) == 2 and points[1][1] > points[0][1] for points in verdicts.values()):
        grown = "The differences grew from initialisation to the last step in every engine"
        if blown and _amplified_most(results, models, steps, blown):
            grown += (
                ", most where the first update blew up the weights (each such network differs more than every "
                "other network, in every engine)"
            )
        lines.append(grown + ".")
    return lines


def _span(values: list[float]) -> str:
    low, high = _difference_text(min(values)), _difference_text(max(values))
    return low if low == high else f"{low} to {high}"


def _amplified_most(results, models, steps, blown) -> bool:
    """Every blown-up network's difference after the steps is above every other network's, in every engine."""
    for per_network in agreement(results, models, steps).values():
        big = [v for n, v in per_network.items() if n in blown and not isinstance(v, str)]
        rest = [v for n, v in per_network.items() if n not in blown and not isinstance(v, str)]
        if not big or not rest or min(big) <= max(rest):
            return False
    return True


def _family(models, kind: str, norm: bool) -> list[tuple[int, str]]:
    return sorted((_describe(n)[1], n) for n in models if _describe(n)[0] == kind and _describe(n)[2] == norm)


def _depths(depths: list[int]) -> str:
    return ("depth " if len(depths) == 1 else "depths ") + ", ".join(map(str, depths[:-1])) + (
        " and " if len(depths) > 1 else "") + str(depths[-1])  # fmt: skip


def _grouped(pairs: list[tuple[int, str]]) -> str:
    """'steady at depth 20 and exploding at depths 56 and 110', in order of first appearance."""
    order = list(dict.fromkeys(s for _, s in pairs))
    words = {"exploding": "exploding (growing toward the input)", "vanishing": "vanishing (shrinking toward the input)"}
    parts = [f"{words.get(s, s)} at {_depths([d for d, x in pairs if x == s])}" for s in order]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _conv_blown(run: dict) -> int | None:
    """The convolution the first update blew up most (behind BN in a BN net), when one was and step 1 is finite."""
    convs = run["first_update"][:-1]
    i = max(range(len(convs)), key=lambda j: convs[j] if convs[j] == convs[j] else -math.inf)
    return i if convs[i] > BLOWN_UP and finite_through(run, 1) else None


def _family_sentence(members, runs, steps, kind: str, norm: bool) -> str:
    """One sentence on a family (plain or residual, with or without BN) from its figures in the list above it."""
    label = f"{kind.capitalize()} nets {'with' if norm else 'without'} BN"
    sentence = f"{label}: at initialisation the gradient is {_grouped([(d, state(runs[n], 0)) for d, n in members])}"
    if not steps:
        return sentence + "."
    blown = [(d, n) for d, n in members if blew_up(runs[n])]
    diverged = [d for d, n in members if state(runs[n], steps) == "diverged"]
    if blown:
        told, behind = [], []
        for d, n in blown:
            run = runs[n]
            i = _conv_blown(run) if norm else None
            if i is None:
                update, layer = _biggest_update(run)
                told.append(f"{_num(update)}x in {layer} at depth {d}")
                continue
            w0, w1, g0, g1 = (run[key][step][i] for key in ("weight_norm", "grad_norm") for step in (0, 1))
            told.append(
                f"{run['layers'][i]}'s {_num(run['first_update'][i])}x its weight at depth {d} (‖W‖ {_num(w0)} → "
                f"{_num(w1)}, ‖g‖ {_num(g0)} → {_num(g1)})"
            )
            if d not in diverged:
                behind.append((d, n))
        sentence += f"; the first update was larger than the weights at {_depths([d for d, _ in blown])}: " + ", ".join(
            told
        )
        if behind:
            judged = " and ".join(_num(first_to_last(sensitivity(runs[n], steps))) for _, n in behind)
            raw = " and ".join(_num(first_to_last(runs[n]["grad_norm"][steps])) for _, n in behind)
            sentence += (
                f"; behind BN a weight's gradient scales as 1/‖W‖, so the figures after it follow a blown-up update "
                f"and are not read as vanishing ({_when(steps)} {MEASURE} first/last is {judged} at "
                f"{_depths([d for d, _ in behind])}, while ‖g‖ alone gives {raw})"
            )
        alive = [(d, n) for d, n in blown if d not in diverged]
        if alive:
            sentence += "; the loss went " + ", ".join(
                f"{_num(runs[n]['loss'][0])} → {_num(runs[n]['loss'][steps])} at depth {d}" for d, n in alive
            )
    else:
        top = max(runs[n]["first_update_max"] for _, n in members)
        sentence += f"; no first update was larger than the weights (the largest: {_num(top)}x)"
    if diverged:
        sentence += f"; it diverged (NaN or inf) within {steps} step{'s' * (steps != 1)} at {_depths(diverged)}"
    rest = [(d, state(runs[n], steps)) for d, n in members if not blew_up(runs[n]) and d not in diverged]
    if rest:
        sentence += f"; {_when(steps)} it is {_grouped(rest)}"
    return sentence + "."


def _findings(results, models, steps) -> list[str]:
    if not results:
        return ["No engine produced figures."]
    result = results[0]
    runs = result["models"]
    others = list(results[1:])
    lines = [
        f"The figures from {result['engine']} ({MEASURE} first/last; the first update's largest lr × ‖g‖/‖W‖, and "
        f"its layer); {', '.join(r['engine'] for r in others) or 'no other engine'} in the table above:",
        "",
    ]
    sentences = []
    for norm in (True, False):
        for kind in ("plain", "residual"):
            members = _family(models, kind, norm)
            if not members:
                continue
            parts = []
            for depth, name in members:
                run = runs[name]
                text = f"{depth}: {_num(first_to_last(sensitivity(run, 0)))} ({state(run, 0)})"
                if steps:
                    update, layer = _biggest_update(run)
                    text += (f", first update {_num(update)} ({layer}), {_when(steps)} "
                             f"{_num(first_to_last(sensitivity(run, steps)))} ({state(run, steps)})")  # fmt: skip
                parts.append(text)
            lines.append(f"- **{kind}, {'with' if norm else 'without'} BN**: " + "; ".join(parts))
            sentences.append(_family_sentence(members, runs, steps, kind, norm))
    lines += ["", *sentences, ""]
    for step in _times(steps):
        vanishing = [n for n in models if state(runs[n], step) == "vanishing"]
        lines.append(
            f"Vanishing ({MEASURE} first/last below {VANISHED:g}) {_when(step)}: "
            + (", ".join(vanishing) if vanishing else "in none of the networks")
            + "."
        )
    plain_bn = _family(models, "plain", True)
    if plain_bn:
        init = [(d, state(runs[n], 0)) for d, n in plain_bn]
        verdict = (
            "vanishing somewhere, against their report"
            if any(s == "vanishing" for _, s in init)
            else "nowhere vanishing, as they report"
            + ("; but not the 'healthy norms' they describe where it explodes" if any(s == "exploding" for _, s in init) else "")
        )  # fmt: skip
        lines.append(
            f"Against He et al.: with BN the plain nets' gradient at initialisation is {_grouped(init)}: {verdict}."
        )
    disagreeing = [
        (r["engine"], step, n)
        for r in others
        for step in _times(steps)
        for n in models
        if state(r["models"][n], step) != state(runs[n], step)
    ]
    if others:
        lines.append(
            f"Every engine gives {result['engine']}'s states at every point in time."
            if not disagreeing
            else "Where the engines' states differ: "
            + "; ".join(
                f"{n} {_when(s)}: {e} {state(next(r for r in others if r['engine'] == e)['models'][n], s)}"
                for e, s, n in disagreeing
            )  # fmt: skip
            + "."
        )
    return lines


def _plot(results, models, steps, out: Path) -> Path | None:
    if not results:
        return None
    plt = pyplot()

    depths = sorted({_describe(n)[1] for n in models})
    fig, axes = plt.subplots(2, len(depths), figsize=(4 * len(depths), 6.8), squeeze=False)
    reference = results[0]["engine"]
    for name in models:
        kind, depth, norm = _describe(name)
        ax = axes[0 if norm else 1][depths.index(depth)]
        colour = "tab:red" if kind == "plain" else "tab:blue"
        for result in results:
            run = result["models"][name]
            main = result["engine"] == reference
            for step in _times(steps):
                values = [v if math.isfinite(v) and v > 0 else math.nan for v in sensitivity(run, step)]
                ax.semilogy(range(len(values)), values, "-" if step == 0 else "--", color=colour,
                            linewidth=1.6 if main else 0.7, alpha=1.0 if main else 0.5,
                            label=f"{kind}, {_when(step)}" if main else None)  # fmt: skip
        notes = [f"{_describe(n)[0]} {state(results[0]['models'][n], steps)}" for n in models
                 if _describe(n)[1:] == (depth, norm) and state(results[0]["models"][n], steps) in ("diverged", "blown up")]  # fmt: skip
        ax.set_title(f"depth {depth}, {'with' if norm else 'without'} BN" + (f" ({'; '.join(notes)})" if notes else ""),
                     fontsize=8)  # fmt: skip
        ax.set_xlabel("weight layer (forward order)", fontsize=8)
    for row in axes:
        row[0].set_ylabel(f"{MEASURE} per layer", fontsize=8)
    labelled = next(ax for row in axes for ax in row if ax.get_legend_handles_labels()[1])
    labelled.legend(fontsize=7)
    others = ", ".join(r["engine"] for r in results[1:])
    fig.suptitle(
        f"{MEASURE} per layer: solid at init"
        + (f", dashed {_when(steps)}" if steps else "")
        + f"; thick {reference}"
        + (f", thin {others}" if others else "")
        + " (a diverged run's NaN is not drawn)",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "gradient_flow.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
