"""Correctness on current CUDA stacks, checked on a CPU: peak FLOP/s by exact product name, the NVML device
chosen by UUID, every allocation failure recorded as OOM, and TF32 through PyTorch's current API."""

import pytest

from bench.backends import is_allocation_failure
from bench.measure.monitors import PEAK_FLOPS, nvml_handle, peak_flops


def test_peak_flops_by_exact_product_name_and_none_for_an_unknown_card():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16", tf32=True) == pytest.approx(989.4e12)  # SXM5
    assert peak_flops("NVIDIA H100 PCIe", "bf16", tf32=True) == pytest.approx(756.5e12)  # not the SXM figure
    assert peak_flops("NVIDIA H100 NVL", "bf16", tf32=True) == pytest.approx(835.5e12)
    assert peak_flops("NVIDIA H200", "fp32", tf32=True) == pytest.approx(494.7e12)  # TF32 tensor cores
    assert peak_flops("NVIDIA H200", "fp32", tf32=False) == pytest.approx(66.9e12)
    assert peak_flops("NVIDIA A100 80GB PCIe", "fp16", tf32=True) == pytest.approx(312e12)
    for unknown in ("NVIDIA H100", "H100", "NVIDIA GeForce RTX 4090", "", None):
        assert peak_flops(unknown, "bf16", tf32=True) is None  # no guess by substring
    for name, table in PEAK_FLOPS.items():
        assert table["bf16"] >= table["tf32"] > table["fp32"] > 0, name


class StubNvml:
    def __init__(self):
        self.calls = []

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802  (NVML's own name)
        self.calls.append(("uuid", uuid))
        return uuid

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        self.calls.append(("index", index))
        return index


@pytest.mark.parametrize(
    "device_uuid,visible,expected",
    [
        ("58d2a6b3-1111-2222-3333-444455556666", "3", ("uuid", "GPU-58d2a6b3-1111-2222-3333-444455556666")),
        ("GPU-abc", None, ("uuid", "GPU-abc")),
        (None, "GPU-def,GPU-abc", ("uuid", "GPU-def")),
        (None, "MIG-0a1b", ("uuid", "MIG-0a1b")),
        (None, "2,3", ("index", 2)),
        (None, None, ("index", 0)),
        (None, "", ("index", 0)),
    ],
)
def test_nvml_reads_the_device_the_framework_computes_on(device_uuid, visible, expected):
    nvml = StubNvml()
    nvml_handle(nvml, device_uuid, visible)
    assert nvml.calls == [expected]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("CUDA error: cudaErrorMemoryAllocation"),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes."),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        MemoryError(),
    ],
)
def test_every_allocation_failure_is_an_oom(error):
    assert is_allocation_failure(error)


def test_other_failures_stay_errors():
    assert not is_allocation_failure(ValueError("shapes (2, 3) and (4, 5) not aligned"))
    assert not is_allocation_failure(RuntimeError("CUDNN_STATUS_NOT_SUPPORTED"))


def test_the_torch_backend_classes_a_cudnn_allocation_failure_as_oom():
    pytest.importorskip("torch")
    from bench.backends.torch_backend import TorchBackend

    assert TorchBackend.is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not TorchBackend.is_oom(RuntimeError("Expected all tensors to be on the same device"))


def test_tf32_through_the_current_api_and_legacy_readers_still_work():
    torch = pytest.importorskip("torch")
    from bench.backends.torch_backend import set_tf32

    try:
        off = set_tf32(False)
        assert (off["tf32_matmul"], off["tf32_cudnn"]) == (False, False)
        # code that still reads the deprecated flags (Inductor's convolution templates) gets an answer
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        on = set_tf32(True)
        assert (on["tf32_matmul"], on["tf32_cudnn"]) == (True, True)
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            assert on["tf32_api"] == "fp32_precision"
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        set_tf32(True)


def test_launch_bound_gpu_steps_get_longer_and_more_windows():
    from bench.measure.timing import SHORT_STEP_MIN_STEPS, SHORT_STEP_WINDOWS, window_plan

    short = window_plan(0.004, "cuda", min_window_s=0.25, windows=6, max_window_steps=1000)
    assert short.windows == SHORT_STEP_WINDOWS and short.steps == 250  # 1 s of 4 ms steps, above 200
    tiny = window_plan(0.0005, "cuda", min_window_s=0.25, windows=6, max_window_steps=1000)
    assert tiny.steps == 2000 and tiny.windows == 10  # 1 s, even past max_window_steps
    just = window_plan(0.019, "cuda", min_window_s=0.25, windows=12, max_window_steps=1000)
    assert just.steps == SHORT_STEP_MIN_STEPS and just.windows == 12  # 200 steps (3.8 s); more windows kept
    assert "launch-bound" in short.rule
    # compute-bound GPU steps and every CPU step keep the run's settings
    long = window_plan(0.05, "cuda", min_window_s=1.0, windows=6, max_window_steps=1000)
    assert (long.steps, long.windows, long.rule) == (20, 6, "the run's settings")
    cpu = window_plan(0.004, "cpu", min_window_s=0.5, windows=10, max_window_steps=1000)
    assert (cpu.steps, cpu.windows) == (125, 10)


def test_the_runner_times_as_many_windows_as_the_rule_asks(tmp_path, monkeypatch):
    """A worker's prepared window count (the rule's) is what the cell runs, for every engine in it."""
    import os

    from bench.config import build_plan
    from bench.execute.runner import Runner
    from bench.store.records import RunStore

    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    plan = build_plan(dict(frameworks=["torch"], models=["resnet20_cifar"], batch_sizes=[2], modes=["infer"],
                           precisions=["fp32"], image_size=32, device="cpu", windows=6, min_window_s=0.0,
                           warmup_steps=0))  # fmt: skip
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    runner = Runner(plan, store, {}, out=open(os.devnull, "w"))  # noqa: SIM115
    asked = []
    original = runner._ask

    def spy(config, message, budget=None):
        reply = original(config, message, budget)
        if message["cmd"] == "prepare" and "prepared" in reply:
            reply["prepared"]["windows"] = 9  # as a launch-bound GPU configuration would ask
        asked.append(message["cmd"])
        return reply

    runner._ask = spy
    (record,) = runner.run()
    assert asked.count("window") == 1 + 9 and len(record.window_seconds) == 9
