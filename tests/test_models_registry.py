"""Registry, parameter counts and FLOPs of every model against the published figures (tests/reference.py)."""

import pytest

from implementations import count_params, flops_per_image, get_spec, list_models
from implementations.lowering import macs_per_image, params_count
from implementations.specs import ModelNotFoundError
from tests.reference import expected_macs, expected_params

torch = pytest.importorskip("torch", reason="the PyTorch builder needs torch (extra: torch)")


def test_registry_lists_every_required_model():
    names = set(list_models())
    for depth in (11, 13, 16, 19):
        assert {f"vgg{depth}", f"vgg{depth}_bn", f"vgg{depth}_5x5"} <= names
    assert {f"resnet{d}" for d in (18, 34, 50, 101, 152)} <= names
    for depth in (20, 32, 44, 56, 110, 1202):
        assert {f"resnet{depth}_cifar", f"plain{depth}_cifar"} <= names
    assert names == set(expected_params())


def test_list_models_natural_order_and_glob():
    assert list_models("resnet1*") == [
        "resnet18", "resnet101", "resnet152", "resnet110_cifar", "resnet1202_cifar", "resnet110_cifar_nobn",
    ]  # fmt: skip
    assert list_models("vgg1?_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


@pytest.mark.parametrize("name", list_models())
def test_spec_macs_equal_published(name):
    macs, tolerance = expected_macs()[name]
    assert macs_per_image(get_spec(name)) == pytest.approx(macs, abs=tolerance)


@pytest.mark.parametrize("name", list_models())
def test_spec_params_equal_published(name):
    assert params_count(get_spec(name)) == expected_params()[name]


@pytest.mark.parametrize("name", list_models())
def test_torch_trainable_params_equal_published(name):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = __import__("implementations").build(name, "torch")
    assert count_params(model) == expected_params()[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg11", "vgg16_bn", "resnet20_cifar", "plain56_cifar"])
@pytest.mark.parametrize("image_size", [None, 33])
def test_spec_flops_agree_with_torch_flop_counter(name, image_size):
    from torch.utils.flop_counter import FlopCounterMode

    from implementations import build

    spec = get_spec(name)
    size = image_size or spec.default_image_size
    with torch.device("meta"):
        model = build(name, "torch", image_size=size).eval()
        images = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    assert counter.get_total_flops() == flops_per_image(name, size)


def test_unknown_model_lists_valid_names_and_suggests():
    with pytest.raises(ModelNotFoundError) as info:
        get_spec("resnet51")
    message = str(info.value)
    assert "Did you mean 'resnet50'" in message and "vgg19_bn" in message


def test_cifar_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        get_spec("resnet21_cifar")
    assert get_spec("plain8_cifar").layers == (1, 1, 1)


def test_image_size_too_small_and_unknown_framework_fail_before_building():
    from implementations import build

    with pytest.raises(ValueError, match="at least 32 px"):
        build("vgg11", "torch", image_size=16)
    with pytest.raises(ValueError, match="valid frameworks: torch, keras-tensorflow, keras-jax"):
        build("vgg11", "mxnet")
    with pytest.raises(ValueError, match="channels_last"):
        build("resnet18", "tensorflow", layout="channels_first")


def test_missing_framework_names_the_extra(monkeypatch):
    from implementations import FrameworkNotInstalledError, build, frameworks

    monkeypatch.setattr(frameworks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FrameworkNotInstalledError, match=r"pip install 'cnn-bench\[tensorflow\]'"):
        build("resnet18", "tensorflow")


def test_importing_the_package_needs_no_framework():
    import subprocess
    import sys

    code = "import sys, implementations, bench; assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
