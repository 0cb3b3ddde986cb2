"""How long a plan will take, from what earlier runs measured on the same device.

Every sweep prints this before it starts. A configuration's cost is its first step (build, tracing,
compilation, autotuning), its warm-up, PyTorch's layout trial under `layout auto`, its timed windows (with
the untimed settling window, sized by the same `timing.window_plan` rule the session applies) and, on a
GPU, its synchronous latency pass. Messaging between runner and workers is not counted: on our CPU the
estimate came out about a fifth short of the command's wall time. Costs
come from earlier records on the same device (the GPU's product name, or the CPU's model and core count):

- measured: the same configuration was measured before;
- scaled: the same model, mode, precision and compile setting at another batch (time per image kept), or
  another model of the engine (time per image scaled by forward FLOPs);
- not estimated: the engine has no record on this device; the line says so rather than guess.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from bench.config import Config, Plan
from bench.measure.timing import window_plan
from bench.store.records import Record, cpu_model, read_results
from implementations.lowering import flops_per_image

WORKER_START_S = 3.0  # assumed: a worker's interpreter and framework start, per model and engine
WARMUP_FALLBACK_STEPS = 5  # warm-up steps assumed where a record has no warm-up time (older runs)
LATENCY_PASS_STEPS = 100  # a GPU's latency pass, at most (session.LATENCY_PASS_STEPS)


def device_key_of(record: Record) -> tuple:
    if record.device == "cuda":
        return ("cuda", record.env.get("device_name"))
    return ("cpu", record.env.get("cpu_model"), record.env.get("cpu_cores"))


def this_device_key(device: str, gpu_name: str | None = None) -> tuple:
    if device == "cuda":
        return ("cuda", gpu_name)
    return ("cpu", cpu_model(), os.cpu_count())


def load_history(runs_dir: Path) -> list[Record]:
    """Every ok record of every run folder under `runs_dir` (damaged lines are skipped here: an estimate
    never stops a run)."""
    history = []
    for path in sorted(Path(runs_dir).glob("*/results.jsonl")):
        history += [r for r in read_results(path).records if r.ok and r.throughput_img_s]
    return history


@dataclass(frozen=True)
class Estimate:
    seconds: float  # of the estimated configurations
    measured: int
    scaled: int
    not_estimated: dict[str, int]  # engine -> configurations without any record on this device

    def line(self) -> str:
        estimated = self.measured + self.scaled
        text = (
            f"estimate: {_duration(self.seconds)} for {estimated} configuration(s) ({self.measured} measured on this "
            f"device before, {self.scaled} scaled from such records; first steps included)"
            if estimated
            else "estimate: none"
        )
        if self.not_estimated:
            missing = ", ".join(f"{engine} ({count})" for engine, count in self.not_estimated.items())
            text += f"; not estimated, no record on this device: {missing}"
        return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def estimate(plan: Plan, history: list[Record], device_key: tuple) -> Estimate:
    own = [r for r in history if device_key_of(r) == device_key]
    settings = plan.settings
    total, measured, scaled, missing = 0.0, 0, 0, {}
    workers = set()
    for config in plan.configs:
        match = _cost_source(config, own)
        if match is None:
            missing[config.framework] = missing.get(config.framework, 0) + 1
            continue
        step_s, record, first, exact = match
        measured += exact
        scaled += not exact
        window = window_plan(step_s, config.device, settings.min_window_s, settings.windows, settings.max_window_steps)
        timed = (window.windows + 1) * window.steps * step_s  # +1: the untimed settling window
        warm = record.warmup_s if record.warmup_s is not None else WARMUP_FALLBACK_STEPS * step_s
        latency = min(LATENCY_PASS_STEPS, window.steps) * step_s if config.device == "cuda" else 0.0
        total += first + warm + timed + latency + _layout_trial_s(config, step_s, warm, settings)
        worker = (config.framework, config.model, config.compile, config.precision)
        if worker not in workers:
            workers.add(worker)
            total += WORKER_START_S + (record.build_s or 0.0)
    return Estimate(total, measured, scaled, missing)


def _layout_trial_s(config: Config, step_s: float, warm_s: float, settings) -> float:
    """PyTorch's layout trial under `layout auto` (session._layout_trial): a first step and a warm-up in the
    other format, then LAYOUT_TRIAL_ROUNDS rounds of one window per format of at least a quarter window."""
    from bench.measure.session import LAYOUT_TRIAL_ROUNDS

    if config.framework != "torch" or config.layout != "auto":
        return 0.0
    window = max(step_s, settings.min_window_s / 4)
    return step_s + warm_s + LAYOUT_TRIAL_ROUNDS * 2 * window


def _step_at(records: list[Record], batch: int) -> tuple[float, Record, int]:
    """Step seconds of one model at `batch` from its records: measured, interpolated linearly in the batch
    between the two nearest batches around it, or extrapolated at the nearest batch's time per image; with
    the record whose first step stands in and how far the batch was from a measured one (0: measured)."""
    by_batch: dict[int, list[Record]] = {}
    for r in records:
        by_batch.setdefault(r.batch_size, []).append(r)
    # Several runs of one configuration: the one of median throughput stands for them.
    points = [sorted(group, key=lambda r: r.throughput_img_s)[len(group) // 2] for _, group in sorted(by_batch.items())]
    step = {r.batch_size: r.batch_size / r.throughput_img_s for r in points}
    below = [r for r in points if r.batch_size <= batch]
    above = [r for r in points if r.batch_size >= batch]
    if below and above:
        low, high = below[-1], above[0]
        if low.batch_size == high.batch_size:
            return step[low.batch_size], low, 0
        share = (batch - low.batch_size) / (high.batch_size - low.batch_size)
        slower_start = max(low, high, key=lambda r: r.first_step_s or 0.0)  # the longer first step, to be safe
        return step[low.batch_size] + share * (step[high.batch_size] - step[low.batch_size]), slower_start, 1
    nearest = below[-1] if below else above[0]
    distance = 2 + abs(math.log2(batch / nearest.batch_size))
    return step[nearest.batch_size] * batch / nearest.batch_size, nearest, distance


def _cost_source(config: Config, own: list[Record]) -> tuple[float, Record, float, bool] | None:
    """(step seconds, the record whose warm-up and build stand in, first-step seconds, whether the same
    configuration was measured) for `config`, from records of the same engine, mode, precision and compile
    setting: the same model where its records reach the batch, else the best-covered model of the same
    family (then any), scaled by forward FLOPs."""
    same_engine = [
        r for r in own
        if (r.framework, r.mode, r.precision, r.compile, r.image_size)
        == (config.framework, config.mode, config.precision, config.compile, config.image_size)
    ]  # fmt: skip
    if not same_engine:
        return None
    by_model: dict[str, list[Record]] = {}
    for r in same_engine:
        by_model.setdefault(r.model, []).append(r)
    flops = flops_per_image_of(config)
    family = _family(config.model)

    def rank(model: str) -> tuple:
        """The model itself first where its records reach the batch (measured or bracketed); then the nearest
        batch, the same family, the nearest FLOPs."""
        _, _, distance = _step_at(by_model[model], config.batch_size)
        return (model != config.model or distance > 1, distance, _family(model) != family,
                abs(math.log(flops / flops_per_image_of(by_model[model][0].config))))  # fmt: skip

    model = min(by_model, key=rank)
    step_s, record, distance = _step_at(by_model[model], config.batch_size)
    ratio = flops / flops_per_image_of(record.config)
    # A first step is mostly fixed cost (allocation, autotuning, compiling): it grows with a larger model's
    # FLOPs, not with the batch.
    first = (record.first_step_s or 0.0) * (max(1.0, ratio) if config.compile == "off" else 1.0)
    exact = model == config.model and distance == 0  # distance 0: this very batch was measured
    return step_s * ratio, record, first, exact


def _family(model: str) -> str:
    from implementations import get_spec

    return get_spec(model).family


def flops_per_image_of(config: Config) -> int:
    from implementations import get_spec

    return flops_per_image(get_spec(config.model), config.image_size)
