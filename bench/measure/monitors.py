"""Resource monitors: process memory on Linux, and NVML sampling of GPU utilisation, power and memory."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]  # fmt: skip


def _heap_reader():
    """A function giving (bytes in use from malloc's arenas, bytes in malloc's mapped chunks) in glibc
    2.33+ (mallinfo2: what malloc has handed out and not had back), or None without it."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype, mallinfo2.argtypes = _Mallinfo2, []

    def in_use() -> tuple[int, int]:
        info = mallinfo2()
        return info.uordblks, info.hblkhd

    return in_use


def _keep_mapped_chunks_apart(threshold: int = 256 * 1024) -> None:
    """From here on every malloc of `threshold` bytes or more gets a mapped chunk of its own, never
    arena memory (glibc otherwise raises the threshold as mapped chunks are freed, up to 32 MiB)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


SAMPLE_INTERVAL_S = 0.001  # while a configuration builds and warms up: 2.6% of one core
SAMPLES_PER_STEP = 50  # in the settling window: this many samples per step, at most one per SAMPLE_INTERVAL_S
SLOWEST_INTERVAL_S = 0.02
HEAP_SOURCE = (
    "peak heap bytes in use (glibc mallinfo2, sampled) above the configuration's start, less what stays allocated "
    "after it ends"
)
POOL_SOURCE = (
    "peak bytes in use in malloc's arenas (glibc mallinfo2) and the framework's own pool, sampled, above the "
    "configuration's start, less what stays in the arenas after it ends"
)


class ProcessMemory:
    """Peak memory a configuration allocates in this worker, whatever the worker ran before.

    What is measured: the bytes malloc has handed out and not had back (mallinfo2), sampled by a thread
    every millisecond through the build, first step and warm-up, then every 1/50 of a step (at most every
    20 ms) through the untimed settling window, whose steps are the timed windows' (no thread runs beside
    the timed windows, unless no settling window ran), above the bytes in use at the configuration's
    start, with nothing of it built yet (on a CPU the backend lets go of any kept model first). What stays
    allocated after the configuration has been let go of at its end is taken off too: the framework's
    caches, which a later configuration finds already there (PyTorch keeps about 9 MiB after its first
    ResNet-18 training configuration, 1.6 MiB per further batch size; TensorFlow about 108 MiB of malloc's
    after its first training configuration, 28 MiB after each further one). Where the backend keeps a
    released model's tensors (TensorFlow after training), only what stays in malloc's arenas is taken off.

    A framework that serves tensors from a pool of its own (TensorFlow under oneDNN: tensors of 256 KiB
    and more) counts them through the backend (`pool_in_use`): the heap would see the pool, which only
    grows, not the tensors in it. Then the heap part is malloc's arenas alone, and every malloc of
    256 KiB or more is kept out of the arenas (mallopt), so the pool's regions never count as arena bytes.

    Why not resident memory: resident memory depends on what ran before. glibc keeps freed memory on its
    free lists (malloc_trim hands back only whole free pages), and a configuration that reuses it does not
    raise the resident size: PyTorch ResNet-18 64 px training read 327.6 and 327.9 MiB at batch 2 and 8
    after the inference cells. Measured from a trimmed start, the batch-8 figure still moved between 163
    and 185 MiB in repeats in one worker, twice what batch 8 adds over batch 2 (9.7 MiB in bytes in use).
    Bytes in use see no free lists, no pages and no shared libraries' code: the figure is the allocator's,
    as torch.cuda.max_memory_allocated is on a GPU. Peaks are not short: a step's saved activations and
    its gradients are held for much of the step, and the sampled peak of ResNet-18 training was the same
    with a sample every 0.2, 1 and 5 ms. tests/test_memory.py checks that a configuration reads the same
    in a fresh worker and after others, and that the growth per image follows the activations.
    """

    def __init__(self):
        self._heap = _heap_reader()
        self._pool = None
        self.source = HEAP_SOURCE
        self.baseline: int | None = None  # the framework-ready worker, before any configuration
        self.reference: int | None = None  # the current configuration's start
        self._max: int | None = None
        self._lock = threading.Lock()
        self._interval = SAMPLE_INTERVAL_S
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = False  # this configuration's peak is being, or was, sampled

    def _in_use(self) -> int:
        arenas, mapped = self._heap()
        return arenas + (self._pool() if self._pool is not None else mapped)

    def _now(self) -> int | None:
        if self._heap is None:
            return None
        gc.collect()
        self._arenas_now = self._heap()[0]
        return self._in_use()

    def set_baseline(self) -> None:
        self.baseline = self._now()

    def start(self, sample: bool = True, pool=None) -> None:
        """A configuration starts, nothing of it built: the reference, and sampling from here (none where
        the backend counts the configuration's memory itself). `pool`: a function giving the bytes in use
        in the framework's own pool."""
        self.stop()
        if pool is not None and self._pool is None:
            _keep_mapped_chunks_apart()
        self._pool = pool
        self.source = POOL_SOURCE if pool is not None else HEAP_SOURCE
        self.reference = self._now()
        self._arenas_at_start = self._arenas_now if self.reference is not None else None
        self._max = self.reference
        self._sampled = sample and self._heap is not None
        if self._sampled:
            self._interval = SAMPLE_INTERVAL_S
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = self._in_use()
            with self._lock:
                if self._max is not None and value > self._max:
                    self._max = value
            self._stop.wait(self._interval)

    def reset_peak(self, step_s: float | None = None) -> None:
        """The peak starts again from the bytes in use now; with `step_s`, samples come that often per step."""
        if step_s is not None:
            self._interval = min(max(step_s / SAMPLES_PER_STEP, SAMPLE_INTERVAL_S), SLOWEST_INTERVAL_S)
        with self._lock:
            self._max = None if self._heap is None else self._in_use()

    def peak(self) -> int | None:
        """The peak since the last reset, above the configuration's start (None unless sampled)."""
        if not self._sampled or self._max is None or self.reference is None:
            return None
        with self._lock:
            if self._thread is not None:
                self._max = max(self._max, self._in_use())
            return max(0, self._max - self.reference)

    def hold(self) -> None:
        """Stop sampling and keep the peak so far: the steps that follow are the same, and timed."""
        if self._thread is not None:
            self.peak()
            self.stop()

    def mark(self) -> tuple[int, int] | None:
        """The bytes in use now (all, and malloc's arenas'), for `grown_since`; None where unmeasured."""
        now = self._now()
        return None if now is None else (now, self._arenas_now)

    def grown_since(self, mark: tuple[int, int] | None, arenas_only: bool = False) -> int:
        """What was left allocated since `mark` (0 where it shrank or is unmeasured)."""
        if mark is None:
            return 0
        now = self._now()
        if now is None:
            return 0
        return max(0, self._arenas_now - mark[1] if arenas_only else now - mark[0])

    def kept(self, arenas_only: bool = False) -> int | None:
        """Bytes still in use above the configuration's start once everything of it is let go of (in
        malloc's arenas only: not what a framework's pool still holds)."""
        now = self._now()
        if now is None or self.reference is None:
            return None
        if arenas_only:
            return max(0, self._arenas_now - self._arenas_at_start)
        return max(0, now - self.reference)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None


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
