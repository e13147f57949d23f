"""Dataset loaders on generated files in the published formats, and on ../shared/data when present."""

import dataclasses
import gzip
import io
import os
import pathlib
import pickle
import socket
import sys
import tarfile
import time
import warnings

import numpy as np
import pytest
from helpers import png_header
from PIL import Image

from snnjax.io import data, streaming

SHARED = pathlib.Path(__file__).parents[1] / ".." / "shared" / "data"
RNG = np.random.default_rng(0)


def cifar_arrays(n):
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, n, dtype=np.uint8)
    return images, labels


def chw_rows(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def expected(name, images):
    _, mean, std = data.NORMALIZATION[name]
    return (images / 255.0 - np.asarray(mean)) / np.asarray(std)


def write_cifar10_binary(folder, train, test):
    folder.mkdir()
    for i in range(5):
        x, y = train[0][i::5], train[1][i::5]
        (folder / f"data_batch_{i + 1}.bin").write_bytes(
            np.concatenate([y[:, None], chw_rows(x)], 1).tobytes()
        )
    (folder / "test_batch.bin").write_bytes(
        np.concatenate([test[1][:, None], chw_rows(test[0])], 1).tobytes()
    )


def test_cifar10_binary_folder(tmp_path):
    train, test = cifar_arrays(20), cifar_arrays(6)
    write_cifar10_binary(tmp_path / "cifar-10-batches-bin", train, test)
    ds = data.load_dataset("cifar10", str(tmp_path))
    order = np.concatenate([np.arange(i, 20, 5) for i in range(5)])  # batches were written strided
    np.testing.assert_allclose(ds.train_images, expected("cifar10", train[0][order]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.train_labels, train[1][order])
    np.testing.assert_array_equal(ds.test_labels, test[1])
    assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)


def test_cifar100_python_tarball(tmp_path):
    train, test = cifar_arrays(8), cifar_arrays(4)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, (x, y) in (("train", train), ("test", test)):
            payload = pickle.dumps({b"data": chw_rows(x), b"fine_labels": list(y), b"coarse_labels": list(y)})
            info = tarfile.TarInfo(f"cifar-100-python/{split}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    ds = data.load_dataset("cifar100", str(tmp_path))
    np.testing.assert_allclose(ds.test_images, expected("cifar100", test[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.train_labels, train[1])
    assert ds.num_classes == 100


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        data.load_dataset("cifar10", str(tmp_path))


def test_image_folder_png(tmp_path):
    images = {}
    for split, count in (("train", 3), ("test", 2)):
        for label in range(10):
            folder = tmp_path / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")  # lossless
                images[(split, label, i)] = pixels
    ds = data.load_dataset("cifar10", str(tmp_path))
    assert len(ds.train_images) == 30 and len(ds.test_images) == 20
    np.testing.assert_array_equal(ds.test_labels, np.repeat(np.arange(10), 2))
    np.testing.assert_allclose(ds.test_images[3], expected("cifar10", images[("test", 1, 1)]), atol=1e-5)


def test_mnist_idx(tmp_path):
    x = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    y = np.arange(5, dtype=np.uint8)

    def idx(array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        return header + array.tobytes()

    for stem, array in zip(data.IDX_FILES, (x, y, x[:2], y[:2]), strict=True):
        (tmp_path / (stem + ".gz")).write_bytes(gzip.compress(idx(array)))
    ds = data.load_dataset("mnist", str(tmp_path))
    np.testing.assert_allclose(ds.train_images[..., 0], expected("mnist", x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.test_labels, [0, 1])


def test_missing_files_explain_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-bin"):
        data.load_dataset("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_dataset("mnist", str(tmp_path))
    with pytest.raises(ValueError, match="allowed: digits"):
        data.load_dataset("imagenet9")


def test_digits_split_is_seeded_and_stratified():
    a, b = data.load_dataset("digits", seed=3), data.load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert len(a.train_images) == 1437 and len(a.test_images) == 360
    assert np.bincount(a.test_labels).min() >= 35  # every class present in proportion


def test_subsample_test_draws_across_a_class_sorted_test_set_and_keeps_the_training_set():
    full = data.load_dataset("digits", seed=3)
    order = np.argsort(full.test_labels, kind="stable")  # stored class by class, as image folders are
    by_class = dataclasses.replace(
        full, test_images=full.test_images[order], test_labels=full.test_labels[order]
    )
    short = data.subsample_test(by_class, 50)
    assert short.num_test == 50 and short.num_train == full.num_train
    assert len(np.unique(short.test_labels)) == 10  # the first 50 would hold 2 classes
    kept = np.sort(np.random.default_rng(0).choice(360, 50, replace=False))
    np.testing.assert_array_equal(short.test_images, by_class.test_images[kept])
    np.testing.assert_array_equal(short.test_labels, by_class.test_labels[kept])
    batches = list(short.test_batches(32))  # 32 + 18 real images, the second batch padded
    assert [int(mask.sum()) for _, _, mask in batches] == [32, 18]
    assert data.subsample_test(full, 0) is full and data.subsample_test(full, 360) is full


def test_train_batches_depend_only_on_seed_and_epoch():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    first = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=2)]
    again = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=2)]
    other = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=3)]
    assert first == again and first != other
    assert len(first) == 3 and all(len(b) == 3 for b in first)  # remainder dropped
    kept = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=2, keep_last=True)]
    assert kept[:3] == first and len(kept[3]) == 1  # the same full batches, then the remainder
    assert sorted(sum(kept, [])) == list(range(10))  # every example once


