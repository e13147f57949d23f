"""Streaming input: crops, determinism, evaluation coverage, and a training run on a streamed folder."""

import json
import socket
import warnings

import numpy as np
import pytest
from helpers import png_header
from PIL import Image

from snnjax.configs import ci_tiny
from snnjax.experiment import pipeline as evaluation, training
from snnjax.io import data as data_lib, streaming

RNG = np.random.default_rng(0)


def make_folder(root, classes=3, per_class=(6, 2), sizes=((40, 50), (64, 36), (33, 33))):
    for split, count in zip(("train", "val"), per_class, strict=True):
        for c in range(classes):
            folder = root / split / f"n{c:03d}"
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = sizes[(c + i) % len(sizes)]
                pixels = np.full((h, w, 3), 40 * c + 10, np.uint8) + RNG.integers(
                    0, 5, (h, w, 3), dtype=np.uint8
                )
                Image.fromarray(pixels).save(folder / f"{i}.png")


def folder_dataset(root, size=16):
    return streaming.StreamingDataset(
        streaming.ImageFolderSource(str(root / "train")),
        streaming.ImageFolderSource(str(root / "val")),
        num_classes=3,
        name="imagenet2012",
        image_size=size,
        threads=3,
    )


def test_random_resized_crop_and_center_crop_shapes():
    image = RNG.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    crop = streaming.random_resized_crop(image, np.random.default_rng(1), 24)
    assert crop.shape == (24, 24, 3) and crop.dtype == np.uint8
    center = streaming.center_crop(image, 24)
    assert center.shape == (24, 24, 3)
    # Shorter side resized to 24·256/224 ≈ 27, so the centre crop drops ~1-2 pixels of each border.
    constant = np.full((50, 80, 3), 77, np.uint8)
    np.testing.assert_array_equal(streaming.center_crop(constant, 24), 77)


def test_training_batches_are_seeded_and_normalized(tmp_path):
    make_folder(tmp_path)
    ds = folder_dataset(tmp_path)
    first = list(ds.train_batches(4, seed=1, epoch=0))
    again = list(ds.train_batches(4, seed=1, epoch=0))
    other = list(ds.train_batches(4, seed=1, epoch=1))
    assert len(first) == 18 // 4 and first[0][0].shape == (4, 16, 16, 3)
    kept = list(ds.train_batches(4, seed=1, epoch=0, keep_last=True))
    assert [len(labels) for _, labels in kept] == [4, 4, 4, 4, 2]
    np.testing.assert_array_equal(kept[0][0], first[0][0])
    for (a, la), (b, lb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    # A class-c image is ≈ 40c + 12 everywhere: check the normalization with the ImageNet constants.
    images, labels = first[0]
    expected = ((40 * labels + 12)[:, None, None, None] / 255 - np.asarray(ds.mean)) / np.asarray(ds.std)
    np.testing.assert_allclose(images, np.broadcast_to(expected, images.shape), atol=0.05)


def test_evaluation_batches_cover_every_example_once(tmp_path):
    make_folder(tmp_path)
    ds = folder_dataset(tmp_path)
    batches = list(ds.test_batches(4))
    masks = np.concatenate([m for _, _, m in batches])
    labels = np.concatenate([lab for _, lab, _ in batches])[masks]
    assert masks.sum() == 6 and len(batches) == 2
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])


def test_missing_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="<class>"):
        streaming.ImageFolderSource(str(tmp_path / "train"))


def test_imagenet_folder_with_wrong_class_count_is_rejected(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ValueError, match="1000 classes"):
        data_lib.load_dataset("imagenet2012", str(tmp_path))


