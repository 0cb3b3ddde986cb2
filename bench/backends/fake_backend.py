"""A test double with the backend interface: sleeps instead of computing, and fails on request.

Behaviour comes from the CNN_BENCH_FAKE environment variable (JSON), so tests can drive a real worker
process: {"oom_at_batch": 8} raises an OOM from that batch up, {"error_model": "resnet32_cifar"} raises
an error for that model, {"hang_batch": 4} sleeps forever at that batch, {"kill_batch": 4} SIGKILLs the
worker at that batch, {"step_ms_per_image": 0.2} sets the simulated cost, {"start_delay_s": 30} makes
the worker's start-up that slow, {"layout_cost": {"channels_last": 2.0}} makes a PyTorch layout that many
times slower, {"framework_cost": {"keras-tensorflow": 1.5}} does the same for a framework.
"""

from __future__ import annotations

import json
import os
import signal
import time

from bench.backends import MallocBacked, Prepared, StepHook, Wrap, refuse_wrap
from bench.config import Config, Settings
from implementations import get_spec
from implementations.lowering import flops_per_image


class FakeOutOfMemory(RuntimeError):
    pass


class FakeBackend(MallocBacked):
    def __init__(self, framework: str):
        self.name = framework
        self.behaviour = json.loads(os.environ.get("CNN_BENCH_FAKE", "{}"))

    def setup_process(self, settings: Settings) -> dict:
        time.sleep(self.behaviour.get("start_delay_s", 0))
        return {"framework_version": "fake", "intra_op_threads": settings.resolved_threads(), "backend": "fake"}

    def prepare(
        self, config: Config, settings: Settings, hook: StepHook | None = None, wrap: Wrap | None = None
    ) -> Prepared:
        refuse_wrap(wrap)
        b = self.behaviour
        if b.get("oom_at_batch") is not None and config.batch_size >= b["oom_at_batch"]:
            raise FakeOutOfMemory(f"fake out of memory at batch {config.batch_size}")
        if b.get("error_model") == config.model:
            raise ValueError(f"fake failure building {config.model}")
        if b.get("hang_batch") == config.batch_size:
            time.sleep(3600)
        if b.get("kill_batch") == config.batch_size and b.get("kill_framework", config.framework) == config.framework:
            os.kill(os.getpid(), signal.SIGKILL)
        base = b.get("step_ms_per_image", 0.2) * config.batch_size / 1e3
        base *= b.get("framework_cost", {}).get(config.framework, 1.0)
        layout_cost = b.get("layout_cost", {}) if config.framework == "torch" else {}

        def step() -> None:
            time.sleep(base * layout_cost.get(prepared.layout, 1.0))

        spec = get_spec(config.model)
        params = int(flops_per_image(spec, config.image_size) // 1000)  # any positive, deterministic number
        layout = "channels_first" if config.layout == "auto" else config.layout
        prepared = Prepared(step=step, sync=lambda: None, params=params, device_name=None, layout=layout)
        if config.framework == "torch":

            def set_layout(name: str) -> None:
                prepared.layout = name

            prepared.set_layout = set_layout
        return prepared

    def warm_profiler(self) -> None:
        """Nothing to warm: this engine's explain pass starts no profiler on a CPU."""

    def warm_framework(self) -> None:
        pass

    def operator_categories(self, prepared: Prepared, config: Config, steps: int) -> dict:
        """The test double's categories: its sleep, split by the fixed shares in CNN_BENCH_FAKE's
        "categories" (default: all "other"), timed over `steps` steps."""
        import time as clock

        started = clock.perf_counter()
        for _ in range(steps):
            prepared.step()
        per_step = (clock.perf_counter() - started) / steps
        shares = self.behaviour.get("categories", {}).get(config.framework, {"other": 1.0})
        return {"categories": {name: share * per_step for name, share in shares.items()}, "profiled_steps": steps,
                "profiled_step_s": per_step}  # fmt: skip

    def drop_other(self, config: Config, settings: Settings) -> None:
        pass

    def reset_peak_memory(self, config: Config) -> None:
        pass

    def peak_memory(self, config: Config):
        return None, None

    def release(self) -> None:
        pass

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        return isinstance(error, FakeOutOfMemory)
