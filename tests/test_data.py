"""Dataset loaders on generated files in the published formats, and on ../shared/data when present."""

import gzip
import io
import os
import pathlib
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from snnjax import data

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


def test_train_batches_depend_only_on_seed_and_epoch():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    first = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=2)]
    again = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=2)]
    other = [b[1].tolist() for b in data.train_batches(x, y, 3, seed=1, epoch=3)]
    assert first == again and first != other
    assert len(first) == 3 and all(len(b) == 3 for b in first)  # remainder dropped


@pytest.mark.skipif(not (SHARED / "mnist").exists(), reason="../shared/data not present")
def test_shared_mnist_matches_published_sizes():
    ds = data.load_dataset("mnist", str(SHARED / "mnist"))
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.test_labels).tolist()[:3] == [980, 1135, 1032]  # published class counts


def test_tfds_path_explains_how_to_install_when_missing():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"pip install 'snnjax\[tfds\]'"):
            data.load_dataset("cifar10")
        with pytest.raises(ValueError, match="tensorflow-datasets"):
            data.load_dataset("imagenet2012")
    else:
        pytest.skip("tensorflow-datasets is installed; the download path needs network")
