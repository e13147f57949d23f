"""In-memory datasets as NHWC float32 NumPy arrays, and seeded batching.

Sources, by ``config.dataset`` and ``config.data_dir``:

* ``digits``: the real handwritten-digits set bundled with scikit-learn (1,797 images, 8×8, no network)
  with a fixed, seeded, stratified 80/20 train/test split.
* ``mnist`` / ``fashion_mnist`` with ``data_dir``: the published IDX files (``train-images-idx3-ubyte``
  etc., optionally ``.gz``).
* ``cifar10`` / ``cifar100`` with ``data_dir``: the published archives, either extracted
  (``cifar-10-batches-bin/``, ``cifar-10-batches-py/``, ``cifar-100-binary/``, ``cifar-100-python/``)
  or as the downloaded ``.tar.gz``; or an image-folder layout (below).
* Any dataset in the image-folder layout ``train/<class>/*.{jpg,png}`` and ``test/<class>/*``
  (class order = sorted folder names), as a folder or a ``.tar.gz`` holding one (e.g. CIFAR-10 (JPEG),
  Tiny-ImageNet after moving its val images into class folders).
* ``imagenet2012`` is streamed (`snnjax.io.streaming`): from ``data_dir/train/<class>/`` and
  ``data_dir/val/<class>/`` image folders, or from tensorflow-datasets' ``data_source``.
* Without ``data_dir``: tensorflow-datasets (``pip install 'snnjax[tfds]'``, no TensorFlow needed), which
  downloads and prepares the dataset on first use (without network: an error at once, saying what to set).

Images are normalized with per-dataset constants (those of the reference code for CIFAR).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from snnjax.core.parallel import padded_batches
from snnjax.io import streaming

__all__ = ["DATASETS", "Dataset", "load_dataset", "subsample_test", "train_batches"]

# name: (num_classes, per-channel mean, per-channel std) of pixel values in [0, 1].
NORMALIZATION = {
    "digits": (10, (0.0,), (1.0,)),
    "mnist": (10, (0.1307,), (0.3081,)),
    "fashion_mnist": (10, (0.2860,), (0.3530,)),
    "cifar10": (10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": (1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DATASETS = tuple(NORMALIZATION)


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

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.train_images)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return len(self.test_images)

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, keep_last: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled training batches; see `train_batches`."""
        return train_batches(self.train_images, self.train_labels, batch_size, seed, epoch, keep_last)

    def test_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every test example once: ``(images, labels, mask)``, the last batch padded."""
        return padded_batches(self.test_images, self.test_labels, batch_size)

    def calibration_images(self, count: int) -> np.ndarray:
        """The first ``count`` training images ``[count, H, W, C]``."""
        return self.train_images[:count]


def _normalize(name: str, images_uint8: np.ndarray) -> np.ndarray:
    _, mean, std = NORMALIZATION[name]
    return streaming.normalize_uint8(images_uint8, mean, std)


def _from_uint8(name: str, x_train, y_train, x_test, y_test) -> Dataset:
    """Builds a Dataset from uint8 NHWC images and integer labels."""
    num_classes = NORMALIZATION[name][0]
    return Dataset(
        _normalize(name, x_train),
        np.asarray(y_train, np.int32),
        _normalize(name, x_test),
        np.asarray(y_test, np.int32),
        num_classes=num_classes,
        name=name,
    )


def _load_digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Dataset(x_train, y_train, x_test, y_test, 10, "digits")


# IDX magic numbers: two zero bytes, the element type (0x08 = uint8), the number of dimensions.
IDX_MAGIC = {"images": b"\x00\x00\x08\x03", "labels": b"\x00\x00\x08\x01"}


def _read_idx(path: str, kind: str) -> np.ndarray:
    """Reads one IDX file (``kind``: images ``[N, H, W]`` or labels ``[N]``, uint8), checking its header.

    Raises:
      ValueError: naming ``path``, if the magic number, the dimension count or the byte length do not
        match what the header says.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: cannot be read ({error}); download the file again.") from None
    magic = IDX_MAGIC[kind]
    if data[:4] != magic:
        raise ValueError(
            f"{path}: not an IDX {kind} file: its magic number is 0x{data[:4].hex()}, expected "
            f"0x{magic.hex()} (uint8, {magic[3]} dimensions)."
        )
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path}: the header says {kind} of shape {shape} ({expected} bytes with the header) but the "
            f"file has {len(data)} bytes: it is truncated or corrupt; download it again."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")  # fmt: skip


def _find(data_dir: str, *names: str) -> str | None:
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None


