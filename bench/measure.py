"""Measure one configuration with a backend and turn the timings into a record (runs in a worker)."""

from __future__ import annotations

import gc
import time

from implementations import get_spec
from implementations.specs import flops_per_image

from . import stats
from .config import Config, Settings
from .monitors import NvmlSampler, ProcessMemory, peak_flops
from .records import make_record
from .timing import measure_prepared

# Training costs about three forward passes (forward, and a backward of about twice the forward).
TRAIN_FLOPS_FACTOR = 3


def _nvml_sampler() -> NvmlSampler | None:
    try:
        return NvmlSampler()
    except Exception:
        return None


def run_config(backend, config: Config, settings: Settings, process_env: dict) -> dict:
    """Build, warm up and time one configuration; failures become records with their status."""
    gc.collect()
    process_memory = ProcessMemory()
    process_memory.reset()
    backend.reset_peak_memory(config)
    sampler = _nvml_sampler() if config.device == "cuda" else None
    started = time.perf_counter()
    try:
        prepared = backend.prepare(config, settings)
        build_s = time.perf_counter() - started
        timing = measure_prepared(
            prepared,
            settings,
            on_windows_start=sampler.start if sampler else None,
            on_windows_end=sampler.stop if sampler else None,
        )
    except Exception as error:  # a failed configuration is a result, not a crash
        status = "oom" if backend.is_oom(error) else "error"
        message = f"{type(error).__name__}: {error}".strip()
        return make_record(config, status, error=message[:2000], env=process_env)
    finally:
        backend.release()

    images_per_window = [timing.steps_per_window * config.batch_size] * settings.windows
    measured = stats.throughput_summary(timing.window_seconds, images_per_window)
    measured.update(stats.latency_summary(timing.step_seconds))
    measured.update(
        first_step_s=build_s + timing.first_step_s,
        build_s=build_s,
        steps_per_window=timing.steps_per_window,
        params=prepared.params,
    )
    unavailable: dict[str, str] = {}
    peak, source = backend.peak_memory(config)
    if peak is None:
        peak, source = process_memory.peak_above_baseline(), process_memory.source
    measured.update(peak_memory_bytes=peak, memory_source=source)

    flops = flops_per_image(get_spec(config.model), config.image_size)
    factor = TRAIN_FLOPS_FACTOR if config.mode == "train" else 1
    achieved = flops * factor * measured["throughput_img_s"] / 1e12
    measured.update(flops_per_img=flops, achieved_tflops=achieved)
    device_name = prepared.device_name or process_env.get("device_name")
    peak_rate = peak_flops(device_name, config.precision, settings.tf32) if config.device == "cuda" else None
    measured["mfu"] = achieved * 1e12 / peak_rate if peak_rate else None
    if peak_rate is None:
        unavailable["mfu"] = (
            "peak FLOP/s of a CPU is not known to the harness"
            if config.device == "cpu"
            else f"no peak FLOP/s on record for {device_name!r} at {config.precision}"
        )

    measured["cpu_util_cores"] = timing.cpu_seconds / timing.wall_seconds if timing.wall_seconds else None
    gpu_env = {}
    if sampler is not None:
        measured.update(sampler.summary(sum(images_per_window)))
        gpu_env = sampler.device_info()  # NVML's device name, driver version and memory size
    else:
        reason = "no GPU: device is cpu" if config.device == "cpu" else "NVML not available"
        for name in ("gpu_util_pct_mean", "gpu_util_pct_max", "power_w", "energy_j_per_img", "nvml_memory_used_bytes"):
            unavailable[name] = reason
    measured["window_seconds"] = timing.window_seconds
    measured["step_seconds"] = timing.step_seconds
    env = dict(process_env, **gpu_env, device_name=device_name, layout=config.layout)
    return make_record(config, "ok", unavailable=unavailable, env=env, **measured)
