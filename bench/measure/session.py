"""The worker side of a measurement: one configuration held from `prepare` through its windows to `finish`.

The runner asks each engine's worker to prepare the same cell, then for one window at a time, in
alternation, then for the records; see runner.py. Everything here runs inside a worker process.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from bench.backends import Backend, Prepared
from bench.backends.categories import OUTSIDE_OPERATORS
from bench.config import Config, Settings
from bench.measure import stats, timing
from bench.measure.monitors import NvmlSampler, ProcessMemory, peak_flops
from bench.store.records import Record, make_record

LAYOUTS_TRIED = ("channels_first", "channels_last")  # the first is PyTorch's default format
LAYOUT_TRIAL_ROUNDS = 6  # the fewest windows per format that give a 95% interval of a median
LAYOUT_MARGIN = 0.05  # the cells' margin: a trial ratio inside it is reported as not beyond the noise
EXPLAIN_STEPS = (3, 12)  # steps of the explain pass's profiled half: at least / at most
EXPLAIN_HALF_S = 0.25  # the profiled half lasts about this long within those bounds (more steps for a short step)
# The unprofiled half, the step the categories must add up to, is measured as the windows are: the median of the
# means of EXPLAIN_CHUNKS runs of about EXPLAIN_CHUNK_S each (at least one step), each settled first. In a cell the
# runner asks for them in the windows' alternating order, engine by engine (AB BA ...), so a slow spell lands on both
# engines' references alike; measured one engine after the other, the two references of a cell differed from their
# windows' gap in opposite directions (results/runs/20261203-121002-cpu-cpu-default: ResNet-20 training at b=2, TensorFlow's
# reference 22% below its windows' median and PyTorch's 2% above, so the pass found TensorFlow the faster). A single
# 3-12 step mean strayed from the windows' median by up to 10% (results/runs/20261202-112420-cpu-cpu-default).
EXPLAIN_CHUNKS = 6  # even: the alternating order puts each engine first in half of the rounds
EXPLAIN_CHUNK_S = 0.15


def explain_chunks(windows: int) -> int:
    """The explain pass's unprofiled runs for a configuration of `windows` timed windows: EXPLAIN_CHUNKS, never
    more than the windows (a reference is no closer than the windows it is checked against)."""
    return max(1, min(EXPLAIN_CHUNKS, windows))


LATENCY_PASS_STEPS = (10, 100)  # a GPU's synchronous latency pass: this many steps, at least / at most
BYTES_PER_PARAMETER = 4  # float32 master weights, also under bf16/fp16 autocast and mixed policies
MOMENTUM_TRAINING_COPIES = 3  # weights + gradients + momentum buffer


def _nvml_sampler(device_uuid: str | None) -> NvmlSampler | None:
    try:
        return NvmlSampler(device_uuid)
    except Exception:
        return None


def warmup_cap_s(settings: Settings) -> float:
    """Warm-up stops at this many seconds even if the step time still improves (recorded as not steady)."""
    return max(2.0, 4 * settings.min_window_s)


def weights_bound_bytes(params: int, mode: str) -> int:
    """The least memory a configuration can take: its weights, and for training with momentum, their
    gradients and momentum buffers too. A measured peak below this is a measurement error."""
    return params * BYTES_PER_PARAMETER * (MOMENTUM_TRAINING_COPIES if mode == "train" else 1)


@dataclass
class Session:
    """One configuration in a worker: prepare once, then windows on request, then a record."""

    backend: Backend
    config: Config
    settings: Settings
    process_env: dict
    memory: ProcessMemory
    measured: dict = field(default_factory=dict)
    windows: list[timing.Window] = field(default_factory=list)
    cpu_seconds: float = 0.0
    # Set by prepare(); the step is let go (None) when the record is made.
    prepared: Prepared | None = None
    sampler: NvmlSampler | None = None
    steps_per_window: int = 0
    windows_planned: int = 0
    step_estimate_s: float = 0.0  # the warm-up's (or layout trial's) step time: sizes the windows and their settling
    unavailable_notes: dict = field(default_factory=dict)  # field -> why, added to the record's `unavailable`
    explain_chunks: list[float] = field(default_factory=list)  # the explain pass's unprofiled mean steps so far
    explain_chunks_s: float = 0.0  # and the wall time they took, settling included

    @property
    def ready(self) -> Prepared:
        """The prepared step; an error where there is none (not prepared yet, or its record already made)."""
        if self.prepared is None:
            raise RuntimeError(f"{self.config.model}: no prepared step (not prepared, or already finished)")
        return self.prepared

    def build(self, keep_model: bool = False) -> tuple[float, float]:
        """Free what this configuration will not reuse, reset the peaks, build, and time the first step
        apart: (build seconds, first-step seconds). On a CPU the backend lets go of a kept model too, so
        the peak is everything the configuration builds (`keep_model`: a probe, whose memory is not read)."""
        config, backend = self.config, self.backend
        gc.collect()
        if config.device == "cpu" and not keep_model:
            backend.release()
        else:
            backend.drop_other(config, self.settings)
        self._start_memory()
        started = time.perf_counter()
        self.prepared = backend.prepare(config, self.settings)
        build_s = time.perf_counter() - started
        return build_s, timing.timed_step(self.ready.step, self.ready.sync)

    def prepare(self) -> dict:
        config, settings, backend = self.config, self.settings, self.backend
        build_s, first_step_s = self.build()
        warm = timing.warm_up(
            self.ready.step, self.ready.sync, min_steps=settings.warmup_steps, cap_s=warmup_cap_s(settings)
        )
        step_s = warm.step_estimate_s
        if config.layout == "auto" and self.ready.set_layout is not None:
            trial = self._layout_trial(step_s)
            self.measured["layout_trial"] = trial
            step_s = trial["step_estimate_s"]
        self.measured.update(
            layout_chosen=self.ready.layout,
            first_step_s=build_s + first_step_s,
            build_s=build_s,
            warmup_steps_run=warm.steps,
            warmup_s=warm.seconds,
            warmup_steady=warm.steady,
            params=self.ready.params,
        )
        self.measured["peak_memory_first_step_bytes"] = self.peak_memory()[0]
        self.memory.reset_peak(step_s)  # the windows' peak: the steady state's own
        backend.reset_peak_memory(config)
        plan = timing.window_plan(
            step_s, config.device, settings.min_window_s, settings.windows, settings.max_window_steps
        )
        self.steps_per_window, self.windows_planned = plan.steps, plan.windows
        self.step_estimate_s = step_s
        self.measured["window_rule"] = plan.rule
        self.sampler = _nvml_sampler(self.ready.device_uuid) if config.device == "cuda" else None
        if self.sampler:
            self.sampler.start()
        return {
            "steps_per_window": self.steps_per_window,
            "windows": self.windows_planned,
            "layout": self.ready.layout,
        }

    def _layout_trial(self, first_layout_step_s: float) -> dict:
        """PyTorch's two memory formats, each warmed up, then timed in LAYOUT_TRIAL_ROUNDS alternating windows.
        The cell is measured in the format whose median trial rate is higher: no format is the default winner
        of a noisy trial, so the chosen one is never slower than the other by the trial's own medians. The
        paired ratio (NHWC over NCHW) and its 95% interval, the statistic of the cells, say whether the
        difference was beyond the noise; either way the faster median is kept."""
        prepared, settings, batch = self.ready, self.settings, self.config.batch_size
        set_layout = prepared.set_layout
        if set_layout is None:
            raise RuntimeError("the layout trial needs a backend that switches memory format (PyTorch)")
        first, second = LAYOUTS_TRIED
        set_layout(second)
        timing.timed_step(prepared.step, prepared.sync)  # the first step in this format
        warm = timing.warm_up(prepared.step, prepared.sync, min_steps=1, cap_s=warmup_cap_s(settings) / 2)
        steps = timing.steps_per_window(
            min(first_layout_step_s, warm.step_estimate_s), settings.min_window_s / 4, settings.max_window_steps
        )
        rates: dict[str, list[float]] = {first: [], second: []}
        layout = second
        for _, layout in timing.alternating((second, first), LAYOUT_TRIAL_ROUNDS):
            set_layout(layout)
            rates[layout].append(steps * batch / timing.window(prepared.step, prepared.sync, steps, False).seconds)
        ratio = stats.paired_ratio(rates[first], rates[second], margin=LAYOUT_MARGIN)
        medians = {name: stats.median(values) for name, values in rates.items()}
        chosen = second if medians[second] > medians[first] else first
        if chosen != layout:  # the last trial window ran the other format, already warm from the trial
            set_layout(chosen)
            timing.timed_step(prepared.step, prepared.sync)  # the cell's settling windows follow
        return {
            f"{first}_img_s": medians[first],
            f"{second}_img_s": medians[second],
            "round_ratios": [b / a for a, b in zip(rates[first], rates[second])],
            "rounds": LAYOUT_TRIAL_ROUNDS,
            "steps_per_window": steps,
            f"{second}_over_{first}": ratio.ratio,
            "ratio_low": ratio.low,
            "ratio_high": ratio.high,
            "decided": ratio.decided,
            "verdict": f"{second} {ratio.words()}",
            "rule": (
                f"the format with the higher median over {LAYOUT_TRIAL_ROUNDS} alternating rounds; the paired ratio's "
                f"95% interval says whether the difference is beyond the {LAYOUT_MARGIN:.0%} margin"
            ),
            "step_estimate_s": batch / medians[chosen],
        }

    def window(self, discard: bool = False) -> dict:
        """One timed window; a discarded one (settling the cell before its first pair) is not kept."""
        per_step = self._per_step_marks()
        timing.settle(self.ready.step, self.ready.sync, timing.settle_steps(self.step_estimate_s))
        cpu_start = time.process_time()
        result = timing.window(self.ready.step, self.ready.sync, self.steps_per_window, per_step)
        if discard:
            self.memory.hold()  # the settling window's peak is the windows' own: the timed ones run unsampled
        if not discard:
            self.cpu_seconds += time.process_time() - cpu_start
            self.windows.append(result)
        return {"seconds": result.seconds, "steps": self.steps_per_window}

    def measure_alone(self) -> Record:
        """A configuration measured on its own: prepared, one settling window (untimed; where a CPU peak is
        sampled, so the timed windows run with no sampler beside them), the planned windows, the record."""
        self.prepare()
        self.window(discard=True)
        for _ in range(self.windows_planned):
            self.window()
        return self.finish({"pairing": "alone"})

    def _per_step_marks(self) -> bool:
        """A clock read per step is exact only where execution is synchronous: a CPU, and an engine
        whose step has finished when it returns."""
        return self.config.device == "cpu" and self.ready.synchronous

    def _window_step_s(self) -> float:
        """The windows' median step: sizes the explain pass's runs."""
        timed = sorted(w.seconds / self.steps_per_window for w in self.windows) if self.steps_per_window else []
        return timed[len(timed) // 2] if timed else EXPLAIN_HALF_S / EXPLAIN_STEPS[0]

    def explain_chunk(self) -> dict:
        """One unprofiled run of the explain pass (about EXPLAIN_CHUNK_S, at least one step), settled first as a
        window is: its mean step is kept for the pass's reference. Untimed for any figure."""
        started = time.perf_counter()
        step_s = self._window_step_s()
        steps = max(1, round(EXPLAIN_CHUNK_S / step_s))
        timing.settle(self.ready.step, self.ready.sync, timing.settle_steps(step_s))
        mean = sum(timing.latency_pass(self.ready.step, self.ready.sync, steps)) / steps
        self.explain_chunks.append(mean)
        self.explain_chunks_s += time.perf_counter() - started
        return {"seconds": mean, "steps": steps}

    def explain(self) -> dict:
        """The explain pass, after the windows and outside them (nothing here is in a timed figure): the
        unprofiled runs the runner has not already asked for (in a cell it asks for them alternating between the
        engines), the median of their mean steps the step time the categories must add up to; then 3-12 steps
        under the framework's profiler, each operator's share of the wall time per category. "outside operators"
        is the unprofiled step less the operators' time: the framework's own work between them, and idle (negative
        where the profiler lengthens the operators by more than that)."""
        started, asked_before = time.perf_counter(), self.explain_chunks_s  # the runs asked for before are its cost too
        low, high = EXPLAIN_STEPS
        steps = max(low, min(high, round(EXPLAIN_HALF_S / self._window_step_s())))
        try:
            while len(self.explain_chunks) < explain_chunks(len(self.windows) or self.windows_planned):
                self.explain_chunk()
            unprofiled = stats.median(self.explain_chunks)
            found = self.backend.operator_categories(self.ready, self.config, steps)
        except Exception as error:  # the pass explains; it never costs a measured record
            found = {"categories_unavailable": f"{type(error).__name__}: {error}"[:300]}
        cost = time.perf_counter() - started + asked_before
        if "categories" in found:
            categories = dict(found["categories"])
            categories[OUTSIDE_OPERATORS] = unprofiled - sum(categories.values())
            return {"op_categories": categories, "explain_s": cost, "explain_step_s": unprofiled,
                    "profiled_step_s": found.get("profiled_step_s")}  # fmt: skip
        self.unavailable_notes["op_categories"] = found.get("categories_unavailable", "no categories")
        return {"explain_s": cost}

    def _start_memory(self) -> None:
        """The configuration's memory is counted from here: on a GPU by the backend's allocator, on a CPU
        by the heap (ProcessMemory), with the framework's own pool where it keeps one."""
        config, backend = self.config, self.backend
        backend.reset_peak_memory(config)
        cpu = config.device == "cpu"
        pool = backend.pool_in_use(config) if cpu else None
        self.memory.start(sample=cpu, pool=pool)

    def peak_memory(self) -> tuple[int | None, str | None]:
        """The peak since the last reset, and where it comes from: the device allocator, or the heap."""
        peak, source = self.backend.peak_memory(self.config)
        return (self.memory.peak(), self.memory.source) if peak is None else (peak, source)

    def _kept_after(self) -> int:
        """On a CPU, at the end, the configuration let go of: the bytes still in use above its start, the
        framework's caches (kernels per shape), which a later configuration finds already there: not
        the configuration's own. A backend that keeps a released configuration's tensors (TensorFlow
        after training) has only what stays in malloc's arenas taken off, not what stays in its pool."""
        self.backend.release()
        kept = self.memory.kept(arenas_only=self.backend.keeps_released_tensors)
        self.memory.stop()
        return kept or 0

    def finish(self, cell: dict | None = None) -> Record:
        """The record: statistics over the windows, memory checked against the weights bound."""
        config, settings = self.config, self.settings
        if self.sampler:
            self.sampler.stop()
        peak, peak_source = self.peak_memory()
        self.memory.stop()
        self.measured["peak_memory_bytes"] = peak
        if not self._per_step_marks():
            low, high = LATENCY_PASS_STEPS
            latency = timing.latency_pass(self.ready.step, self.ready.sync, max(low, min(high, self.steps_per_window)))
            latency_source = "a synchronous pass after the windows: every step synchronised"
        else:
            latency = [s for w in self.windows for s in w.step_seconds]
            latency_source = "the windows' per-step times (synchronous execution)"
        window_seconds = [w.seconds for w in self.windows]
        images = [self.steps_per_window * config.batch_size] * len(self.windows)
        measured = dict(self.measured)
        measured.update(stats.throughput_summary(window_seconds, images))
        measured.update(stats.latency_summary(latency))
        measured.update(
            latency_samples=len(latency),
            latency_source=latency_source,
            steps_per_window=self.steps_per_window,
            window_seconds=window_seconds,
            step_seconds=latency,
            cpu_util_cores=self.cpu_seconds / sum(window_seconds) if window_seconds else None,
            **(cell or {}),
        )
        unavailable: dict[str, str] = {}
        cpu = config.device == "cpu"
        left_by_pass = 0
        if settings.explain:  # before the model is let go of; the peak was taken before it
            mark = self.memory.mark() if cpu else None
            measured.update(self.explain())
            # What the profiler leaves allocated came after the peak: it is not the configuration's, and
            # is not taken off the peak with the caches the configuration's own steps left.
            left_by_pass = self.memory.grown_since(mark, arenas_only=self.backend.keeps_released_tensors)
            if left_by_pass:
                measured["explain_left_bytes"] = left_by_pass
        params, layout = self.ready.params, self.ready.layout
        device_name = self.ready.device_name or self.process_env.get("device_name")
        kept = 0
        if cpu:
            self.prepared = None  # its closures hold the model
            kept = max(0, self._kept_after() - left_by_pass)
        bound = weights_bound_bytes(params, config.mode)
        measured["memory_bound_bytes"] = bound
        for name in ("peak_memory_bytes", "peak_memory_first_step_bytes"):
            value = measured.get(name)
            if value is None:
                unavailable[name] = (
                    "no glibc mallinfo2 in this worker"
                    if config.device == "cpu"
                    else "no allocator peak on this device"
                )
                continue
            value = measured[name] = max(0, value - kept)
            if value < bound:
                measured[name] = None
                unavailable[name] = (
                    f"measured {value / 2**20:.1f} MiB, below the weights bound {bound / 2**20:.1f} MiB "
                    f"({'weights, gradients and momentum' if config.mode == 'train' else 'weights'}): "
                    "a measurement error, not a result"
                )
        measured["memory_source"] = peak_source
        peak_rate = peak_flops(device_name, config.precision, settings.tf32) if config.device == "cuda" else None
        if peak_rate is None:
            unavailable["mfu"] = (
                "peak FLOP/s of a CPU is not known to the harness"
                if config.device == "cpu"
                else f"no peak FLOP/s on record for {device_name!r} at {config.precision}"
            )
        gpu_env = {}
        if self.sampler is not None:
            measured.update(self.sampler.summary(sum(images)))
            gpu_env = self.sampler.device_info()
        else:
            reason = "no GPU: device is cpu" if config.device == "cpu" else "NVML not available"
            for name in (
                "gpu_util_pct_mean",
                "gpu_util_pct_max",
                "power_w",
                "energy_j_per_img",
                "nvml_memory_used_bytes",
            ):
                unavailable[name] = reason
        env = dict(self.process_env, **gpu_env, device_name=device_name, layout=layout)
        self.prepared = None
        unavailable.update(self.unavailable_notes)
        return make_record(config, "ok", peak_flops=peak_rate, unavailable=unavailable, env=env, **measured)

    def failure(self, error: BaseException) -> Record:
        """A failed configuration is a record with its status; the backend lets go of everything."""
        status = "oom" if self.backend.is_oom(error) else "error"
        message = f"{type(error).__name__}: {error}".strip()
        self.prepared = None
        if self.sampler is not None:
            self.sampler.stop()
        self.memory.stop()
        self.backend.release()
        return make_record(self.config, status, error=message[:2000], env=self.process_env)