def _check_labels(name: str, source: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Raises ValueError naming ``source`` unless there is one label in ``[0, classes)`` per image."""
    if len(images) != len(labels):
        raise ValueError(f"{source}: {len(images)} images but {len(labels)} labels; they must match.")
    num_classes = NORMALIZATION[name][0]
    if len(labels) and not 0 <= int(np.min(labels)) <= int(np.max(labels)) < num_classes:
        raise ValueError(
            f"{source}: labels range over [{int(np.min(labels))}, {int(np.max(labels))}] but {name} has "
            f"{num_classes} classes (labels 0..{num_classes - 1})."
        )


def _load_idx_dir(name: str, data_dir: str) -> Dataset:
    paths = []
    for stem in IDX_FILES:
        path = _find(data_dir, stem + ".gz", stem)
        if path is None:
            raise FileNotFoundError(f"{name}: file {stem}[.gz] not found in data_dir={data_dir!r}.")
        paths.append(path)
    # The kind comes from the file's name: a folder such as /data/idx_labels/ says nothing about it.
    kinds = ["labels" if "labels" in stem else "images" for stem in IDX_FILES]
    arrays = [_read_idx(path, kind) for path, kind in zip(paths, kinds, strict=True)]
    for images, labels, images_path, labels_path in ((arrays[0], arrays[1], *paths[:2]),
                                                     (arrays[2], arrays[3], *paths[2:])):  # fmt: skip
        _check_labels(name, f"{images_path} + {labels_path}", images, labels)
    x_train, y_train, x_test, y_test = arrays
    return _from_uint8(name, x_train[..., None], y_train, x_test[..., None], y_test)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python archives without running arbitrary code.

    Only NumPy arrays and plain containers may appear; anything else is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR archive")


# The published archives and the folder each extracts to.
CIFAR_ARCHIVES = {
    "cifar10": {
        "cifar-10-binary.tar.gz": "cifar-10-batches-bin",
        "cifar-10-python.tar.gz": "cifar-10-batches-py",
    },
    "cifar100": {
        "cifar-100-binary.tar.gz": "cifar-100-binary",
        "cifar-100-python.tar.gz": "cifar-100-python",
    },
}


def _read_tar(archive: str, keep) -> list[tuple[str, bytes]]:
    """``[(member name, bytes)]`` of the regular files of ``archive`` whose name ``keep(name)`` accepts.

    Raises:
      ValueError: naming the archive, if it is truncated or not a tar archive.
    """
    try:
        with tarfile.open(archive) as tar:
            return [
                (m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile() and keep(m.name)
            ]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{archive}: the archive is truncated or corrupt ({error}); download or copy it again."
        ) from None


def _cifar_members(data_dir: str, name: str) -> tuple[str, dict[str, bytes]]:
    """``(source, files)`` of a CIFAR archive (binary or python version), from its folder or .tar.gz."""
    for archive, folder in CIFAR_ARCHIVES[name].items():
        folder = os.path.join(data_dir, folder)
        if os.path.isdir(folder):
            files = {}
            for f in os.listdir(folder):
                with open(os.path.join(folder, f), "rb") as handle:
                    files[f] = handle.read()
            return folder, files
        archive = os.path.join(data_dir, archive)
        if os.path.exists(archive):
            return archive, {os.path.basename(n): b for n, b in _read_tar(archive, lambda n: True)}
    return "", {}


def _load_cifar(name: str, data_dir: str) -> Dataset | None:
    source, files = _cifar_members(data_dir, name)
    if not files:
        return None

    def member(n: str) -> bytes:
        if n not in files:
            raise ValueError(f"{source}: {n} is missing; download or extract the archive again.")
        return files[n]

    if "test_batch.bin" in files or "test.bin" in files:  # binary version: label byte(s) + 3072 bytes
        label_bytes = 1 if name == "cifar10" else 2  # CIFAR-100 stores coarse then fine label
        record = label_bytes + 3072
        train_names = [f"data_batch_{i}.bin" for i in range(1, 6)] if name == "cifar10" else ["train.bin"]
        test_names = ["test_batch.bin"] if name == "cifar10" else ["test.bin"]

        def read(names):
            for n in names:
                if len(member(n)) % record:
                    raise ValueError(
                        f"{source}/{n}: {len(files[n])} bytes is not a whole number of {record}-byte "
                        "records: the file is truncated or corrupt."
                    )
            raw = np.frombuffer(b"".join(files[n] for n in names), np.uint8).reshape(-1, record)
            images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = raw[:, label_bytes - 1]
            _check_labels(name, f"{source}/{'+'.join(names)}", images, labels)
            return images, labels

    else:  # python version: pickled dicts of NumPy arrays
        train_names = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
        test_names = ["test_batch"] if name == "cifar10" else ["test"]
        label_key = b"labels" if name == "cifar10" else b"fine_labels"

        def read_one(n):
            try:
                part = _NumpyOnlyUnpickler(io.BytesIO(member(n)), encoding="bytes").load()
                images, labels = np.asarray(part[b"data"], np.uint8), np.asarray(part[label_key])
            except pickle.UnpicklingError:
                raise
            except Exception as error:  # a truncated or foreign pickle fails in many ways
                raise ValueError(
                    f"{source}/{n}: not a CIFAR batch ({type(error).__name__}: {error})."
                ) from None
            if images.ndim != 2 or images.shape[1] != 3072:
                raise ValueError(f"{source}/{n}: data has shape {images.shape}, expected [N, 3072].")
            _check_labels(name, f"{source}/{n}", images, labels)
            return images, labels

        def read(names):
            parts = [read_one(n) for n in names]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    return _from_uint8(name, *read(train_names), *read(test_names))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_folder_entries(data_dir: str) -> dict[str, list[tuple[str, str, bytes]]] | None:
    """``{split: [(class name, source, encoded image bytes)]}`` from a folder or a .tar.gz in data_dir.

    ``source`` names the file (its path, or ``archive:member``) for error messages.
    """
    entries: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for split in entries:
        for path in sorted(glob.glob(os.path.join(data_dir, split, "*", "*"))):
            if path.lower().endswith(IMAGE_SUFFIXES):
                with open(path, "rb") as f:
                    entries[split].append((os.path.basename(os.path.dirname(path)), path, f.read()))
    if entries["train"]:
        return entries
    for archive in sorted(glob.glob(os.path.join(data_dir, "*.tar.gz"))):
        members = _read_tar(archive, lambda n: n.lower().endswith(IMAGE_SUFFIXES) and n.count("/") >= 2)
        for member, payload in members:
            split, class_name = member.split("/")[-3:-1]
            if split in entries:
                entries[split].append((class_name, f"{archive}:{member}", payload))
        if entries["train"]:
            return entries
    return None


def _load_image_folder(name: str, data_dir: str) -> Dataset | None:
    entries = _image_folder_entries(data_dir)
    if entries is None:
        return None
    if not entries["test"]:
        raise ValueError(
            f"{data_dir!r} has a train split but no test split: expected test/<class>/*.jpg beside "
            "train/<class>/*.jpg."
        )
    classes = sorted({c for c, _, _ in entries["train"]})
    index = {c: i for i, c in enumerate(classes)}
    num_classes = NORMALIZATION[name][0]
    if len(classes) != num_classes:
        raise ValueError(
            f"{name} has {num_classes} classes but {data_dir!r} has {len(classes)} class folders."
        )
    unknown = sorted({c for c, _, _ in entries["test"]} - set(classes))
    if unknown:
        raise ValueError(f"{data_dir!r}: test class folder(s) {unknown} have no counterpart in train/.")
    first_shape = None

    def decode(items):
        nonlocal first_shape
        images = []
        for _, source, payload in items:
            image = streaming.decode_image(source, io.BytesIO(payload))
            if first_shape is None:
                first_shape = (image.shape, source)
            elif image.shape != first_shape[0]:
                raise ValueError(
                    f"{source}: image of size {image.shape[1]}×{image.shape[0]}, but "
                    f"{first_shape[1]} is {first_shape[0][1]}×{first_shape[0][0]}: all images must have "
                    "one size (resize them first)."
                )
            images.append(image)
        return np.stack(images), np.asarray([index[c] for c, _, _ in items])

    return _from_uint8(name, *decode(entries["train"]), *decode(entries["test"]))


def _load_tfds(name: str) -> Dataset:
    try:
        import tensorflow_datasets  # noqa: F401  (only checks that it is installed)
    except ImportError:
        raise ValueError(
            f"config.data_dir is unset, so {name!r} would come from tensorflow-datasets, which is not "
            "installed: `pip install 'snnjax[tfds]'` (downloads on first use), or set config.data_dir to "
            "a folder with the dataset's files."
        ) from None
    if name in ("mnist", "fashion_mnist"):
        instead = "set config.data_dir to a folder with the four IDX files (train-images-idx3-ubyte.gz etc.)"
    else:
        instead = (
            "set config.data_dir to a folder with the published archive (e.g. cifar-10-python.tar.gz) or "
            "train/<class>/ + test/<class>/ image folders"
        )
    arrays = []
    for split in ("train", "test"):
        # data_source downloads and prepares the dataset (ArrayRecord files) on first use and reads it
        # without TensorFlow; the streamed datasets read the same way (snnjax.io.streaming.TfdsSource).
        source = streaming.tfds_data_source(name, split, None, instead)
        records = [source[i] for i in range(len(source))]
        arrays += [
            np.stack([np.asarray(r["image"], np.uint8) for r in records]),
            np.asarray([int(r["label"]) for r in records]),
        ]
    return _from_uint8(name, *arrays)


STREAMED = ("imagenet2012",)  # too large for memory: read record by record (snnjax.io.streaming)


def _streamed(name: str, data_dir: str | None, image_size: int) -> streaming.StreamingDataset:
    num_classes, mean, std = NORMALIZATION[name]
    if data_dir:
        test_dir = next(
            (d for d in ("val", "validation", "test") if os.path.isdir(os.path.join(data_dir, d))), "val"
        )
        train = streaming.ImageFolderSource(os.path.join(data_dir, "train"))
        test = streaming.ImageFolderSource(os.path.join(data_dir, test_dir), classes=train.classes)
        if len(train.classes) != num_classes:
            raise ValueError(
                f"{name} has {num_classes} classes but {data_dir!r}/train has {len(train.classes)}."
            )
    else:
        train = streaming.TfdsSource(name, "train")
        test = streaming.TfdsSource(name, "validation")
    return streaming.StreamingDataset(train, test, num_classes, name, image_size, mean, std)


def load_dataset(
    name: str, data_dir: str | None = None, seed: int = 0, image_size: int = 224
) -> Dataset | streaming.StreamingDataset:
    """Loads a dataset into memory (see the module docstring for the sources).

    Args:
      name: one of ``DATASETS``.
      data_dir: folder with the dataset's files; None = tensorflow-datasets (``digits`` needs none).
      seed: seed of the ``digits`` train/test split (20 % test, stratified).
      image_size: network input side for streamed datasets (``imagenet2012``).

    Returns:
      The `Dataset` (in memory) or a `snnjax.io.streaming.StreamingDataset`.

    Raises:
      ValueError: for an unknown name.
      FileNotFoundError: when data_dir holds no known layout.
    """
    if name not in DATASETS:
        raise ValueError(f"config.dataset={name!r} is unknown; allowed: {', '.join(DATASETS)}.")
    if name == "digits":
        return _load_digits(seed, test_fraction=0.2)
    if name in STREAMED:
        return _streamed(name, data_dir, image_size)
    if not data_dir:
        return _load_tfds(name)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"config.data_dir={data_dir!r} is not a folder.")
    if name in ("mnist", "fashion_mnist"):
        return _load_idx_dir(name, data_dir)
    dataset = (_load_cifar(name, data_dir) if name.startswith("cifar") else None) or _load_image_folder(
        name, data_dir
    )
    if dataset is None:
        raise FileNotFoundError(
            f"No {name} files found in data_dir={data_dir!r}: expected the published archive "
            "(e.g. cifar-10-batches-bin/ or cifar-10-python.tar.gz) or an image folder "
            "train/<class>/*.jpg + test/<class>/*.jpg (or a .tar.gz holding one)."
        )
    return dataset


class _Subset(Sequence):
    """The items of a sequence at ``indices``, read only when asked for (streamed test sets)."""

    def __init__(self, items: Sequence, indices: np.ndarray):
        self._items, self._indices = items, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._items[int(self._indices[index])]


def subsample_test(
    dataset: Dataset | streaming.StreamingDataset, count: int, seed: int = 0
) -> Dataset | streaming.StreamingDataset:
    """The dataset with ``count`` of its test examples, drawn uniformly (a shortened evaluation).

    Drawn without replacement by ``seed`` and kept in their original order: test sets stored class
    by class (image folders) would otherwise give a subset of a few classes.

    Args:
      dataset: from `load_dataset`.
      count: test examples to keep; 0 (or at least as many as there are) keeps all.
      seed: seed of the draw.

    Returns:
      The same kind of dataset; training examples unchanged.
    """
    if not count or count >= dataset.num_test:
        return dataset
    indices = np.sort(np.random.default_rng(seed).choice(dataset.num_test, count, replace=False))
    if isinstance(dataset, Dataset):
        return dataclasses.replace(
            dataset, test_images=dataset.test_images[indices], test_labels=dataset.test_labels[indices]
        )
    return dataclasses.replace(dataset, test=_Subset(dataset.test, indices))


def train_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int, keep_last: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields shuffled batches for one epoch: full ones, then the remainder if ``keep_last``.

    The permutation depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    Args:
      images: ``[N, H, W, C]``.
      labels: ``[N]``.
      batch_size: examples per batch.
      seed: run seed.
      epoch: epoch index.
      keep_last: also yield the last ``N mod batch_size`` examples as a smaller batch (PyTorch's
        ``drop_last=False``), so that every example is seen each epoch.

    Yields:
      ``(images [batch_size, H, W, C], labels [batch_size])``; with ``keep_last`` the last batch
      may hold fewer.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    for idx in streaming.batch_indices(order, batch_size, keep_last):
        yield images[idx], labels[idx]
