"""One vocabulary for the operators of every engine's profiler, and the table that maps onto it.

PyTorch's profiler names ATen operators ("aten::convolution_backward"); TensorFlow's names graph ops by
scope ("gradient_tape/resnet18/layer1_0_bn1/batchnorm/mul") and type ("Mul"). A TensorFlow op inside a
model layer takes the category of that layer's lowered op (a Keras batch norm is a handful of Mul, Sub
and Mean ops, which a type table would call elementwise); an op outside any layer, and every PyTorch op,
is matched by pattern. The first matching row wins (for TensorFlow, see `tf_category` for the order).
"""

from __future__ import annotations

import re

from implementations.lowering import (
    ADAPTIVE_AVGPOOL,
    ADD,
    BN,
    CONV,
    DROPOUT,
    FLATTEN,
    GLOBAL_AVGPOOL,
    LINEAR,
    MAXPOOL,
    RELU,
    SHORTCUT_PAD,
)

CONVOLUTION, BATCH_NORM, ACTIVATION, POOLING = "convolution", "batch norm", "activation", "pooling"
LINEAR_CATEGORY, ADD_CATEGORY, OPTIMIZER, DATA_MOVEMENT, OTHER = (
    "linear", "add (shortcut)", "optimizer", "data movement", "other",
)  # fmt: skip
# The explain pass's residual: its unprofiled step less the operators' time (not a profiler category).
OUTSIDE_OPERATORS = "outside operators"
CATEGORIES = (CONVOLUTION, BATCH_NORM, ACTIVATION, POOLING, LINEAR_CATEGORY, ADD_CATEGORY, OPTIMIZER,
              DATA_MOVEMENT, OTHER)  # fmt: skip

# category, lowered layer ops it covers (TensorFlow ops inside a layer), PyTorch ATen name pattern,
# TensorFlow op name/type pattern (ops outside the model's layers: loss, optimizer, casts).
TABLE = (
    (OPTIMIZER, (), r"^Optimizer\.|_foreach_|^aten::_fused_sgd", r"(^|/)(sgd|SGD|optimizer)[_/]|ResourceApply|AssignVariable|AssignAddVariable|AssignSubVariable"),
    (CONVOLUTION, (CONV,), r"(?i)conv", r"Conv2D"),
    (BATCH_NORM, (BN,), r"(?i)batch_?norm", r"BatchNorm"),
    (ACTIVATION, (RELU,), r"(?i)relu|threshold", r"^Relu"),
    (POOLING, (MAXPOOL, GLOBAL_AVGPOOL, ADAPTIVE_AVGPOOL), r"(?i)pool|^aten::mean$|^MeanBackward", r"Pool"),
    (LINEAR_CATEGORY, (LINEAR,), r"(?i)addmm|^aten::mm$|linear|matmul|^TBackward", r"MatMul"),
    (ADD_CATEGORY, (ADD,), r"^aten::add_?$|^AddBackward", r"^AddN$"),
    (DATA_MOVEMENT, (SHORTCUT_PAD, FLATTEN), r"(?i)copy|clone|contiguous|pad|slice|^aten::cat$|^aten::to$|flatten|view|reshape|as_strided|permute|transpose", r"Pad|Slice|Reshape|Transpose|Copy|Identity|Cast|Tile|Fill"),
    (OTHER, (DROPOUT,), r".", r"."),
)  # fmt: skip
_LAYER_OPS = {op: row[0] for row in TABLE for op in row[1]}
_TORCH = [(category, re.compile(pattern)) for category, _, pattern, _ in TABLE]
_TF = [(category, re.compile(pattern)) for category, _, _, pattern in TABLE]
_DECISIVE_TYPES = (CONVOLUTION, LINEAR_CATEGORY, BATCH_NORM, POOLING)
_SCOPE_SUFFIX = re.compile(r"_\d+$")  # Keras numbers a layer's scope on every call: "layer1_0_conv1_1"


def torch_category(op_name: str, ancestors: tuple[str, ...] = ()) -> str:
    """The category of a PyTorch profiler event; an op run inside the optimizer's step is the optimizer's."""
    if any(name.startswith("Optimizer.") for name in ancestors):
        return OPTIMIZER
    return next(category for category, pattern in _TORCH if pattern.search(op_name))


def tf_category(op_name: str, op_type: str, layer_ops: dict[str, str]) -> str:
    """The category of a TensorFlow op. In order: the optimizer's row (its update ops may be scoped by a
    variable's layer); an op type that names its work (a convolution, matmul, batch norm or pooling kernel,
    fused or not: Grappler fuses a convolution or matmul with the bias and ReLU after it into one op named
    after the ReLU, "features_1/Relu"); the layer of its scope (`layer_ops`: Keras layer name -> lowered op);
    else the patterns over its name and type."""
    optimizer = _TF[0][1]
    if optimizer.search(op_name) or optimizer.search(op_type):
        return OPTIMIZER
    for category, pattern in _TF:
        if category in _DECISIVE_TYPES and pattern.search(op_type):
            return category
    for part in op_name.split("/"):
        op = layer_ops.get(part) or layer_ops.get(_SCOPE_SUFFIX.sub("", part))
        if op is not None:
            return _LAYER_OPS[op]
    return next(category for category, pattern in _TF if pattern.search(op_name) or pattern.search(op_type))