def test_train_and_convert_on_a_streamed_dataset(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", per_class=(8, 4))
    dataset = folder_dataset(tmp_path / "data", size=8)
    monkeypatch.setattr(data_lib, "load_dataset", lambda *args, **kwargs: dataset)
    config = ci_tiny.get_config()
    config.batch_size, config.eval_batch_size, config.num_epochs = 8, 8, 2
    config.model, config.method = "tiny_cnn", "relu"  # relu also exercises calibration_images
    state = training.train_and_evaluate(config, str(tmp_path / "run"))
    assert int(state.step) == 2 * (24 // 8)
    result = evaluation.convert_and_evaluate(config, str(tmp_path / "run"))
    assert result == json.loads((tmp_path / "run" / "snn_eval.json").read_text())
    assert all(abs(v * 12 - round(v * 12)) < 1e-6 for v in result["snn_accuracy"].values())  # 12 images


def test_subsample_test_of_a_streamed_set_reads_only_the_drawn_examples(tmp_path):
    make_folder(tmp_path)
    full = folder_dataset(tmp_path)
    short = data_lib.subsample_test(full, 4)
    assert short.num_test == 4 and short.num_train == full.num_train
    ((images, labels, mask),) = list(short.test_batches(8))
    ((all_images, all_labels, _),) = list(full.test_batches(8))
    kept = np.sort(np.random.default_rng(0).choice(full.num_test, 4, replace=False))
    assert mask.tolist() == [True] * 4 + [False] * 4
    np.testing.assert_array_equal(images[:4], all_images[kept])
    np.testing.assert_array_equal(labels[:4], all_labels[kept])
    assert len(short.test[1:3]) == 2
    with pytest.raises(IndexError):
        short.test[4]


def test_an_image_over_pillows_bomb_limit_is_named_and_the_limit_kept(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "val" / "n001" / "1.png").write_bytes(png_header(30000, 30000))
    (tmp_path / "val" / "n002" / "0.png").write_bytes(png_header(10000, 10000))
    ds = folder_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"val/n001/1.png: not a readable image \(Image size .*re-encode"):
        list(ds.test_batches(8))  # decoded on the thread pool
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning Pillow gives below twice its limit, as an error
        with pytest.raises(ValueError, match=r"val/n002/0.png: not a readable image \(Image size"):
            ds.test[4]
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's default, not raised


def test_tfds_source_without_network_fails_fast(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "simulated: no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # no host name resolves, as offline
    with pytest.raises(
        ValueError, match=r"cifar10 is not prepared in .*www.cs.toronto.edu cannot be reached"
    ):
        streaming.TfdsSource("cifar10", "train", data_dir=str(tmp_path / "tfds"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("root_exists", [True, False])
def test_a_failed_tfds_download_removes_only_what_it_created(tmp_path, monkeypatch, root_exists):
    tfds = pytest.importorskip("tensorflow_datasets")
    import requests

    root = tmp_path / "data" / "tfds"
    if root_exists:
        (root / "downloads").mkdir(parents=True)
        (root / "downloads" / "earlier.tar.gz").write_bytes(b"kept")

    def failing_download(self, *args, **kwargs):  # what tfds leaves when the network drops mid-way
        (root / "downloads" / "mnist").mkdir(parents=True)
        (root / "downloads" / "mnist" / "t10k-images.gz.tmp.123").write_bytes(b"partial")
        (root / "downloads" / "extracted.tmp").write_bytes(b"partial")
        (root / "mnist" / "3.0.1.incomplete").mkdir(parents=True)
        raise requests.ConnectionError("simulated: connection reset")

    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: None)  # the host answers
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", failing_download)
    with pytest.raises(
        ValueError, match=r"downloading mnist with tensorflow-datasets failed \(ConnectionError"
    ):
        streaming.TfdsSource("mnist", "train", data_dir=str(root))
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    if root_exists:
        assert left == ["data", "data/tfds", "data/tfds/downloads", "data/tfds/downloads/earlier.tar.gz"]
    else:
        assert left == []


def test_tfds_data_source_prepares_on_first_use_then_reads_what_is_prepared(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets import testing

    # A real builder that prepares its 3 examples without downloads (no URLs, no TensorFlow needed).
    monkeypatch.setattr(tfds, "builder", lambda name, **kwargs: testing.DummyDataset(**kwargs))
    source = streaming.tfds_data_source("dummy_dataset", "train", str(tmp_path), instead="-")
    assert len(source) == 3 and source[0] == {"id": 0}

    def no_preparing(self, *args, **kwargs):
        raise AssertionError("prepared a second time")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_preparing)
    again = streaming.tfds_data_source("dummy_dataset", "train[1:]", str(tmp_path), instead="-")
    assert [again[i] for i in range(len(again))] == [{"id": 1}, {"id": 2}]
