"""Profiling: the stage split adds up, stage sub-models chain to the whole model, the operator mapping,
and `bench profile` end to end on a tiny network (gradient flow: tests/test_gradient_flow.py)."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from implementations import get_spec, is_installed
from implementations.lowering import (
    ADD,
    BN,
    CONV,
    INPUT,
    LINEAR,
    RELU,
    lower,
    macs_per_image,
    params_count,
    stage_costs,
    stage_slices,
)
from tests.reference import IMAGENET

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "vgg11_bn", "resnet56_cifar", "plain110_cifar_nobn"])
def test_stage_macs_and_params_sum_exactly_to_the_whole_model(name):
    spec = get_spec(name)
    costs = stage_costs(lower(spec))
    assert sum(c.macs for c in costs) == macs_per_image(spec)
    assert sum(c.params for c in costs) == params_count(spec)
    if name in IMAGENET:
        assert sum(c.macs for c in costs) == pytest.approx(IMAGENET[name][1] * 1e9, abs=0.005e9)
    slices = stage_slices(lower(spec))
    assert [layer.name for _, layers in slices for layer in layers] == [layer.name for layer in lower(spec)]
    assert all(INPUT in {i for layer in layers for i in layer.inputs} for _, layers in slices)


def test_bn_free_variants_differ_from_their_twins_only_by_batch_norm():
    with_bn, without = lower(get_spec("resnet56_cifar")), lower(get_spec("resnet56_cifar_nobn"))
    assert [layer.name for layer in with_bn if layer.op != BN] == [layer.name for layer in without]
    assert not any(layer.op == BN for layer in without)
    assert not any(layer.op == ADD for layer in lower(get_spec("plain20_cifar_nobn")))


@pytest.mark.parametrize("name", ["resnet20_cifar", "vgg11_bn"])
def test_torch_stage_models_chained_give_the_whole_models_output(name):
    torch = pytest.importorskip("torch")
    from bench.studies.profiling.torch_engine import _stage_models

    spec = get_spec(name)
    torch.manual_seed(0)
    from implementations.torch_models import torch_from_layers

    model = torch_from_layers(lower(spec, 32), spec.name).eval()
    stages = _stage_models(model, spec, 32, spec.default_classes, "channels_first", torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        whole, chained = model(x), x
        for _, stage in stages:
            chained = stage.eval()(chained)
    torch.testing.assert_close(chained, whole, rtol=0, atol=0)


def test_keras_stage_models_chained_give_the_whole_models_output():
    pytest.importorskip("tensorflow")
    from implementations.keras_models import keras_from_layers, keras_name

    spec = get_spec("resnet20_cifar")
    lowered = lower(spec, 32)
    model = keras_from_layers(lowered, spec.name)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    chained = x
    for name, layers in stage_slices(lowered):
        stage = keras_from_layers(layers, f"{spec.name}_{name}")
        for layer in layers:
            if model.get_layer(keras_name(layer.name)).get_weights():
                stage.get_layer(keras_name(layer.name)).set_weights(
                    model.get_layer(keras_name(layer.name)).get_weights()
                )
        chained = stage(chained, training=False)
    np.testing.assert_allclose(np.asarray(chained), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-5)


def test_operator_names_of_both_profilers_map_to_one_vocabulary():
    from bench.backends.categories import CATEGORIES, tf_category, torch_category

    assert torch_category("aten::mkldnn_convolution") == "convolution"
    assert torch_category("aten::convolution_backward") == "convolution"
    assert torch_category("aten::native_batch_norm_backward") == "batch norm"
    assert torch_category("aten::threshold_backward") == "activation"
    assert torch_category("aten::max_pool2d_with_indices") == "pooling"
    assert torch_category("aten::addmm") == "linear"
    assert torch_category("aten::add") == "add (shortcut)"
    assert torch_category("aten::add_", ("Optimizer.step#SGD.step",)) == "optimizer"
    assert torch_category("aten::copy_") == "data movement"
    assert torch_category("aten::nll_loss_forward") == "other"
    layer_ops = {"layer1_0_bn1": BN, "layer1_0_conv1": CONV, "layer1_0_relu1": RELU, "fc": LINEAR, "layer1_0_add": ADD}
    assert tf_category("resnet/layer1_0_bn1_1/batchnorm/mul", "Mul", layer_ops) == "batch norm"
    assert tf_category("gradient_tape/resnet/layer1_0_conv1_1/convolution/Conv2DBackpropFilter", "_MklNativeConv2DBackpropFilter", layer_ops) == "convolution"  # fmt: skip
    assert tf_category("resnet/layer1_0_add_1/ArithmeticOptimizer/AddOpsRewrite_Leaf_1_Add", "AddN", layer_ops) == "add (shortcut)"  # fmt: skip
    assert tf_category("sgd/AssignAddVariableOp_54", "AssignAddVariableOp", layer_ops) == "optimizer"
    assert tf_category("sgd/update_layer1_0_conv1/Mul", "Mul", layer_ops) == "optimizer"  # scoped by a layer
    assert tf_category("vgg/layer1_0_relu1_1/Relu", "_MklNativeFusedConv2D", layer_ops) == "convolution"  # fused
    assert tf_category("vgg/layer1_0_relu1_1/Relu", "_MklNativeFusedMatMul", layer_ops) == "linear"
    assert tf_category("vgg/layer1_0_relu1_1/Relu", "Relu", layer_ops) == "activation"
    assert tf_category("resnet/layer2_0_conv1_pad_1/Pad", "Pad", layer_ops) == "data movement"
    assert tf_category("sparse_categorical_crossentropy/Softmax", "SparseSoftmaxCrossEntropyWithLogits", layer_ops) == "other"  # fmt: skip
    assert len(set(CATEGORIES)) == 9


def test_profile_end_to_end_on_a_tiny_network(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    out = tmp_path / "profile"
    command = [sys.executable, "-m", "bench", "profile", "resnet8_cifar", "--batch-size", "2", "--windows", "6",
               "--min-window-s", "0.02", "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "profile.md").read_text()
    for heading in ("## Stage times", "## Training step split", "## Operator categories", "## Where the time goes"):
        assert heading in text
    assert "torch fwd ms" in text and "keras-tensorflow fwd ms" in text and "keras-tensorflow failed" not in text
    data = json.loads((out / "profile.json").read_text())
    for engine_result in data["results"]:
        assert engine_result["stages"] == ["stem", "layer1", "layer2", "layer3", "head"]
        assert sum(engine_result["categories"].values()) > 0
    trace = json.loads((out / "torch_trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"stage stem", "stage layer3", "stage head"} <= names
    (xplane,) = (out / "tf_trace").rglob("*.xplane.pb")
    from xprof.convert import raw_to_tool_data

    viewer, _ = raw_to_tool_data.xspace_to_tool_data([str(xplane)], "trace_viewer", {})
    assert "stage_layer1" in (viewer.decode() if isinstance(viewer, bytes) else viewer)
    assert (out / "stage_times.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "profile.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (5 + 1)  # two engines: five stages and the optimizer each


def test_keras_on_jax_is_profiled_by_stage_and_its_missing_categories_are_said(tmp_path):
    pytest.importorskip("torch")
    from implementations import is_installed

    if not is_installed("keras-jax"):
        pytest.skip("keras-jax is not installed")
    out = tmp_path / "profile"
    command = [sys.executable, "-m", "bench", "profile", "resnet8_cifar", "--frameworks", "keras-jax", "--batch-size",
               "2", "--windows", "6", "--min-window-s", "0.02", "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "profile.md").read_text()
    assert "keras-jax fwd ms" in text and "keras-jax: stages (forward+backward) + optimizer" in text
    (engine,) = json.loads((out / "profile.json").read_text())["results"]
    assert engine["stages"] == ["stem", "layer1", "layer2", "layer3", "head"]
    assert "categories" in engine or "no per-operator statistics" in text
    assert list((out / "jax_trace").rglob("*.xplane.pb"))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["profile", "resnet9000"], "unknown model"),
        (["profile", "resnet8_cifar", "--frameworks", "mxnet"], "valid frameworks: torch, keras-tensorflow, keras-jax"),
        (["profile", "resnet8_cifar", "--windows", "3"], "windows on the command line must be between 6 and 1000"),
        (["gradient-flow", "--depths", "21"], "6n+2"),
    ],
)
def test_bad_profile_input_exits_2_naming_what_is_valid(arguments, message, capsys):
    from bench.commands.cli import main

    assert main(arguments) == 2
    assert message in capsys.readouterr().err


def test_every_engine_profiles_equal_work_per_stage(tmp_path):
    """From PyTorch's seeded weights in float64, on the same data, each engine's timed stage function gives the
    same output and the same set of gradients (parameters, and the stage's input for every stage but the first:
    no engine computes a gradient for the network's input). A residual net and a VGG (whose flattening linear
    layer reorders its inputs between layouts)."""
    from bench.studies.profiling.run import ProfileRequest, run_engine

    engines = [e for e in ("torch", "keras-tensorflow", "keras-jax") if is_installed(e)]
    models = ["resnet20_cifar", "vgg11_bn"]
    request = ProfileRequest(models[0], tuple(engines), batch_size=2, mode="train", image_size=32, precision="fp32",
                             device="cpu", ops=False, trace=False)  # fmt: skip
    request = dict(asdict(request), models=models)
    results = {e: run_engine(e, "equal_work", request, tmp_path, 300) for e in engines}
    for engine, result in results.items():
        assert "error" not in result, (engine, result)
        assert list(result["models"]) == models
    for model in models:
        reference = results["torch"]["models"][model]
        first = next(iter(reference))
        assert "input" not in reference[first] and all("input" in s for n, s in reference.items() if n != first)
        for engine in engines[1:]:
            stages = results[engine]["models"][model]
            assert list(stages) == list(reference), engine
            for name, arrays in reference.items():
                assert set(stages[name]) == set(arrays), (engine, name, set(stages[name]) ^ set(arrays))
                for key, (norm, total) in arrays.items():
                    assert stages[name][key][0] == pytest.approx(norm, rel=1e-7, abs=1e-10), (engine, model, name, key)
                    assert stages[name][key][1] == pytest.approx(total, rel=1e-6, abs=1e-9 * max(1.0, norm)), (
                        engine, model, name, key)  # fmt: skip
