"""The inter-op benchmark: two harness workers per cell, alternating windows, a paired ratio per cell."""

from bench.studies.tf_threads import measure, render


def test_each_cell_is_paired_across_the_two_pools_and_rendered(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_BENCH_BACKEND", "fake")
    monkeypatch.setenv("CNN_BENCH_FAKE", '{"step_ms_per_image": 1.0}')
    preset = dict(models=["resnet20_cifar"], modes=["infer"], batch_sizes=[2], image_size=32, warmup_steps=1)
    data = measure(tmp_path, say=lambda _: None, preset=preset, windows=6, min_window_s=0.02)
    (cell,) = data["cells"]
    assert cell["low"] is not None and cell["low"] <= cell["ratio"] <= cell["high"]
    assert data["env"]["wall_s"] > 0 and data["env"]["end"]
    assert "resnet20_cifar" in render(data) and "inter-op" in cell["verdict"]
