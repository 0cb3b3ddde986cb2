"""Resource monitors: process memory on Linux, and NVML sampling of GPU utilisation, power and memory."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ProcessMemory:
    """Peak resident memory of this worker above its framework-ready baseline.

    The baseline is taken once per worker, after the framework has been imported and has run a tiny
    step, so its lazy start-up is not charged to the first configuration. On a CPU the runner gives a
    PyTorch model a worker of its own, whose configurations run in order of growing need (inference
    before training, batch sizes ascending), and each TensorFlow configuration a fresh worker (TensorFlow
    keeps per-shape state resident after a configuration ends). Before each configuration freed memory
    goes back to the system (malloc_trim) and the peak (VmHWM) is reset to the current resident size
    ("5" written to /proc/self/clear_refs); the peak above the baseline is then this configuration's
    memory. tests/test_memory.py checks it against a fresh worker per configuration, for both frameworks.
    """

    source = "peak RSS of the worker above its framework-ready baseline (Linux VmHWM, reset per configuration)"

    def __init__(self):
        self.baseline: int | None = None
        self._resettable = False

    def set_baseline(self) -> None:
        _malloc_trim()
        self.baseline = _status_bytes("VmRSS")

    def reset_peak(self, trim: bool = True) -> None:
        """Reset the peak to the current resident size. `trim` hands freed memory back first: right
        before a configuration's build, never before its windows (a trimmed PyTorch worker faulted
        its gradients back in during the first window, 3x slower for VGG-11 training)."""
        if trim:
            _malloc_trim()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._resettable = True
        except OSError:
            self._resettable = False

    def peak(self) -> int | None:
        peak = _status_bytes("VmHWM")
        if peak is None or self.baseline is None or not self._resettable:
            return None
        return max(0, peak - self.baseline)


class NvmlSampler:
    """Samples GPU utilisation, power and device memory in a thread while the timed windows run."""

    def __init__(self, device_uuid: str | None = None, interval_s: float = 0.05):
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = nvml_handle(pynvml, device_uuid, os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.util: list[float] = []
        self.power_w: list[float] = []
        self.memory_used: list[int] = []
        self._energy_start_mj: int | None = None
        self.energy_j: float | None = None
        self.seconds = 0.0

    def _sample(self) -> None:
        nvml = self._nvml
        while not self._stop.is_set():
            try:
                self.util.append(float(nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                self.power_w.append(nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0)
                self.memory_used.append(int(nvml.nvmlDeviceGetMemoryInfo(self._handle).used))
            except nvml.NVMLError:
                pass
            self._stop.wait(self._interval)

    def _energy_mj(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:
            return None

    def start(self) -> None:
        self._stop.clear()
        self.util, self.power_w, self.memory_used = [], [], []
        self._energy_start_mj = self._energy_mj()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.seconds = time.perf_counter() - self._started
        end = self._energy_mj()
        if self._energy_start_mj is not None and end is not None and end > self._energy_start_mj:
            self.energy_j = (end - self._energy_start_mj) / 1000.0
        elif self.power_w:
            self.energy_j = sum(self.power_w) / len(self.power_w) * self.seconds
        else:
            self.energy_j = None

    def summary(self, images: int) -> dict:
        return {
            "gpu_util_pct_mean": sum(self.util) / len(self.util) if self.util else None,
            "gpu_util_pct_max": max(self.util) if self.util else None,
            "power_w": sum(self.power_w) / len(self.power_w) if self.power_w else None,
            "energy_j_per_img": self.energy_j / images if self.energy_j is not None and images else None,
            "nvml_memory_used_bytes": max(self.memory_used) if self.memory_used else None,
        }

    def device_info(self) -> dict:
        nvml = self._nvml
        name = nvml.nvmlDeviceGetName(self._handle)
        try:
            uuid = _text(nvml.nvmlDeviceGetUUID(self._handle))
        except Exception:
            uuid = None
        return {
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "gpu_uuid": uuid,
            "driver_version": _text(nvml.nvmlSystemGetDriverVersion()),
            "gpu_memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(self._handle).total),
        }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Dense (no sparsity) peak FLOP/s by exact NVML product name and precision, for MFU. "tf32" is the tensor-core
# rate an fp32 run gets with TF32 on; "fp32" the plain rate. Sources: NVIDIA's data sheets — H100 (SXM5, PCIe,
# NVL; nvidia.com/en-us/data-center/h100), H200 and H200 NVL (nvidia.com/en-us/data-center/h200), A100
# (nvidia.com/en-us/data-center/a100), L40S (nvidia.com/en-us/data-center/l40s); their tensor figures "with
# sparsity" are halved here. A card not in the table gets no MFU: a guess by substring gave an H100 PCIe the
# SXM part's peak.
_HOPPER_SXM = {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}
_HOPPER_NVL = {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60.0e12}
_AMPERE_A100 = {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H100 80GB HBM3": _HOPPER_SXM,  # the SXM5 part's NVML name
    "NVIDIA H100 PCIe": {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51.2e12},
    "NVIDIA H100 NVL": _HOPPER_NVL,
    "NVIDIA H200": _HOPPER_SXM,
    "NVIDIA H200 NVL": _HOPPER_NVL,
    "NVIDIA A100-SXM4-80GB": _AMPERE_A100,
    "NVIDIA A100-SXM4-40GB": _AMPERE_A100,
    "NVIDIA A100 80GB PCIe": _AMPERE_A100,
    "NVIDIA A100-PCIE-40GB": _AMPERE_A100,
    "NVIDIA L40S": {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12},
}


def peak_flops(device_name: str | None, precision: str, tf32: bool) -> float | None:
    """The card's dense peak for the precision, by its exact product name; None for a card not in the table."""
    table = PEAK_FLOPS.get((device_name or "").strip())
    if table is None:
        return None
    if precision == "fp32":
        return table["tf32" if tf32 else "fp32"]
    return table.get(precision)


def nvml_handle(nvml, device_uuid: str | None = None, visible: str | None = None):
    """The NVML handle of the device the worker computes on. NVML numbers every GPU of the machine, CUDA
    only the visible ones: by the device's UUID when the framework gives it, else by the first entry of
    CUDA_VISIBLE_DEVICES (a UUID, a MIG identifier or an index), else GPU 0."""
    if device_uuid:
        uuid = device_uuid if device_uuid.startswith(("GPU-", "MIG-")) else f"GPU-{device_uuid}"
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    first = (visible or "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(first)
    return nvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


# Messages of allocation failures that are not typed as out-of-memory: cuDNN and cuBLAS workspaces, the CUDA
# runtime, XLA, and the host allocator. Every one is recorded as OOM, never as an error.
ALLOCATION_FAILURES = (
    "out of memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "cudaerrormemoryallocation",
    "resource_exhausted",
    "resource exhausted",
    "can't allocate memory",
    "failed to allocate",
)


def is_allocation_failure(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return any(message in text for message in ALLOCATION_FAILURES)
