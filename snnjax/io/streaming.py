"""Streaming input for datasets that do not fit in memory (ImageNet): decode and augment on host threads.

A source gives random access to ``(uint8 image [H, W, 3], label)`` records: `ImageFolderSource`
(``split/<class>/*.jpg``) or `TfdsSource` (tensorflow-datasets ``data_source``, ArrayRecord files,
no TensorFlow graph). `StreamingDataset` turns two sources into the batch interface the training
loop uses (the same as `snnjax.io.data.Dataset`): seeded, shuffled training batches with the
standard ImageNet augmentation (random-resized crop, scale 0.08–1, aspect 3/4–4/3, horizontal flip) and
deterministic evaluation batches (resize the shorter side to ``size·256/224``, centre crop). Images are
decoded by a thread pool (Pillow releases the GIL) and the next batch is prepared while the device
works on the current one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import os
import shutil
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from snnjax.core.parallel import pad_batch

__all__ = [
    "ImageFolderSource",
    "StreamingDataset",
    "TfdsSource",
    "batch_indices",
    "center_crop",
    "random_resized_crop",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def decode_image(source: str, file: str | BinaryIO) -> np.ndarray:
    """Decodes one image file with Pillow.

    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) stays in force: an image whose
    header claims more pixels is refused like any unreadable file.

    Args:
      source: names the image in errors (its path, or ``archive:member``).
      file: its path, or a binary file object holding the encoded bytes.

    Returns:
      uint8 ``[H, W, 3]`` (RGB).

    Raises:
      ValueError: naming ``source``, if Pillow cannot decode it (unknown format, truncated or corrupt
        data, or a size over the bomb limit).
    """
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))
    # DecompressionBombError is no OSError, and DecompressionBombWarning (over half the limit) reaches
    # here only where warnings are errors (pytest -W error); neither names the file on its own.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"{source}: not a readable image ({error}); remove the file or re-encode it at a smaller size."
        ) from None
    except UnidentifiedImageError:  # its message names a file object, not the file
        raise ValueError(
            f"{source}: not a readable image (Pillow does not recognize its format: not a JPEG or PNG, or "
            "its header is cut off); remove the file or re-encode it."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # PIL's errors for unreadable data
        raise ValueError(
            f"{source}: not a readable image ({type(error).__name__}: {error}); remove the file or "
            "re-encode it."
        ) from None


def batch_indices(order: np.ndarray, batch_size: int, keep_last: bool) -> list[np.ndarray]:
    """``order`` cut into batches of ``batch_size``; the shorter remainder last if ``keep_last``."""
    end = len(order) if keep_last else len(order) - len(order) % batch_size
    return [order[start : min(start + batch_size, end)] for start in range(0, end, batch_size)]


class ImageFolderSource:
    """Records from ``root/<class>/*.{jpg,jpeg,png}``; labels are the sorted class folder indices."""

    def __init__(self, root: str, classes: Sequence[str] | None = None):
        """Lists the images under ``root``.

        Args:
          root: the split's folder.
          classes: the label order (e.g. the training split's classes, so that a test split with
            fewer class folders keeps the same labels); default: the sorted folders of ``root``.

        Raises:
          FileNotFoundError: if ``root`` is missing or holds no images.
          ValueError: if ``root`` has a class folder that ``classes`` lacks.
        """
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist (expected {root}/<class>/*.jpg).")
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.classes = list(folders if classes is None else classes)
        unknown = sorted(set(folders) - set(self.classes))
        if unknown:
            raise ValueError(
                f"{root!r}: class folder(s) {unknown[:10]} have no counterpart in the train split."
            )
        index = {c: i for i, c in enumerate(self.classes)}
        self.items = [
            (os.path.join(root, c, f), index[c])
            for c in folders
            for f in sorted(os.listdir(os.path.join(root, c)))
            if f.lower().endswith(IMAGE_SUFFIXES)
        ]
        if not self.items:
            raise FileNotFoundError(f"no images in {root!r} (expected {root}/<class>/*.jpg).")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.items[index]
        return decode_image(path, path), label


# Seconds to wait for a host that tfds downloads from: tfds itself retries an unreachable host for
# minutes (urllib3, 10 tries with exponential backoff, per file) before it fails.
TFDS_PROBE_TIMEOUT_S = 5


def tfds_data_source(name: str, split: str, data_dir: str | None, instead: str) -> Sequence:
    """``tfds.data_source(name, split=split, data_dir=data_dir)`` that fails in seconds without network.

    A prepared dataset is read as it is. Otherwise tfds downloads and prepares it; first each host it
    downloads from is asked once, with a short timeout, and whatever a failed download or preparation
    created in the tfds data folder is removed again (folders and files that existed before are kept).

    Args:
      name: tfds dataset name.
      split: split name.
      data_dir: tfds data folder; None = tfds's default (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      instead: how to do without tfds, for the error message (which config.data_dir to set).

    Returns:
      tfds's random-access data source of the split.

    Raises:
      ValueError: in one line, if the dataset is not prepared and a host it is downloaded from cannot be
        reached (or, for a dataset downloaded by hand, tfds's manual folder is empty), or if its download
        fails on the network.
    """
    import requests
    import tensorflow_datasets as tfds

    # What tfds.data_source does, with the download guarded. ArrayRecord: read without TensorFlow.
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    try:
        # What is prepared (or what tfds.testing.mock_data provides) needs no network.
        return builder.as_data_source(split=split)
    except Exception:  # nothing prepared: tfds 4.9 raises a KeyError, other versions other errors
        if builder.is_prepared():
            raise  # prepared but unreadable: tfds's own error says why
    root = os.fspath(builder.data_dir_root)
    offline = f"{instead}, or set TFDS_DATA_DIR to a folder where tensorflow-datasets prepared {name}."
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:  # e.g. imagenet2012: prepared from files, not downloaded
        manual_dir = os.path.join(root, "downloads", "manual")
        if not (os.path.isdir(manual_dir) and os.listdir(manual_dir)):
            raise ValueError(
                f"{name} is not prepared in {root}, and tensorflow-datasets prepares it only from files "
                f"downloaded by hand into {manual_dir} (see the tfds catalog): {offline}"
            )
    else:
        urls = [url for url in builder.url_infos or {} if url.startswith(("http://", "https://"))]
        for host, url in {urllib.parse.urlsplit(url).netloc: url for url in urls}.items():
            try:
                requests.head(url, timeout=TFDS_PROBE_TIMEOUT_S, allow_redirects=False)
            except requests.exceptions.ReadTimeout:
                pass  # connected, so the host is there
            except requests.RequestException as error:
                raise ValueError(
                    f"{name} is not prepared in {root} and tensorflow-datasets cannot download it: {host} "
                    f"cannot be reached ({type(error).__name__}). Without network, {offline}"
                ) from None
    with _removed_on_failure(root):
        try:
            builder.download_and_prepare()
        except (requests.RequestException, tfds.download.DownloadError) as error:
            raise ValueError(
                f"downloading {name} with tensorflow-datasets failed ({type(error).__name__}: {error}). "
                f"Without network, {offline}"
            ) from error
    return builder.as_data_source(split=split)


def _paths_in(root: str, depth: int) -> set[str]:
    """The paths in folder ``root``, down to ``depth`` levels."""
    paths, level = set(), [root]
    for _ in range(depth):
        level = [os.path.join(d, n) for d in level if os.path.isdir(d) for n in os.listdir(d)]
        paths.update(level)
    return paths


@contextlib.contextmanager
def _removed_on_failure(root: str) -> Iterator[None]:
    """Removes what the block created in ``root`` if it raises; never what existed before.

    A missing ``root`` is removed whole (with the missing folders above it); in an existing one, the new
    entries down to three levels (``downloads/<name>/<file>``, ``<name>/<version>/<file>``: where tfds
    writes). Also on Ctrl-C. What another process downloads into the same folder meanwhile counts as
    new too: processes preparing datasets at once should not share a data folder.
    """
    top = None  # the highest missing folder of root's path
    path = os.path.abspath(root)
    while not os.path.exists(path):
        top, path = path, os.path.dirname(path)
    before = set() if top else _paths_in(root, 3)
    try:
        yield
    except BaseException:
        if top:
            shutil.rmtree(top, ignore_errors=True)
        else:
            new = _paths_in(root, 3) - before
            for path in new:
                if os.path.dirname(path) in new:
                    continue  # removed with its new parent
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):  # must not hide the error being raised
                        os.remove(path)
        raise


class TfdsSource:
    """Records from a prepared tensorflow-datasets dataset through ``tfds.data_source`` (random access)."""

    def __init__(self, name: str, split: str, data_dir: str | None = None):
        try:
            import tensorflow_datasets  # noqa: F401  (only checks that it is installed)
        except ImportError:
            raise ValueError(
                f"streaming {name!r} from tensorflow-datasets needs `pip install 'snnjax[tfds]'` and the "
                "dataset prepared in ArrayRecord format (imagenet2012 must be downloaded manually, see the "
                "tfds catalog); or set config.data_dir to an image folder with train/ and val/."
            ) from None
        self._source = tfds_data_source(
            name, split, data_dir, instead="set config.data_dir to an image folder with train/ and val/"
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        record = self._source[index]
        return np.asarray(record["image"]), int(record["label"])


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Random area/aspect crop resized (bilinear) to ``size``², as torchvision's RandomResizedCrop.

    Args:
      image: ``[H, W, 3]`` uint8.
      rng: NumPy generator.
      size: output side.
      scale: range of the crop area as a fraction of the image.
      ratio: range of the crop aspect ratio.

    Returns:
      ``[size, size, 3]`` uint8.
    """
    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            break
    else:  # fall back to a centre crop of the whole image, as torchvision does
        h, w = height, width
        top, left = 0, 0
    crop = Image.fromarray(image[top : top + h, left : left + w])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def center_crop(image: np.ndarray, size: int, resize_ratio: float = 256 / 224) -> np.ndarray:
    """Resizes the shorter side to ``size·resize_ratio`` (bilinear) and takes the centre ``size``²."""
    height, width = image.shape[:2]
    short = round(size * resize_ratio)
    scale = short / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


def normalize_uint8(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(images / 255 - mean) / std`` in float32, per channel.

    Args:
      images: uint8 ``[..., C]``, channels last.
      mean: ``C`` per-channel means of pixel values in [0, 1].
      std: ``C`` per-channel standard deviations.

    Returns:
      float32 ``[..., C]``.
    """
    if images.dtype != np.uint8:
        raise TypeError(f"normalize_uint8 takes uint8 images, got {images.dtype}.")
    # In place on one float32 copy: the same float32 operations as the expression above, but one
    # fresh allocation instead of four (first touch of 4 × 737 MB dominated 60k CIFAR images: 3.0 s
    # → 0.5 s on 2 cores).
    out = images.astype(np.float32)
    out /= 255.0
    out -= np.asarray(mean, np.float32)
    out /= np.asarray(std, np.float32)
    return out


@dataclasses.dataclass
class StreamingDataset:
    """A dataset read record by record, with the training loop's batch interface.

    Attributes:
      train: training source.
      test: evaluation source.
      num_classes: number of classes.
      name: dataset name.
      image_size: side of the square network input.
      mean: per-channel normalization mean (pixels in [0, 1]).
      std: per-channel normalization std.
      threads: decoding threads.
    """

    train: Sequence
    test: Sequence
    num_classes: int
    name: str
    image_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    threads: int = 8

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the network input."""
        return (self.image_size, self.image_size, 3)

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.train)

    @property
    def num_test(self) -> int:
        """Number of evaluation examples."""
        return len(self.test)

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        return normalize_uint8(images, self.mean, self.std)

    def _train_example(self, index: int, seed: int, epoch: int) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng([seed, epoch, index])  # per example: independent of thread timing
        image, label = self.train[index]
        crop = random_resized_crop(image, rng, self.image_size)
        return (crop[:, ::-1] if rng.random() < 0.5 else crop), label

    def _test_example(self, index: int) -> tuple[np.ndarray, int]:
        image, label = self.test[index]
        return center_crop(image, self.image_size), label

    def _prefetched(self, tasks: Iterator[list], load) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
        """Decodes batches of indices on the pool, keeping the next batch in flight."""
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            queue: collections.deque = collections.deque()
            for indices in tasks:
                queue.append((indices, [pool.submit(load, i) for i in indices]))
                if len(queue) > 1:
                    yield self._collect(*queue.popleft())
            while queue:
                yield self._collect(*queue.popleft())

    def _collect(self, indices, futures):
        examples = [f.result() for f in futures]
        images = self._normalize(np.stack([e[0] for e in examples]))
        return images, np.asarray([e[1] for e in examples], np.int32), indices

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, keep_last: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shuffled batches ``(images [B, S, S, 3], labels [B])``; depends only on (seed, epoch).

        Full batches, then (``keep_last``) the remainder as a smaller one; see `snnjax.io.data.train_batches`.
        """
        order = np.random.default_rng([seed, epoch]).permutation(self.num_train)
        tasks = iter(batch_indices(order, batch_size, keep_last))
        for images, labels, _ in self._prefetched(tasks, lambda i: self._train_example(int(i), seed, epoch)):
            yield images, labels

    def test_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every evaluation example once: ``(images, labels, mask)``, the last batch padded (mask False)."""
        tasks = (
            list(range(s, min(s + batch_size, self.num_test))) for s in range(0, self.num_test, batch_size)
        )
        for images, labels, _ in self._prefetched(tasks, self._test_example):
            yield pad_batch(images, labels, batch_size)

    def calibration_images(self, count: int) -> np.ndarray:
        """The first ``count`` training images, centre-cropped: ``[count, S, S, 3]``."""
        count = min(count, self.num_train)
        crops = [center_crop(self.train[i][0], self.image_size) for i in range(count)]
        return self._normalize(np.stack(crops))
