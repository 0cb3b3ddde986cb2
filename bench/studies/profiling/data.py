"""What every engine of a profile runs on: the same images, labels and upstream gradients, drawn from one
seeded NumPy generator in NCHW (the Keras engines transpose them), so a profile times equal work on equal
data, and the equal-work check compares like with like."""

from __future__ import annotations

import numpy as np


class ProfileData:
    """Seeded images (NCHW), labels, and one upstream gradient per stage output (NCHW when 4-D), drawn in order."""

    def __init__(self, request: dict, classes: int, dtype=np.float32):
        self.rng = np.random.default_rng(request["seed"])
        batch, size = request["batch_size"], request["image_size"]
        self.dtype = dtype
        self.images = self.rng.standard_normal((batch, 3, size, size)).astype(dtype)
        self.labels = self.rng.integers(0, classes, batch).astype(np.int64)

    def upstream(self, nchw_shape: tuple[int, ...]) -> np.ndarray:
        """A random gradient of a stage output's shape (given as NCHW): what the next stages send back."""
        return self.rng.standard_normal(tuple(nchw_shape)).astype(self.dtype)


def nhwc(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def nchw(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


def nchw_shape(shape) -> tuple[int, ...]:
    """The NCHW shape of an NHWC one (other ranks as they are)."""
    shape = tuple(int(d) for d in shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def gradient_key(layer: str, kind: str) -> str:
    """One name per gradient in every engine: the lowered layer's name and weight/bias (BN: weight = scale)."""
    return f"{layer}:{kind}"


def summary(arrays: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """What the equal-work check compares: the norm and the sum of each array (layout-free)."""
    return {name: [float(np.linalg.norm(a)), float(np.sum(a))] for name, a in arrays.items()}
