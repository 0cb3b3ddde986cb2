"""profile.md, profile.csv and the stage plot, from a profile's JSON (pure arithmetic and rendering)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.backends.categories import CATEGORIES
from bench.report.render import markdown_table, pyplot
from bench.report.tables import sig3
from bench.store.atomic import save_figure, write_csv, write_text
from implementations import get_spec
from implementations.lowering import lower, stage_costs

BYTES_FP32 = 4
SUM_TOLERANCE = 0.15  # stage times must add up to the whole step within this


@dataclass(frozen=True)
class StageTime:
    stage: str
    forward_s: float | None  # None for the optimizer row
    backward_s: float | None  # forward+backward minus forward (None for inference)
    total_s: float  # forward+backward (training) or forward (inference): one measured function
    low_s: float | None  # 95% interval of total_s
    high_s: float | None


def stage_times(result: dict, train: bool) -> list[StageTime]:
    timings = result["timings"]
    rows = []
    for stage in result["stages"]:
        forward = timings[f"{stage}/forward"]
        total = timings[f"{stage}/forward_backward"] if train else forward
        backward = total["seconds"] - forward["seconds"] if train else None
        rows.append(StageTime(stage, forward["seconds"], backward, total["seconds"], total["low"], total["high"]))
    return rows


def step_parts(result: dict, train: bool) -> list[StageTime]:
    """The stages, and when training the optimizer alone: the parts that make up a whole step."""
    rows = stage_times(result, train)
    if train:
        optimizer = result["timings"]["whole/optimizer"]
        rows.append(StageTime("optimizer", None, None, optimizer["seconds"], optimizer["low"], optimizer["high"]))
    return rows


@dataclass(frozen=True)
class StepCheck:
    stages_s: float  # sum of the stages (+ the optimizer when training)
    whole_s: float  # the whole model's step (training) or forward (inference), measured alike
    ratio: float

    @property
    def within(self) -> bool:
        return abs(self.ratio - 1) <= SUM_TOLERANCE


def step_check(result: dict, train: bool) -> StepCheck:
    timings = result["timings"]
    total = sum(s.total_s for s in step_parts(result, train))
    if train:
        whole = timings["whole/step"]["seconds"]
    else:
        whole = timings["whole/forward"]["seconds"]
    return StepCheck(total, whole, total / whole)


def step_split(result: dict) -> dict[str, float]:
    """Forward, backward and optimizer seconds of a training step: forward alone, forward+backward minus
    forward, and the optimizer alone, each timed as its own function."""
    t = {name: v["seconds"] for name, v in result["timings"].items()}
    return {
        "forward": t["whole/forward"],
        "backward": t["whole/forward_backward"] - t["whole/forward"],
        "optimizer": t["whole/optimizer"],
        "step": t["whole/step"],
    }


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else sig3(seconds * 1e3)


def decided_ratio(base: StageTime, other: StageTime) -> float | None:
    """How many times the baseline's time `other` takes for one stage (above 1: slower), or None when the two
    intervals overlap: the same within noise."""
    if None not in (base.low_s, base.high_s, other.low_s, other.high_s):
        if other.low_s <= base.high_s and base.low_s <= other.high_s:
            return None
    return other.total_s / base.total_s


def _faster(base: StageTime, other: StageTime, name: str) -> str:
    """`name` against the baseline for one stage; "same within noise" when the two intervals overlap."""
    ratio = decided_ratio(base, other)
    if ratio is None:
        return "same within noise"
    return f"{name} {1 / ratio:.2f}x faster" if ratio <= 1 else f"{name} {ratio:.2f}x slower"


def write_profile_report(data: dict, out: Path) -> Path:
    request = data["request"]
    spec = get_spec(request["model"])
    train = request["mode"] == "train"
    batch = request["batch_size"]
    costs = stage_costs(lower(spec, request["image_size"]))
    results = [r for r in data["results"] if "error" not in r]
    failed = [r for r in data["results"] if "error" in r]
    lines = [
        f"# Profile: {spec.name}, {request['mode']}, batch {batch}, {request['image_size']} px, "
        f"{request['precision']}, {request['device']}",
        "",
        f"- **Engines**: {', '.join(r['engine'] for r in results) or 'none'}"
        + "".join(f"; {r['engine']} failed: {r['error']}" for r in failed),
        f"- **Machine**: {data['env'].get('cpu_model')}, {data['env'].get('cpu_cores')} cores; "
        + "; ".join(
            f"{r['engine']} {r['env'].get('framework_version')} ({r['layout']}, "
            f"{r['env'].get('intra_op_threads')} threads)"
            for r in results
        ),
        f"- **Command**: `{data['env'].get('command_line')}` at {data['env'].get('time')}, commit "
        f"{data['env'].get('git_commit')}",
        "",
        "## Method",
        "",
        "Each stage of the lowered model (the spec's own: stem, each VGG block or ResNet stage, head) is built as "
        "a sub-model holding the whole model's weights and timed on its real input (the previous stage's output "
        "for the same images). Forward is the stage alone; backward is forward+backward minus forward, with a "
        "random upstream gradient of the stage's output shape (the head: the recipe's loss); every engine takes the "
        "gradients of the stage's parameters and, for every stage but the first, of its input (none for the "
        "network's input), on the same seeded images, labels and upstream gradients. The whole "
        "model's forward, forward+backward, optimizer step (on copies of the weights holding real gradients) and "
        f"full training step are timed the same way. Every function is warmed until steady, then timed in "
        f"{request['windows']} rounds of windows of at least {request['min_window_s']:g} s, the order reversed "
        "every round; figures are medians per call, with distribution-free 95% intervals. Stages compared "
        "between engines are 'same within noise' when their intervals overlap.",
        "",
    ]
    analytic = [
        [c.stage, f"{c.params:,}", sig3(c.macs / 1e6), sig3(c.activations * BYTES_FP32 / 2**20),
         sig3(2 * c.macs * batch / (BYTES_FP32 * (c.params + c.activations * batch))) if c.macs else "—"]
        for c in costs
    ]  # fmt: skip
    lines += [
        "## Stages from the spec",
        "",
        "Activations: every layer's output, float32, per image (computed from the lowered layers). Arithmetic "
        f"intensity: forward FLOPs over the bytes of weights and activations at batch {batch}.",
        "",
        markdown_table(analytic, ["stage", "params", "MMACs/img", "activations MiB/img", "FLOP/byte"], numbers=True),
        f"| **total** | {sum(c.params for c in costs):,} | {sig3(sum(c.macs for c in costs) / 1e6)} | "
        f"{sig3(sum(c.activations for c in costs) * BYTES_FP32 / 2**20)} | |",
        "",
    ]
    csv_rows = []
    if results:
        lines += _stage_section(results, train, batch, csv_rows)
        if train:
            lines += _split_section(results)
        lines += _category_section(results)
        lines += _summary_section(results, costs, train, batch)
        lines += _trace_section(results, out)
    plot = _plot(results, train, out)
    if plot:
        lines += [f"![stage time per engine]({plot.name})", ""]
    write_csv(out / "profile.csv", ["engine", "stage", "forward_ms", "backward_ms", "total_ms", "total_low_ms",
                                    "total_high_ms", "saved_activation_bytes"], csv_rows)  # fmt: skip
    return write_text(out / "profile.md", "\n".join(lines) + "\n")


def _stage_section(results, train, batch, csv_rows) -> list[str]:
    base = results[0]
    base_times = {s.stage: s for s in step_parts(base, train)}
    headers = ["stage"]
    per_engine = []
    for result in results:
        times = step_parts(result, train)
        per_engine.append((result, times))
        headers += [f"{result['engine']} fwd ms", *([f"{result['engine']} bwd ms", f"{result['engine']} total ms"]
                    if train else []), f"{result['engine']} share"]  # fmt: skip
    headers += [f"vs {base['engine']}: {r['engine']}" for r in results[1:]]
    rows = []
    for index, part in enumerate(base_times):
        row = [part]
        for result, times in per_engine:
            s = times[index]
            total = sum(t.total_s for t in times)
            row += [_ms(s.forward_s), *([_ms(s.backward_s), _ms(s.total_s)] if train else []),
                    f"{s.total_s / total:.0%}"]  # fmt: skip
            saved = result["saved_activation_bytes"].get(part)
            csv_rows.append([result["engine"], part, None if s.forward_s is None else s.forward_s * 1e3,
                             None if s.backward_s is None else s.backward_s * 1e3,
                             s.total_s * 1e3, None if s.low_s is None else s.low_s * 1e3,
                             None if s.high_s is None else s.high_s * 1e3, saved])  # fmt: skip
        row += [_faster(base_times[part], times[index], result["engine"]) for result, times in per_engine[1:]]
        rows.append(row)
    lines = ["## Stage times", "", markdown_table(rows, headers, numbers=True), ""]
    for result in results:
        check = step_check(result, train)
        what = "stages (forward+backward) + optimizer" if train else "stages (forward)"
        whole = "the whole training step" if train else "the whole forward pass"
        verdict = "within" if check.within else "OUTSIDE"
        lines.append(
            f"- {result['engine']}: {what} = {_ms(check.stages_s)} ms against {whole} {_ms(check.whole_s)} ms "
            f"(ratio {check.ratio:.2f}, {verdict} the {SUM_TOLERANCE:.0%} tolerance)"
        )
    saved = [r for r in results if r["saved_activation_bytes"]]
    if saved and train:
        lines += ["", "Activation memory kept for the backward pass, measured with PyTorch's saved-tensor hooks "
                  f"(weights excluded; batch {batch}); Keras does not expose it:", ""]  # fmt: skip
        rows = [[stage, sig3(saved[0]["saved_activation_bytes"][stage] / 2**20)] for stage in saved[0]["stages"]]
        lines += [markdown_table(rows, ["stage", f"{saved[0]['engine']} saved MiB"], numbers=True)]
    return lines + [""]


def _split_section(results) -> list[str]:
    rows = []
    for result in results:
        split = step_split(result)
        parts = split["forward"] + split["backward"] + split["optimizer"]
        rows.append([result["engine"], _ms(split["forward"]), _ms(split["backward"]), _ms(split["optimizer"]),
                     _ms(parts), _ms(split["step"]), f"{split['forward'] / parts:.0%} / {split['backward'] / parts:.0%} / "
                     f"{split['optimizer'] / parts:.0%}"])  # fmt: skip
    return [
        "## Training step split",
        "",
        "Forward (with the loss), backward (forward+backward minus forward) and the optimizer step, timed apart; "
        "their sum beside the full step timed as one.",
        "",
        markdown_table(
            rows,
            ["engine", "forward ms", "backward ms", "optimizer ms", "sum ms", "step ms", "shares"],
            numbers=True,
        ),  # fmt: skip
        "",
    ]


def _category_section(results) -> list[str]:
    with_ops = [r for r in results if r.get("categories")]
    missing = [f"- {r['engine']}: no categories ({r['categories_unavailable']})" for r in results
               if r.get("categories_unavailable")]  # fmt: skip
    if not with_ops:
        return (["## Operator categories", "", *missing, ""]) if missing else []
    headers = ["category"] + [f"{r['engine']} ms/step" for r in with_ops] + [f"{r['engine']} share" for r in with_ops]
    totals = [sum(r["categories"].values()) for r in with_ops]
    rows = []
    for category in CATEGORIES:
        values = [r["categories"].get(category, 0.0) for r in with_ops]
        rows.append(
            [category, *(_ms(v) for v in values), *(f"{v / t:.0%}" if t else "—" for v, t in zip(values, totals))]
        )
    rows.append(["**total**", *(_ms(t) for t in totals), *("100%" for _ in totals)])
    return [
        "## Operator categories",
        "",
        "Self time of every operator per step, from each framework's own profiler (torch.profiler; TensorFlow's "
        "and JAX's profilers read with xprof's framework_op_stats), over "
        f"{with_ops[0].get('profiled_steps')} steps of the stage-by-stage model, mapped to one vocabulary by "
        "`bench/backends/categories.py`. " + _totals_against_step(with_ops, totals) + " Compare shares.",
        "",
        markdown_table(rows, headers, numbers=True),
        "",
        *missing,
        *([""] if missing else []),
    ]


def _totals_against_step(results, totals) -> str:
    """What the category totals are against each engine's timed step (the profiled step runs apart from the
    timed one, under the profiler: the two need not agree, and the report says by how much)."""
    parts = []
    for result, total in zip(results, totals):
        timings = result["timings"]
        step = timings.get("whole/step", timings.get("whole/forward", {})).get("seconds")
        if step:
            parts.append(f"{result['engine']} {total / step:.2f}x")
    if not parts:
        return ""
    return (
        "Category totals against the timed step (whole step when training, forward when not): " + ", ".join(parts) + "."
    )


def _summary_section(results, costs, train, batch) -> list[str]:
    lines = ["## Where the time goes", ""]
    by_stage = {c.stage: c for c in costs}
    for result in results:
        times = stage_times(result, train)
        total = sum(t.total_s for t in step_parts(result, train))
        top = max(times, key=lambda t: t.total_s)
        cost = by_stage[top.stage]
        intensity = 2 * cost.macs * batch / (BYTES_FP32 * (cost.params + cost.activations * batch)) if cost.macs else 0
        macs_share = cost.macs / sum(c.macs for c in costs)
        sentence = (
            f"- **{result['engine']}**: {top.stage} takes the most time, {top.total_s / total:.0%} of the "
            f"{_ms(total)} ms of the {'stages and optimizer' if train else 'stages'}, for {macs_share:.0%} of the MACs and {cost.params / sum(c.params for c in costs):.0%} "
            f"of the parameters (arithmetic intensity {sig3(intensity)} FLOP/byte at batch {batch})"
        )
        if result.get("categories"):
            categories = result["categories"]
            lead = max(categories, key=categories.get)
            sentence += f"; by operator, {lead} leads with {categories[lead] / sum(categories.values()):.0%}"
        if train:
            split = step_split(result)
            sentence += (
                f"; the backward pass is {split['backward'] / split['forward']:.2f}x the forward and the optimizer "
                f"{split['optimizer'] / split['step']:.0%} of the step"
            )
        lines.append(sentence + ".")
    return lines + [""]


def _trace_section(results, out: Path) -> list[str]:
    """How to open each trace; paths are relative to this folder (the report moves with it)."""
    lines = []
    for result in results:
        if result.get("trace") == "torch_trace.json":
            lines.append("- PyTorch: `torch_trace.json` (Chrome trace JSON; open it at https://ui.perfetto.dev or "
                         "chrome://tracing; stages labelled `stage NAME`)")  # fmt: skip
        elif result.get("trace"):
            who = "Keras on JAX (jax.profiler)" if result["engine"] == "keras-jax" else "TensorFlow"
            lines.append(f"- {who}: from this folder, `xprof server --logdir {result['trace']} --port 6006` (or "
                         f"`tensorboard --logdir {result['trace']}`, Profile tab; ops scoped `stage_NAME/...`)")  # fmt: skip
    return (["## Traces", ""] + lines + [""]) if lines else []


def _plot(results, train, out: Path) -> Path | None:
    if not results:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    parts = [p.stage for p in step_parts(results[0], train)]
    bottoms = [0.0] * len(results)
    colors = plt.cm.viridis([i / max(1, len(parts) - 1) for i in range(len(parts))])
    for index, part in enumerate(parts):
        values = [step_parts(r, train)[index].total_s * 1e3 for r in results]
        color = "0.6" if part == "optimizer" else colors[index]
        ax.bar([r["engine"] for r in results], values, bottom=bottoms, label=part, color=color)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    whole = [step_check(r, train).whole_s * 1e3 for r in results]
    ax.scatter([r["engine"] for r in results], whole, marker="_", s=600, color="black", zorder=3,
               label="whole step, timed as one" if train else "whole forward, timed as one")  # fmt: skip
    ax.set_ylabel("ms per step" + (" (forward + backward, and the optimizer)" if train else " (forward)"))
    ax.set_title("Where a step's time goes, per engine: stages" + (" and optimizer" if train else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    path = out / "stage_times.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
