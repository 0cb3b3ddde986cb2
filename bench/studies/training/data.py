"""The training study's data: scikit-learn's digits (the CPU default) or CIFAR-10 from its python-format archive,
as NCHW float32 images at 32 x 32 with 3 channels, a fixed train/held-out split, and seeded batches.

Every engine's worker loads the same arrays with this code and draws the same batches: the order of an epoch and
its augmentation come from NumPy generators seeded by (seed, epoch), so a seed fixes the batches in every engine.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DIGITS_HELD_OUT = 500  # of the 1,797 digits; the other 1,297 train
SPLIT_SEED = 20151210  # the fixed split of the digits (the date of He et al.'s preprint)
CIFAR_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_PAD = 4  # He et al.: 4 pixels padded on each side, a random 32 x 32 crop, a random horizontal flip
CLASSES = 10
IMAGE_SIZE = 32


class DataError(ValueError):
    """A data set that cannot be read as the study needs it."""


@dataclass(frozen=True)
class Dataset:
    name: str
    train_images: np.ndarray  # (N, 3, 32, 32) float32, normalised by the training split's channel statistics
    train_labels: np.ndarray  # (N,) int64
    held_images: np.ndarray
    held_labels: np.ndarray
    augment: bool  # random crops and flips while training (CIFAR-10, as He et al.); never for digits
    description: str

    def digest(self) -> str:
        """What identifies the arrays (the same in every engine's worker)."""
        h = hashlib.sha256()
        for array in (self.train_images, self.train_labels, self.held_images, self.held_labels):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]


def _normalise(train: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return ((train - mean) / std).astype(np.float32), ((held - mean) / std).astype(np.float32)


def load_digits(held_out: int = DIGITS_HELD_OUT) -> Dataset:
    """scikit-learn's handwritten digits (1,797 grey 8 x 8 images, values 0-16, 10 classes), each pixel made a
    4 x 4 block (32 x 32) and copied to 3 channels, split once by SPLIT_SEED into training and held-out images."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)") from error
    digits = sklearn_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = np.repeat(np.repeat(images, IMAGE_SIZE // 8, axis=1), IMAGE_SIZE // 8, axis=2)
    images = np.repeat(images[:, None], 3, axis=1)
    labels = digits.target.astype(np.int64)
    if not 0 < held_out < len(labels):
        raise DataError(f"held-out images must be 1-{len(labels) - 1}, got {held_out}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    train, held = order[held_out:], order[:held_out]
    train_images, held_images = _normalise(images[train], images[held])
    return Dataset(
        "digits", train_images, labels[train], held_images, labels[held], augment=False,
        description=f"scikit-learn digits: {len(train)} training and {held_out} held-out images (fixed split, "
        f"seed {SPLIT_SEED}), 8 x 8 grey upsampled to 32 x 32 (4 x 4 blocks) in 3 channels, normalised by the "
        "training images' mean and standard deviation; no augmentation",
    )  # fmt: skip


def _read_batch(archive: tarfile.TarFile, members: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in members:
        raise DataError(f"{archive.name}: no {name} (a CIFAR-10 python archive holds {', '.join(CIFAR_MEMBERS)})")
    handle = archive.extractfile(members[name])
    try:
        batch = pickle.load(io.BytesIO(handle.read()), encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:
        raise DataError(f"{archive.name}: {name} is not a CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(labels) != len(data):
        raise DataError(f"{archive.name}: {name} has data {data.shape} and {len(labels)} labels, not (N, 3072) and N")
    if labels.size and (labels.min() < 0 or labels.max() >= CLASSES):
        raise DataError(f"{archive.name}: {name} has labels outside 0-{CLASSES - 1}")
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32) / 255.0, labels


def load_cifar10(path: str | Path) -> Dataset:
    """CIFAR-10 from the standard python-format archive (cifar-10-python.tar.gz): data_batch_1..5 train (50,000
    images), test_batch is held out (10,000); rows are 1,024 red, 1,024 green, 1,024 blue bytes (row-major 32 x 32)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--cifar10: {path} is not a file (give the path of cifar-10-python.tar.gz)")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            parts = {name: _read_batch(archive, members, name) for name in CIFAR_MEMBERS}
    except tarfile.TarError as error:
        raise DataError(f"--cifar10: {path} is not a tar archive ({error})") from None
    train_images = np.concatenate([parts[name][0] for name in CIFAR_MEMBERS[:-1]])
    train_labels = np.concatenate([parts[name][1] for name in CIFAR_MEMBERS[:-1]])
    held_images, held_labels = parts["test_batch"]
    train_images, held_images = _normalise(train_images, held_images)
    return Dataset(
        "cifar10", train_images, train_labels, held_images, held_labels, augment=True,
        description=f"CIFAR-10 ({path.name}): {len(train_labels):,} training images (data_batch_1-5), "
        f"{len(held_labels):,} held out (test_batch), normalised per channel by the training images; "
        f"training batches padded by {CIFAR_PAD} px, randomly cropped to 32 x 32 and flipped (He et al.)",
    )  # fmt: skip


def load(cifar10: str | None = None, held_out: int = DIGITS_HELD_OUT, train_images: int | None = None) -> Dataset:
    """The study's data set; `train_images` keeps only the first that many training images (the split's order is
    already random; the normalisation stays the full training split's)."""
    data = load_cifar10(cifar10) if cifar10 else load_digits(held_out)
    if train_images is None or train_images >= len(data.train_labels):
        return data
    if train_images < 1:
        raise DataError(f"training images must be positive, got {train_images}")
    return replace(
        data, train_images=data.train_images[:train_images], train_labels=data.train_labels[:train_images],
        description=f"{data.description}; only the first {train_images} training images of the split",
    )  # fmt: skip


def epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The training images' indices for each step of an epoch: a permutation seeded by (seed, epoch), cut into
    full batches (the last partial batch is dropped, so every step has the same shape)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    steps = count // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """He et al.'s augmentation: pad CIFAR_PAD zeros (the normalised mean) each side, a random crop, a random flip."""
    n, _, height, width = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD)))
    rows = rng.integers(0, 2 * CIFAR_PAD + 1, n)
    cols = rng.integers(0, 2 * CIFAR_PAD + 1, n)
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, :, rows[i] : rows[i] + height, cols[i] : cols[i] + width]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


