"""In-memory datasets as NHWC float32 NumPy arrays, and seeded batching.

``digits`` is the real handwritten-digits set bundled with scikit-learn (1,797 images, 8×8, no network
needed) with a fixed, seeded, stratified train/test split. ``mnist`` reads the published IDX files
from ``data_dir``.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Iterator

import numpy as np

__all__ = ["Dataset", "load_dataset", "train_batches"]

DATASETS = ("digits", "mnist")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset held in memory.

    Attributes:
      train_images: ``[N_train, H, W, C]`` float32, normalized.
      train_labels: ``[N_train]`` int32.
      test_images: ``[N_test, H, W, C]`` float32, normalized.
      test_labels: ``[N_test]`` int32.
      num_classes: number of classes.
      name: dataset name.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)``."""
        return tuple(self.train_images.shape[1:])


def _load_digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name="digits")


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_mnist(data_dir: str | None) -> Dataset:
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    if not data_dir:
        raise ValueError(
            "dataset 'mnist' reads local IDX files: set config.data_dir to a folder holding "
            f"{', '.join(n + '[.gz]' for n in names.values())}."
        )
    arrays = {}
    for key, name in names.items():
        candidates = [os.path.join(data_dir, name + ext) for ext in (".gz", "")]
        path = next((p for p in candidates if os.path.exists(p)), None)
        if path is None:
            raise FileNotFoundError(f"MNIST file {name}[.gz] not found in data_dir={data_dir!r}.")
        arrays[key] = _read_idx(path)
    mean, std = 0.1307, 0.3081  # the usual MNIST normalization constants

    def images(a):
        return ((a.astype(np.float32) / 255.0 - mean) / std)[..., None]

    return Dataset(
        images(arrays["train_images"]),
        arrays["train_labels"].astype(np.int32),
        images(arrays["test_images"]),
        arrays["test_labels"].astype(np.int32),
        num_classes=10,
        name="mnist",
    )


def load_dataset(name: str, data_dir: str | None = None, seed: int = 0) -> Dataset:
    """Loads a dataset into memory.

    Args:
      name: ``"digits"`` or ``"mnist"``.
      data_dir: folder with the dataset's files (``mnist``); unused for ``digits``.
      seed: seed of the ``digits`` train/test split (20 % test, stratified).

    Returns:
      The :class:`Dataset`.

    Raises:
      ValueError: for an unknown name or a missing ``data_dir``.
    """
    if name == "digits":
        return _load_digits(seed, test_fraction=0.2)
    if name == "mnist":
        return _load_mnist(data_dir)
    raise ValueError(f"config.dataset={name!r} is unknown; allowed: {', '.join(DATASETS)}.")


def train_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields shuffled full batches for one epoch (the remainder is dropped).

    The permutation depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    Args:
      images: ``[N, H, W, C]``.
      labels: ``[N]``.
      batch_size: examples per batch.
      seed: run seed.
      epoch: epoch index.

    Yields:
      ``(images [batch_size, H, W, C], labels [batch_size])``.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    for start in range(0, len(images) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        yield images[idx], labels[idx]
