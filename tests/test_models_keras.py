"""Keras builds: trainable parameters of every registered model equal the published figures."""

import pytest

from implementations import build, count_params, list_models
from tests.reference import expected_params

pytest.importorskip("tensorflow", reason="the Keras builder needs TensorFlow (extra: tensorflow)")


@pytest.mark.parametrize("name", list_models())
def test_keras_trainable_params_equal_published(name):
    import keras

    model = build(name, "tensorflow", image_size=32)  # parameters do not depend on the input size
    assert count_params(model) == expected_params()[name]
    keras.backend.clear_session()


def test_keras_count_params_includes_moving_statistics():
    model = build("resnet20_cifar", "tensorflow")
    bn_channels = sum(layer.moving_mean.shape[0] for layer in model.layers if hasattr(layer, "moving_mean"))
    assert model.count_params() == count_params(model) + 2 * bn_channels