@pytest.mark.skipif(not (SHARED / "mnist").exists(), reason="../shared/data not present")
def test_shared_mnist_matches_published_sizes():
    ds = data.load_dataset("mnist", str(SHARED / "mnist"))
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.test_labels).tolist()[:3] == [980, 1135, 1032]  # published class counts


def test_tfds_path_explains_how_to_install_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"pip install 'snnjax\[tfds\]'"):
        data.load_dataset("cifar10")
    with pytest.raises(ValueError, match="tensorflow-datasets"):
        data.load_dataset("imagenet2012")


# The tensorflow-datasets path, offline: tfds's own mock data behind the loader code that downloads
# for real (tfds.data_source for the in-memory datasets and for streaming).


def test_tfds_in_memory_path_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = data.load_dataset("cifar10")  # no data_dir: tfds
        source = tfds.data_source("cifar10", split="test")
        first = source[0]
    assert ds.train_images.shape == (40, 32, 32, 3) and ds.test_images.shape == (40, 32, 32, 3)
    assert ds.num_classes == 10 and ds.train_labels.dtype.kind == "i"
    # The loader normalizes what tfds returns, record for record and in order.
    _, mean, std = data.NORMALIZATION["cifar10"]
    expected = (first["image"].astype(np.float32) / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(ds.test_images[0], expected, rtol=1e-6, atol=1e-6)
    assert ds.test_labels[0] == first["label"]


@pytest.mark.slow
def test_tfds_mock_data_trains_and_converts(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from snnjax.configs import ci_tiny
    from snnjax.experiment import pipeline as evaluation, training

    config = ci_tiny.get_config()
    config.dataset = "mnist"  # by tfds name, no data_dir
    config.num_epochs = 1
    config.batch_size = 16
    config.eval_batch_size = 16
    config.report_examples = 16
    with tfds.testing.mock_data(num_examples=64):
        state = training.train_and_evaluate(config, str(tmp_path))
        result = evaluation.convert_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 64 // 16
    assert result["dataset"] == "mnist" and len(result["snn_accuracy"]) == config.snn_num_steps


def test_tfds_streamed_data_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset("imagenet2012", image_size=32)  # streamed through tfds.data_source
        images, labels = next(iter(ds.train_batches(4, seed=0, epoch=0)))
        test_images, test_labels, mask = next(iter(ds.test_batches(4)))
    assert (ds.num_train, ds.num_test) == (12, 12)
    assert images.shape == (4, 32, 32, 3) and test_images.shape == (4, 32, 32, 3)
    assert np.all((labels >= 0) & (labels < 1000)) and mask.all()
    assert np.isfinite(images).all() and images.std() > 0


# Data files that lie are refused, naming the file.


def idx_bytes(array, magic=None):
    magic = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    return magic + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def write_mnist(folder, x_train, y_train, x_test, y_test, gz=True):
    for stem, payload in zip(data.IDX_FILES, (x_train, y_train, x_test, y_test), strict=True):
        raw = payload if isinstance(payload, bytes) else idx_bytes(payload)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)


MNIST_X = RNG.integers(0, 256, (200, 28, 28), dtype=np.uint8)
MNIST_Y = RNG.integers(0, 10, 200, dtype=np.uint8)


@pytest.mark.parametrize(
    "train_labels, message",
    [
        (idx_bytes(RNG.integers(0, 10, 260, dtype=np.uint8)), r"200 images but 260 labels"),
        (idx_bytes(RNG.integers(0, 10, 150, dtype=np.uint8)), r"200 images but 150 labels"),
        (idx_bytes(np.full(200, 12, np.uint8)), r"labels range over \[12, 12\] but mnist has 10 classes"),
        (
            idx_bytes(MNIST_Y, magic=b"\x00\x00\x08\x03"),
            r"not an IDX labels file: its magic number is 0x00000803",
        ),
        (idx_bytes(MNIST_Y, magic=b"\x00\x00\x0d\x01"), r"magic number is 0x00000d01"),  # float32 type code
        (idx_bytes(MNIST_Y)[:-5], r"header says labels of shape \(200,\) .* 203 bytes"),
        (idx_bytes(MNIST_Y) + b"extra", r"has 213 bytes"),
        (idx_bytes(MNIST_Y)[:6], r"truncated IDX header"),
    ],
    ids=[
        "260-labels",
        "150-labels",
        "label-range",
        "images-magic",
        "float-type",
        "truncated",
        "trailing",
        "header",
    ],
)
def test_idx_files_that_lie_are_refused_with_the_file_named(tmp_path, train_labels, message):
    write_mnist(tmp_path, MNIST_X, train_labels, MNIST_X[:10], MNIST_Y[:10], gz=False)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*" + message):
        data.load_dataset("mnist", str(tmp_path))


def test_truncated_gzip_idx_is_named(tmp_path):
    write_mnist(tmp_path, MNIST_X, MNIST_Y, MNIST_X[:10], MNIST_Y[:10])
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: cannot be read"):
        data.load_dataset("mnist", str(tmp_path))


def write_image_folder(root, sizes=None, splits=("train", "test"), classes=10):
    for split in splits:
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            size = (sizes or {}).get((split, label), 8)
            Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "0.png")


