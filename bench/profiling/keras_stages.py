"""Stage sub-models of a Keras model, on whichever Keras backend the process runs."""

from __future__ import annotations

from implementations.keras_models import keras_from_layers, keras_name
from implementations.lowering import Layer, stage_slices


def keras_stage_models(model, lowered: tuple[Layer, ...], name: str) -> list[tuple[str, object]]:
    """Each stage as its own Keras model holding `model`'s weights (copied by layer name)."""
    stages = []
    for stage_name, layers in stage_slices(lowered):
        stage = keras_from_layers(layers, f"{name}_{stage_name}")
        for layer in layers:
            weights = model.get_layer(keras_name(layer.name)).get_weights()
            if weights:
                stage.get_layer(keras_name(layer.name)).set_weights(weights)
        stages.append((stage_name, stage))
    return stages


def keras_profile_setup(request: dict):
    """What both Keras engines start a profile from: the precision policy and seed set, the lowered layers,
    the whole model, its stage models, and the images and labels as NumPy arrays (NHWC), with the random
    generator that made them (upstream gradients come from it next)."""
    import keras
    import numpy as np

    from implementations import get_spec
    from implementations.lowering import lower

    spec = get_spec(request["model"])
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if request["precision"] == "bf16" else "float32")
    keras.utils.set_random_seed(request["seed"])
    rng = np.random.default_rng(request["seed"])
    lowered = lower(spec, request["image_size"], spec.default_classes)
    model = keras_from_layers(lowered, spec.name)
    batch, size = request["batch_size"], request["image_size"]
    images = rng.standard_normal((batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, spec.default_classes, batch).astype("int32")
    return lowered, model, keras_stage_models(model, lowered, spec.name), images, labels, rng
