"""The lowered layer list: one walk of each spec, read by both builders, the counts and transfer."""

import subprocess
import sys

import pytest

from implementations import build, count_params, get_spec, list_models
from implementations.lowering import CONV, INPUT, LINEAR, lower, params_count, stage_costs
from implementations.specs import KERNEL_3X3, KERNEL_5X5, POOL, merge_3x3_pairs


def test_5x5_variants_merge_each_pair_of_3x3_inside_a_block():
    assert merge_3x3_pairs((64, POOL, 256, 256, POOL)) == ((64, 3), POOL, (256, 5), POOL)
    # a block of three: 5x5 + 3x3; a block of four: two 5x5
    assert merge_3x3_pairs((512, 512, 512, POOL)) == ((512, 5), (512, 3), POOL)
    assert merge_3x3_pairs((512, 512, 512, 512, POOL)) == ((512, 5), (512, 5), POOL)
    kernels = [layer.kernel for layer in lower(get_spec("vgg16_5x5"), 32) if layer.op == CONV]
    assert kernels == [5, 5, 5, 3, 5, 3, 5, 3]
    assert {f"vgg{d}_5x5" for d in (11, 13, 16, 19)} <= set(list_models("vgg*_5x5"))


def test_a_5x5_has_25_weights_per_channel_pair_where_two_3x3_have_18():
    """The tutorial's claim, read off the lowered layers: VGG-13's last block (two 512 -> 512 convolutions)
    against its 5x5 variant's (one)."""
    c = 512
    three = [s for s in stage_costs(lower(get_spec("vgg13"), 32)) if s.stage == "block5"][0]
    five = [s for s in stage_costs(lower(get_spec("vgg13_5x5"), 32)) if s.stage == "block5"][0]
    assert three.params == 18 * c * c + 2 * c  # weights + two biases
    assert five.params == 25 * c * c + c
    assert five.macs / three.macs == pytest.approx(25 / 18)


def test_stages_sum_to_the_model_and_name_its_parts():
    spec = get_spec("resnet50")
    layers = lower(spec)
    stages = stage_costs(layers)
    assert [s.stage for s in stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(s.params for s in stages) == params_count(spec)
    assert sum(s.layers for s in stages) == len(layers)
    names = {layer.name for layer in layers}
    assert {"conv1", "maxpool", "layer2.0.downsample.0", "layer4.2.conv3", "fc"} <= names
    assert layers[0].inputs == (INPUT,)
    adds = [layer for layer in layers if layer.op == "add"]
    assert len(adds) == 16 and all(len(a.inputs) == 2 for a in adds)


def test_plain_twin_has_no_shortcut_and_cifar_option_a_no_parameters():
    plain, residual = lower(get_spec("plain20_cifar")), lower(get_spec("resnet20_cifar"))
    assert not any(layer.op == "add" for layer in plain)
    pads = [layer for layer in residual if layer.op == "shortcut_pad"]
    assert [(p.c_in, p.c_out, p.size_in, p.size_out) for p in pads] == [(16, 32, 32, 16), (32, 64, 16, 8)]
    assert all(p.params == 0 for p in pads)


def test_an_unknown_spec_is_an_error_not_a_guess():
    from dataclasses import replace

    with pytest.raises(TypeError, match="no lowering"):
        lower(object(), 32)
    with pytest.raises(ValueError, match="unknown shortcut"):
        lower(replace(get_spec("resnet20_cifar"), shortcut="option_b"), 32)


def test_linear_layers_read_what_the_lowering_says():
    layers = lower(get_spec("vgg11"), 64)
    first = next(layer for layer in layers if layer.op == LINEAR)
    assert (first.name, first.c_in, first.c_out) == ("classifier.0", 512 * 7 * 7, 4096)


@pytest.mark.parametrize("name", ["vgg11_5x5", "vgg16_5x5", "resnet18", "resnet20_cifar"])
def test_torch_build_is_the_lowered_list(name):
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        model = build(name, "torch", image_size=32 if "cifar" in name else 64)
    weighted = {layer.name for layer in lower(get_spec(name)) if layer.params}
    with_params = {n for n, m in model.named_modules() if list(m.parameters(recurse=False))}
    assert with_params == weighted
    assert count_params(model) == params_count(get_spec(name))


def test_a_keras_model_builds_without_torch():
    pytest.importorskip("tensorflow")
    code = (
        "import sys, importlib.abc\n"
        "class NoTorch(importlib.abc.MetaPathFinder):  # import torch now raises ImportError; torch stays absent\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is not installed here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'torch' else real(name, *a)\n"
        "from implementations import build, count_params\n"
        "from implementations.lowering import params_count\n"
        "from implementations.specs import get_spec\n"
        "model = build('resnet20_cifar', 'tensorflow')\n"
        "assert count_params(model) == params_count(get_spec('resnet20_cifar'))\n"
        "assert sys.modules.get('torch') is None\n"
        "print('built without torch')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built without torch" in result.stdout


def test_kernel_constants_are_the_only_kernel_sizes_of_vgg():
    kernels = {layer.kernel for name in list_models("vgg*") for layer in lower(get_spec(name), 32) if layer.op == CONV}
    assert kernels == {KERNEL_3X3, KERNEL_5X5}