def test_image_folder_that_lies_is_refused_with_the_file_named(tmp_path):
    write_image_folder(tmp_path / "mixed", sizes={("train", 3): 9})
    with pytest.raises(ValueError, match=r"class3/0.png: image of size 9×9, but .*class0/0.png is 8×8"):
        data.load_dataset("cifar10", str(tmp_path / "mixed"))

    write_image_folder(tmp_path / "corrupt")
    bad = tmp_path / "corrupt" / "test" / "class5" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"test/class5/0.png: not a readable image"):
        data.load_dataset("cifar10", str(tmp_path / "corrupt"))

    write_image_folder(tmp_path / "no_test", splits=("train",))
    with pytest.raises(ValueError, match=r"has a train split but no test split"):
        data.load_dataset("cifar10", str(tmp_path / "no_test"))

    write_image_folder(tmp_path / "extra_class")
    (tmp_path / "extra_class" / "test" / "class0").rename(tmp_path / "extra_class" / "test" / "zebra")
    with pytest.raises(ValueError, match=r"test class folder\(s\) \['zebra'\] have no counterpart in train"):
        data.load_dataset("cifar10", str(tmp_path / "extra_class"))


def test_truncated_image_archive_is_named(tmp_path):
    write_image_folder(tmp_path / "src")
    archive = tmp_path / "data" / "images.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="cifar10")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"images.tar.gz: the archive is truncated or corrupt"):
        data.load_dataset("cifar10", str(tmp_path / "data"))


def test_cifar_archives_that_lie_are_refused_with_the_file_named(tmp_path):
    train, test = cifar_arrays(20), cifar_arrays(6)
    (tmp_path / "short").mkdir()
    write_cifar10_binary(tmp_path / "short" / "cifar-10-batches-bin", train, test)
    record = tmp_path / "short" / "cifar-10-batches-bin" / "data_batch_2.bin"
    record.write_bytes(record.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"data_batch_2.bin: 12192 bytes is not a whole number of 3073-byte"):
        data.load_dataset("cifar10", str(tmp_path / "short"))

    (tmp_path / "labels").mkdir()
    write_cifar10_binary(tmp_path / "labels" / "cifar-10-batches-bin", train, (test[0], test[1] + 10))
    with pytest.raises(
        ValueError, match=r"test_batch.bin: labels range over \[\d+, \d+\] but cifar10 has 10"
    ):
        data.load_dataset("cifar10", str(tmp_path / "labels"))

    (tmp_path / "missing").mkdir()
    write_cifar10_binary(tmp_path / "missing" / "cifar-10-batches-bin", train, test)
    (tmp_path / "missing" / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    with pytest.raises(ValueError, match=r"cifar-10-batches-bin: data_batch_5.bin is missing"):
        data.load_dataset("cifar10", str(tmp_path / "missing"))

    folder = tmp_path / "shape" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = np.zeros((4, 1000), np.uint8) if name == "data_batch_3" else np.zeros((4, 3072), np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": images, b"labels": [0, 1, 2, 3]}))
    with pytest.raises(ValueError, match=r"data_batch_3: data has shape \(4, 1000\), expected \[N, 3072\]"):
        data.load_dataset("cifar10", str(tmp_path / "shape"))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)})[:-3])
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3})
    )
    with pytest.raises(ValueError, match=r"data_batch_3: 4 images but 3 labels"):
        data.load_dataset("cifar10", str(tmp_path / "shape"))


