"""Stage sub-models of a Keras model, and the set-up both Keras engines start a profile from."""

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


def keras_profile_setup(request: dict, float64: bool = False):
    """What both Keras engines start a profile from: the precision policy and seed set, the lowered layers,
    the whole model, its stage models, and the profile's data (data.ProfileData: the same images, labels and
    upstream gradients as PyTorch's). With `float64` (the equal-work check) the model runs in float64 and holds
    PyTorch's seeded weights, transferred by name."""
    import keras
    import numpy as np

    from bench.studies.profiling.data import ProfileData
    from implementations import get_spec
    from implementations.lowering import lower

    spec = get_spec(request["model"])
    policy = "float64" if float64 else ("mixed_bfloat16" if request["precision"] == "bf16" else "float32")
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(request["seed"])
    lowered = lower(spec, request["image_size"], spec.default_classes)
    model = keras_from_layers(lowered, spec.name)
    if float64:
        from bench.studies.gradient_flow.gradients import torch_model
        from implementations import torch_to_keras

        torch_to_keras(torch_model(spec.name, request["image_size"], request["seed"]), model)
    data = ProfileData(request, spec.default_classes, np.float64 if float64 else np.float32)
    return lowered, model, keras_stage_models(model, lowered, spec.name), data


def gradient_names(stage, lowered: tuple[Layer, ...], with_input: bool) -> list[str]:
    """data.gradient_key of each trainable variable of a stage, in order, then "input" when it has one."""
    from bench.studies.profiling.data import gradient_key

    torch_names = {keras_name(layer.name): layer.name for layer in lowered}
    kinds = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    names = []
    for variable in stage.trainable_variables:
        layer, kind = variable.path.split("/")[-2:]
        names.append(gradient_key(torch_names[layer], kinds[kind]))
    return names + (["input"] if with_input else [])
