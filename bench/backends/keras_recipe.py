"""The training recipe (recipe.py) in Keras 3, for whichever backend the process runs (TensorFlow or JAX)."""

from __future__ import annotations

import keras

from bench.backends.recipe import MOMENTUM, learning_rate


def make_optimizer(scale: float = 1.0, loss_scaling: bool = False):
    """SGD with momentum at the recipe's learning rate; wrapped for loss scaling under fp16."""
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate(scale), momentum=MOMENTUM)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def loss_function(dtype: str = "float32", reduction: str = "sum_over_batch_size"):
    """Cross-entropy on logits (mean over the batch unless a distributed step sums and divides itself).
    Keras losses compute in floatx() (float32) unless told: a float64 model passes "float64"."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype, reduction=reduction)
