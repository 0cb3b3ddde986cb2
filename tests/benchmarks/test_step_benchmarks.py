"""pytest-benchmark suite generated from the model registry: framework x model x batch x mode.

`pytest --benchmark-only` runs the default grid (a few minutes on a 2-core CPU);
CNN_BENCH_FULL=1 selects the full grid. `--benchmark-json out.json` then `python -m bench report out.json`
renders the same report as a harness run: each benchmark's extra_info carries a complete record.
"""

import os

import pytest

from bench import stats
from bench.config import Config
from bench.records import make_record
from implementations import get_spec, is_installed
from implementations.specs import flops_per_image
from tests.benchmarks.conftest import StepClock

FULL = os.environ.get("CNN_BENCH_FULL") == "1"
FRAMEWORKS = ["torch", "tensorflow"]
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
ROUNDS, WARMUP_ROUNDS = (20, 5) if FULL else (10, 3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model,image_size", CASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_step(benchmark, workers, framework, model, image_size, batch, mode):
    if not is_installed(framework):
        pytest.skip(f"{framework} is not installed (pip install 'cnn-bench[{framework}]')")
    config = Config(framework, model, batch, mode, image_size=image_size)
    worker = workers(framework)
    setup = worker.request({"cmd": "setup", "config": config.to_dict()}, 600)
    assert "error" not in setup, setup.get("error")
    clock = StepClock()
    step_seconds = []

    def one_step():
        reply = worker.request({"cmd": "step"}, 600)
        assert "error" not in reply, reply.get("error")
        clock.now += reply["seconds"]
        step_seconds.append(reply["seconds"])

    benchmark._timer = clock  # pytest-benchmark reads the worker-measured time, nothing else
    benchmark.group = f"{model} {mode} b={batch}"
    benchmark.pedantic(one_step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    finish = worker.request({"cmd": "finish"}, 600)

    timed = step_seconds[WARMUP_ROUNDS:]
    flops = flops_per_image(get_spec(model), image_size)
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
        flops_per_img=flops,
        achieved_tflops=flops * (3 if mode == "train" else 1) * throughput / 1e12,
        env=finish["env"],
        unavailable={"gpu_util_pct_mean": "no NVML sampling in the pytest-benchmark suite"},
    )
    benchmark.extra_info.update(
        throughput_img_s=throughput,
        peak_memory_bytes=finish["peak_memory_bytes"],
        cpu_util_cores=finish["cpu_util_cores"],
        flops_per_img=flops,
        record=record,
    )
