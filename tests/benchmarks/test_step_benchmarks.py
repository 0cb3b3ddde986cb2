"""pytest-benchmark suite generated from the model registry: framework x model x batch x mode.

`pytest --benchmark-only` runs the default grid (a minute or two on a 2-core CPU);
CNN_BENCH_FULL=1 selects the full grid. `--benchmark-json out.json` then `python -m bench report out.json`
renders the same report as a harness run: each benchmark's extra_info carries a complete record.
--benchmark-min-rounds, --benchmark-max-time, --benchmark-warmup(-iterations) and --benchmark-disable-gc
apply to the worker's steps (conftest.plan_rounds); extra_info["applied"] says what was applied.
"""

import os

import pytest

from bench.config import Config
from bench.measure import stats
from bench.store.records import host_env, make_record
from implementations import is_installed
from tests.benchmarks.conftest import SUITE_WARMUP_STEPS, StepClock, plan_rounds, suite_device

FULL = os.environ.get("CNN_BENCH_FULL") == "1"
FRAMEWORKS = ["torch", "keras-tensorflow"]
DEVICE = suite_device()  # in every test id and record: cpu or cuda
CASES = (
    [
        ("resnet20_cifar", 32),
        ("resnet56_cifar", 32),
        ("plain56_cifar", 32),
        ("resnet18", 64),
        ("resnet50", 64),
        ("vgg11", 64),
    ]
    if FULL
    else [("resnet20_cifar", 32), ("resnet18", 64)]
)
BATCHES = [1, 8, 32] if FULL else [8]
MODES = ["train", "infer"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model,image_size", CASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("device", [DEVICE])
def test_step(benchmark, workers, device, framework, model, image_size, batch, mode):
    if not is_installed(framework):
        pytest.skip(f"{framework} is not installed (pip install 'cnn-bench[{framework}]')")
    config = Config(framework, model, batch, mode, image_size=image_size, device=device)
    worker = workers(framework)
    setup = worker.request({"cmd": "setup", "config": config.to_dict(), "disable_gc": benchmark._disable_gc}, 600)
    assert "error" not in setup, setup.get("error")
    clock = StepClock()
    step_seconds = []

    def one_step():
        reply = worker.request({"cmd": "step"}, 600)
        assert "error" not in reply, reply.get("error")
        clock.now += reply["seconds"]
        step_seconds.append(reply["seconds"])

    for _ in range(SUITE_WARMUP_STEPS):
        one_step()
    benchmark._timer = clock  # pytest-benchmark reads the worker-measured time, nothing else
    benchmark.group = f"{model} {mode} b={batch}"
    plan = plan_rounds(
        min(step_seconds), benchmark._min_rounds, benchmark._max_time, bool(benchmark._warmup), benchmark._warmup or 0
    )
    benchmark.pedantic(one_step, rounds=plan.rounds, warmup_rounds=plan.warmup_rounds, iterations=1)
    finish = worker.request({"cmd": "steps_end"}, 600)
    assert "error" not in finish, finish.get("error")
    after_warmup = step_seconds[SUITE_WARMUP_STEPS:]
    applied = {
        "timer": "the worker's synchronised step clock",
        "first_step": "timed apart in setup, not in the rounds",
        "suite_warmup_steps": SUITE_WARMUP_STEPS,
        "benchmark_warmup_rounds": plan.warmup_rounds,
        "rounds": plan.rounds,
        "iterations_per_round": 1,
        "gc_disabled_in_worker": bool(benchmark._disable_gc),
        "min_time": "not used: one step per round, never calibrated",
    }
    if benchmark.disabled:  # --benchmark-disable: one honest round (no warm-up rounds), no statistics
        assert len(after_warmup) == 1 and after_warmup[0] > 0
        benchmark.extra_info.update(disabled=True, applied={**applied, "rounds": 1, "benchmark_warmup_rounds": 0})
        return
    timed = after_warmup[plan.warmup_rounds :]

    pairs = [timed[i] + timed[i + 1] for i in range(0, len(timed) - 1, 2)]  # windows of two steps
    summary = stats.throughput_summary(pairs, [2 * batch] * len(pairs))
    throughput = summary["throughput_img_s"]
    record = make_record(
        config,
        "ok",
        **summary,
        **stats.latency_summary(timed),
        first_step_s=setup["first_step_s"],
        params=setup["params"],
        peak_memory_bytes=finish["peak_memory_bytes"],
        memory_source=finish["memory_source"],
        cpu_util_cores=finish["cpu_util_cores"],
        env={**host_env(["(pytest --benchmark-only)"]), **finish["env"]},
        unavailable={"gpu_util_pct_mean": "no NVML sampling in the pytest-benchmark suite"},
    )
    benchmark.extra_info.update(
        device=device,
        image_size=image_size,
        throughput_img_s=throughput,
        peak_memory_bytes=finish["peak_memory_bytes"],
        cpu_util_cores=finish["cpu_util_cores"],
        flops_per_img=record.flops_per_img,
        applied=applied,
        record=record.to_json(),
    )