class Batches:
    """The training batches of one seed, in order: (NCHW float32 images, int64 labels) per step."""

    def __init__(self, data: Dataset, batch_size: int, seed: int):
        if batch_size > len(data.train_labels):
            raise DataError(f"batch size {batch_size} is larger than the {len(data.train_labels)} training images")
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def steps_per_epoch(self) -> int:
        return len(self.data.train_labels) // self.batch_size

    def epoch(self, epoch: int):
        """Yield the batches of epoch `epoch` (1-based)."""
        rng = np.random.default_rng([self.seed, epoch, 1])
        for index in epoch_order(len(self.data.train_labels), self.batch_size, self.seed, epoch):
            images = self.data.train_images[index]
            yield (augment(images, rng) if self.data.augment else images), self.data.train_labels[index]


def evaluation_subset(data: Dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed training images whose error is measured each epoch (every engine and seed: the same ones)."""
    count = min(count, len(data.train_labels))
    index = np.sort(np.random.default_rng(SPLIT_SEED + 1).permutation(len(data.train_labels))[:count])
    return data.train_images[index], data.train_labels[index]


def write_cifar_archive(path: Path, images: dict[str, np.ndarray], labels: dict[str, list[int]]) -> Path:
    """A CIFAR-10 python-format archive holding the given batches (uint8 (N, 3072) rows, labels), as the real
    archive lays them out under cifar-10-batches-py/ (used to test the loader on a small archive)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in images.items():
            body = pickle.dumps({b"batch_label": name.encode(), b"labels": list(labels[name]), b"data": data})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return path
