"""One PyTorch replica of a data-parallel measurement: the `replica` task of the one task entry, started by
torchrun (one process per rank).

    python -m torch.distributed.run --nproc-per-node N -m bench.execute.launch bench.execute.tasks torch replica \
        REQUEST.json 'RESULT-{rank}.json'

DistributedDataParallel over gloo (CPU) or NCCL (GPU), around the harness's own prepared training step
(`TorchBackend.prepare` with the DDP wrapper): every rank trains on its own inputs of the given per-replica size,
from rank 0's weights (DDP broadcasts them).
Windows alternate between the full step (gradients all-reduced) and the same step under DDP's
`no_sync()` (no gradient exchange); a window's time is the slowest rank's (an all-reduce of the maximum),
after a barrier that starts every rank together. Every rank returns the job's result (the task entry writes it to
the rank's own file), so a rank that died or hung, having written none, can be named.
"""

from __future__ import annotations

import os
import resource
import signal
import time


def replica(request: dict, context) -> dict:
    """The task: this rank's part of the job; the task entry has set the process up (threads, TF32)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from bench.config import Config, Settings
    from bench.measure.timing import alternating

    # The task entry ran the backend's own process set-up (threads, flush-denormal, TF32, cuDNN autotuning), as in
    # every other PyTorch path: without it a rank trained subnormal gradients many times slower. Each rank its own
    # inputs (seed + rank); DDP broadcasts rank 0's weights when it wraps the model.
    backend = context.backend
    settings = Settings(threads=request["threads"], tf32=request.get("tf32", True), seed=request["seed"] + rank)
    cuda = request["device"] == "cuda"
    collective = "nccl" if cuda else "gloo"
    dist.init_process_group(collective)
    if request.get("kill_rank") == rank:  # the fault test: this rank dies after joining the group
        os.kill(os.getpid(), signal.SIGKILL)
    if request.get("hang_rank") == rank:
        time.sleep(3600)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    wrapped: list[DistributedDataParallel] = []

    def data_parallel(model):
        wrapped.append(DistributedDataParallel(model, device_ids=[device.index] if cuda else None))
        return wrapped[0]

    # The harness's own training step (bench/backends/torch_backend.py, proven by tests/test_timed_steps.py), on
    # the DDP-wrapped model: the same recipe, inputs and layout as a `bench run` cell of this configuration.
    config = Config("torch", request["model"], request["batch_size"], "train", layout="channels_first",
                    image_size=request["image_size"], device=request["device"])  # fmt: skip
    prepared = backend.prepare(config, settings, wrap=data_parallel)
    ddp = wrapped[0]
    step, sync = prepared.step, prepared.sync

    def local_step():
        with ddp.no_sync():  # the same step, its gradients not exchanged
            step()

    def slowest(seconds: float) -> float:
        value = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value)

    def window(function, steps: int) -> float:
        dist.barrier()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            function()
        sync()
        return slowest(time.perf_counter() - start)

    first = window(step, 1)
    for _ in range(request["warmup_steps"]):
        step()
        local_step()
    probe = window(step, 2) / 2
    steps = max(1, int(request["min_window_s"] / max(probe, 1e-6)) + 1)
    full, local = [], []
    for _, name in alternating(("full", "local"), request["windows"]):
        if name == "full":
            full.append(window(step, steps))
        else:
            local.append(window(local_step, steps))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    peaks = [None] * world
    dist.all_gather_object(peaks, peak)
    result = {
        "first_step_s": first, "steps_per_window": steps, "full_window_s": full, "local_window_s": local,
        "peak_memory_bytes_per_replica": peaks, "collective": collective, "world_size": world,
        "memory_source": "max_memory_allocated" if cuda else "peak RSS of each rank's process",
        "torch_version": torch.__version__, "process_env": context.env,
    }  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()
    return result
