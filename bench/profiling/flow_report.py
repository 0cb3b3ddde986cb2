"""gradient_flow.md, gradient_flow.csv and the norm-per-layer plot, from the study's JSON."""

from __future__ import annotations

import math
from pathlib import Path

from tabulate import tabulate

from implementations import get_spec

from ..atomic import save_figure, write_csv, write_text
from ..tables import sig3

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
VANISHED = 0.01  # first layer's gradient norm below 1% of the last layer's: called vanishing here


def _describe(name: str) -> tuple[str, int, bool]:
    spec = get_spec(name)
    return ("residual" if spec.shortcut != "none" else "plain"), spec.depth, spec.batch_norm


def median_norm(norms: list[float]) -> float:
    """The median layer's gradient norm: the level that first/last, a ratio, does not show."""
    finite = sorted(n for n in norms if n == n)
    return finite[len(finite) // 2] if finite else math.nan


def first_to_last(norms: list[float]) -> float:
    """The first weight layer's gradient norm over the last convolution's (the classifier left out)."""
    convs = norms[:-1]
    return convs[0] / convs[-1] if convs[-1] else math.inf


def write_flow_report(data: dict, out: Path) -> Path:
    request = data["request"]
    results = [r for r in data["results"] if "error" not in r]
    failed = [r for r in data["results"] if "error" in r]
    steps = request["steps"]
    rows, csv_rows = [], []
    for name in request["models"]:
        kind, depth, norm = _describe(name)
        row = [name, kind, depth, "yes" if norm else "no"]
        for result in results:
            run = result["models"][name]
            first, last = run["norms"][0], run["norms"][-1]
            row += [_ratio_text(first_to_last(first)), _ratio_text(first_to_last(last)), sig3(median_norm(first)),
                    f"{run['loss'][0]:.3g} → {run['loss'][-1]:.3g}"]  # fmt: skip
            for step, norms in enumerate(run["norms"]):
                csv_rows += [[result["engine"], name, step, index, layer, value]
                             for index, (layer, value) in enumerate(zip(run["layers"], norms))]  # fmt: skip
        rows.append(row)
    headers = ["model", "kind", "depth", "BN"]
    for result in results:
        e = result["engine"]
        headers += [f"{e} first/last at init", f"{e} first/last after {steps}", f"{e} median norm at init", f"{e} loss"]
    agreement = _agreement(results, request["models"])
    lines = [
        "# Gradient flow: plain against residual CIFAR networks, with and without batch norm",
        "",
        f"- **Engines**: {', '.join(r['engine'] for r in results) or 'none'}"
        + "".join(f"; {r['engine']} failed: {r['error']}" for r in failed),
        f"- **Machine**: {data['env'].get('cpu_model')}, {data['env'].get('cpu_cores')} cores; commit "
        f"{data['env'].get('git_commit')}; `{data['env'].get('command_line')}` at {data['env'].get('time')}",
        f"- **Setup**: batch {request['batch_size']} of {request['image_size']} px normal images with random labels "
        f"(a fresh seeded batch per step, the same in every engine), cross-entropy, SGD momentum 0.9 at learning "
        f"rate {0.01 * request['lr_scale']:g}, {steps} steps, the same initial weights in every engine (PyTorch's "
        "seeded torchvision-style initialisation, transferred). BatchNorm uses batch statistics (training mode).",
        "- **Measured**: the L2 norm of the gradient of every convolution and linear weight, in forward order, at "
        f"initialisation (step 0) and at each of the {steps} steps after. 'first/last' is the first convolution's "
        "norm over the last convolution's: far below 1 means the gradient shrinks on its way back (vanishes); far "
        "above 1, that it grows (explodes).",
        "",
        tabulate(rows, headers, tablefmt="github"),
        "",
    ]
    for engine, per_network in agreement.items():
        ordered = sorted(per_network.values())
        worst = max(per_network, key=per_network.get)
        lines += [
            f"{engine} agrees with {results[0]['engine']} at initialisation: the largest relative difference of a "
            f"layer's gradient norm is at most {ordered[len(ordered) // 2]:.2g} in half of the {len(ordered)} networks; "
            f"the worst, {per_network[worst]:.2g}, is {worst}'s (float32 rounding, amplified where the gradient grows "
            "or shrinks by orders of magnitude through the depth).",
            "",
        ]
    lines += ["## What the tutorial says, and what was measured", "", f"- Claim, {TUTORIAL}.", f"- {HE_ET_AL}.", ""]
    lines += _findings(results, request["models"], steps)
    plot = _plot(results, request["models"], out)
    if plot:
        lines += ["", f"![gradient norm per layer]({plot.name})", ""]
    write_csv(out / "gradient_flow.csv", ["engine", "model", "step", "layer_index", "layer", "grad_norm"], csv_rows)
    return write_text(out / "gradient_flow.md", "\n".join(lines) + "\n")


def _agreement(results, models) -> dict[str, dict[str, float]]:
    """Per other engine, per network: the largest relative difference of any layer's gradient norm at
    initialisation from the first engine's (finite norms only)."""
    agreement = {}
    for other in results[1:]:
        worst = {}
        for name in models:
            a, b = results[0]["models"][name]["norms"][0], other["models"][name]["norms"][0]
            worst[name] = max((abs(x - y) / abs(x) for x, y in zip(a, b) if x == x and y == y and x), default=0.0)
        agreement[other["engine"]] = worst
    return agreement


def _ratio_text(ratio: float) -> str:
    return "NaN (diverged)" if ratio != ratio else sig3(ratio)


def _labelled(ratio: float) -> str:
    return "NaN (diverged)" if ratio != ratio else f"{sig3(ratio)} ({classify(ratio)})"


def classify(ratio: float) -> str:
    if ratio != ratio or math.isinf(ratio):
        return "diverged"
    if ratio < VANISHED:
        return "vanishing"
    if ratio > 1 / VANISHED:
        return "exploding"
    return "steady"


def _findings(results, models, steps) -> list[str]:
    if not results:
        return ["No engine produced figures."]
    result = results[0]
    lines = [
        f"From {result['engine']} (the other engines' figures are in the table). First/last below {VANISHED:g} is "
        f"called vanishing here, above {1 / VANISHED:g} exploding, in between steady:",
        "",
    ]
    summary = {}
    for norm in (True, False):
        for kind in ("plain", "residual"):
            members = sorted(
                (_describe(n)[1], n) for n in models if _describe(n)[0] == kind and _describe(n)[2] == norm
            )
            if not members:
                continue
            parts = []
            for depth, name in members:
                norms = result["models"][name]["norms"]
                at_init, after = first_to_last(norms[0]), first_to_last(norms[-1])
                summary[(norm, kind, depth)] = (classify(at_init), classify(after))
                parts.append(f"{depth}: {_labelled(at_init)} → {_labelled(after)}")
            lines.append(
                f"- **{kind}, {'with' if norm else 'without'} BN**, at init → after {steps} steps: " + "; ".join(parts)
            )
    lines.append("")
    plain_bn = {d: v for (n, k, d), v in summary.items() if n and k == "plain"}
    if plain_bn:
        deepest = max(plain_bn)
        at_init, after = plain_bn[deepest]
        residual = sorted({v for (n, k, _), pair in summary.items() if n and k == "residual" for v in pair})
        lines.append(
            f"With BN, at initialisation the gradient of the deepest plain net (depth {deepest}) is {at_init}: "
            + ("not vanishing, as He et al. report (though not the 'healthy norms' they describe: it grows toward the "
               "input)" if at_init == "exploding" else "not vanishing, as He et al. report" if at_init != "vanishing"
               else "vanishing, against He et al.'s report")
            + f"; after {steps} SGD steps it is {after}"
            + (", the tutorial's description, seen here only once training had started" if after == "vanishing" else "")
            + f". The residual nets with BN are {'; '.join(residual)} at both points."
        )  # fmt: skip
    residual_free = {d: v for (n, k, d), v in summary.items() if not n and k == "residual"}
    plain_free = sorted({c for (n, k, _), pair in summary.items() if not n and k == "plain" for c in pair})
    if residual_free:
        diverged = sorted(d for d, v in residual_free.items() if v[1] == "diverged")
        lines.append(
            "Without BN"
            + (f", the residual nets of depth {', '.join(map(str, diverged))} diverged within {steps} steps (their "
               "forward signal grows with depth: see their initial loss), so shortcuts alone did not keep training "
               "stable here" if diverged else ", every residual net trained through the steps")
            + (f"; the plain nets without BN are {'; '.join(plain_free)} at both points." if plain_free else ".")
        )  # fmt: skip
        levels, medians = [], {}
        for kind in ("plain", "residual"):
            names = {_describe(n)[1]: n for n in models if _describe(n)[0] == kind and not _describe(n)[2]}
            medians[kind] = [median_norm(result["models"][names[d]]["norms"][0]) for d in sorted(names)]
            levels.append(f"{kind} " + ", ".join(f"{d}: {sig3(m)}" for d, m in zip(sorted(names), medians[kind])))
        smaller = medians["plain"] and medians["residual"] and max(medians["plain"]) < min(medians["residual"])
        lines.append(
            "The ratio is not the whole story without BN: the median layer's gradient norm at initialisation is "
            + "; ".join(levels)
            + (" (every plain net's level is below every residual net's)." if smaller else ".")
        )
    return lines


def _plot(results, models, out: Path) -> Path | None:
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({_describe(n)[1] for n in models})
    fig, axes = plt.subplots(2, len(depths), figsize=(4 * len(depths), 6.5), squeeze=False)
    styles = {"torch": "-", "keras-tensorflow": "--"}
    for name in models:
        kind, depth, norm = _describe(name)
        ax = axes[0 if norm else 1][depths.index(depth)]
        for result in results:
            norms = result["models"][name]["norms"][0]
            ax.semilogy(range(len(norms)), norms, styles.get(result["engine"], ":"),
                        color="tab:red" if kind == "plain" else "tab:blue", label=f"{kind} ({result['engine']})")  # fmt: skip
        ax.set_title(f"depth {depth}, {'with' if norm else 'without'} BN", fontsize=9)
        ax.set_xlabel("weight layer (forward order)", fontsize=8)
    for row in axes:
        row[0].set_ylabel("gradient norm at init", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "gradient_flow.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