def test_streamed_test_split_keeps_the_train_labels(tmp_path):
    from snnjax.io import streaming

    for split, classes in (("train", ["a", "b", "c"]), ("val", ["b", "c"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / name / "0.png")
    train = streaming.ImageFolderSource(str(tmp_path / "train"))
    val = streaming.ImageFolderSource(str(tmp_path / "val"), classes=train.classes)
    assert [label for _, label in val.items] == [1, 2]  # b and c keep their training labels
    with pytest.raises(ValueError, match=r"class folder\(s\) \['a'\] have no counterpart"):
        streaming.ImageFolderSource(str(tmp_path / "train"), classes=["b", "c"])
    (tmp_path / "val" / "c" / "0.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"val/c/0.png: not a readable image"):
        val[1]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenet2012"])
def test_in_place_normalization_is_bit_identical_to_the_expression(name):
    _, mean, std = data.NORMALIZATION[name]
    channels = len(mean)
    # Every uint8 value in every channel, in a random order per channel, as [N, H, W, C].
    rng = np.random.default_rng(0)
    images = np.stack([rng.permutation(np.arange(256, dtype=np.uint8)) for _ in range(channels)], -1)
    images = images.reshape(4, 8, 8, channels)
    arithmetic = (images.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    normalized = streaming.normalize_uint8(images, mean, std)
    assert normalized.dtype == np.float32 and normalized.shape == images.shape
    np.testing.assert_array_equal(normalized, arithmetic)
    with pytest.raises(TypeError, match="uint8"):
        streaming.normalize_uint8(images.astype(np.int32), mean, std)


# Paths and files that mislead the loaders.


def test_idx_kind_comes_from_the_file_name_not_its_folders(tmp_path):
    folder = tmp_path / "idx_labels" / "images"  # folder names that read like the other kind
    folder.mkdir(parents=True)
    write_mnist(folder, MNIST_X, MNIST_Y, MNIST_X[:10], MNIST_Y[:10])
    ds = data.load_dataset("mnist", str(folder))
    assert ds.train_images.shape == (200, 28, 28, 1) and ds.test_images.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(ds.train_labels, MNIST_Y)


@pytest.mark.parametrize(
    "payload, reason",
    [
        # Over twice Pillow's MAX_IMAGE_PIXELS: DecompressionBombError (no OSError).
        (png_header(30000, 30000), r"Image size \(900000000 pixels\) exceeds limit"),
        # Over the limit: DecompressionBombWarning, raised where warnings are errors.
        (png_header(10000, 10000), r"Image size \(100000000 pixels\) exceeds limit"),
        (b"GIF89a, not a PNG", r"Pillow does not recognize its format"),
        (png_header(8, 8)[:20], r"OSError: "),  # truncated in its header
    ],
    ids=["bomb", "bomb-warning", "unknown-format", "truncated"],
)
def test_images_that_pillow_refuses_are_named_in_one_value_error(tmp_path, payload, reason):
    limit = Image.MAX_IMAGE_PIXELS
    write_image_folder(tmp_path / "folder")
    (tmp_path / "folder" / "train" / "class3" / "0.png").write_bytes(payload)
    archive = tmp_path / "archive" / "images.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "folder", arcname="cifar10")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under pytest's -W error, whatever the config says
        with pytest.raises(ValueError, match=r"folder/train/class3/0.png: not a readable image \(" + reason):
            data.load_dataset("cifar10", str(tmp_path / "folder"))
        with pytest.raises(
            ValueError, match=r"images.tar.gz:cifar10/train/class3/0.png: not a readable image"
        ):
            data.load_dataset("cifar10", str(tmp_path / "archive"))
    with pytest.raises(ValueError, match=r"remove the file or re-encode it"):
        data.load_dataset("cifar10", str(tmp_path / "folder"))
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's bomb limit stays


def no_network(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "simulated: no network")


def test_tfds_without_network_fails_in_seconds_and_leaves_no_folder(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # no host name resolves, as offline
    # tfds's default folder (TFDS_DATA_DIR or ~/tensorflow_datasets), read when tfds was imported.
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "home" / "tensorflow_datasets"))
    start = time.monotonic()
    with pytest.raises(
        ValueError,
        match=r"mnist is not prepared in .*tensorflow_datasets and .* storage.googleapis.com cannot be "
        r"reached \(\w+\)\. Without network, set config.data_dir to a folder with the four IDX",
    ):
        data.load_dataset("mnist")
    with pytest.raises(
        ValueError, match=r"only from files downloaded by hand into .*manual .*config.data_dir to an image"
    ):
        data.load_dataset("imagenet2012")  # streamed; tfds does not download it
    assert time.monotonic() - start < 30  # ~1 s; tfds alone retries for ~200 s
    assert list(tmp_path.iterdir()) == []
