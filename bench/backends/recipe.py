"""The training recipe, defined once for every engine and every study that trains.

Every timed or studied training step (the harness's cells, profiles, gradient flow, scaling, the overhead
benchmark, the training study) is softmax cross-entropy on the logits, averaged over the batch, then SGD with
momentum 0.9 (PyTorch's and Keras's SGD agree: v = 0.9 v + g, w = w - lr v), at LEARNING_RATE. The framework
parts (`torch_backend.make_optimizer` and `loss_of`, `keras_recipe.make_optimizer` and `loss_function`) build
from these constants and nothing else.
"""

from __future__ import annotations

import struct

MOMENTUM = 0.9
BASE_LEARNING_RATE = 0.01
LOSS = "softmax cross-entropy on the logits, mean over the batch"
OPTIMIZER = f"SGD, momentum {MOMENTUM}, no weight decay, no Nesterov"


def float32(value: float) -> float:
    """`value` rounded to float32: Keras keeps the learning rate in a float32 variable (0.01 becomes
    0.009999999776), so PyTorch takes the same number and both frameworks take the same step (three float64
    momentum steps of ResNet-50 at batch 4 amplified the 2e-8 difference to 3e-2 in a weight update)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def learning_rate(scale: float = 1.0) -> float:
    """The learning rate every engine uses: BASE_LEARNING_RATE x `scale`, as float32 holds it."""
    return float32(BASE_LEARNING_RATE * scale)


LEARNING_RATE = learning_rate()


def describe(scale: float = 1.0) -> str:
    """The recipe in words, for reports."""
    return f"{LOSS}; {OPTIMIZER}; learning rate {learning_rate(scale):.6g}"
