"""Augmentations: exact behaviour on hand-made images, seeding, and composition."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from snnjax.io import augment


def ramp_images(batch=64, size=8, channels=2):
    base = jnp.arange(size * size * channels, dtype=jnp.float32).reshape(1, size, size, channels) + 1
    return jnp.broadcast_to(base, (batch, size, size, channels))


def test_random_crop_is_a_shifted_window_with_fill():
    images = ramp_images()
    out = augment.random_crop(images, jax.random.key(0), padding=2, fill=(-1.0, -2.0))
    padded = np.pad(np.asarray(images[0]), ((2, 2), (2, 2), (0, 0)))
    padded[:2] = padded[-2:] = padded[:, :2] = padded[:, -2:] = [-1.0, -2.0]
    windows = {(dy, dx): padded[dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)}
    offsets = set()
    for image in np.asarray(out):
        match = [k for k, w in windows.items() if np.array_equal(w, image)]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 10  # offsets vary over the batch


def test_random_flip_flips_about_half():
    images = ramp_images(batch=400)
    out = np.asarray(augment.random_flip(images, jax.random.key(1)))
    flipped = np.all(out == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == np.asarray(images), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)
    assert 150 < flipped.sum() < 250


def test_cutout_zeroes_a_clipped_square():
    images = jnp.ones((500, 32, 32, 3))
    out = np.asarray(augment.cutout(images, jax.random.key(2), size=16))
    holes = (out == 0).all(axis=-1)
    areas = holes.sum(axis=(1, 2))
    assert areas.max() == 256  # a full 16×16 square when the centre is inside [8, 24)
    assert areas.min() >= 64  # at worst a corner quarter (centre at the image corner)
    for hole in holes[:20]:  # each hole is an axis-aligned rectangle
        ys, xs = np.nonzero(hole)
        assert hole[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()


def test_seeded_and_composed():
    fields = {"augment": "crop,flip,autoaugment,cutout", "crop_padding": 4, "cutout_size": 16}
    fn = jax.jit(augment.from_config(ml_collections.ConfigDict(fields), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    images = jax.random.normal(jax.random.key(3), (8, 32, 32, 3))
    a, b = fn(images, jax.random.key(5)), fn(images, jax.random.key(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fn(images, jax.random.key(6)))


def test_no_augmentation_and_unknown_names():
    empty = ml_collections.ConfigDict({"augment": "", "crop_padding": 4, "cutout_size": 16})
    assert augment.from_config(empty) is None
    bad = ml_collections.ConfigDict({"augment": "crop,rotate", "crop_padding": 4, "cutout_size": 16})
    with pytest.raises(ValueError, match="rotate"):
        augment.from_config(bad)


def test_compose_uses_independent_keys():
    def noise(images, key):
        return images + jax.random.normal(key, images.shape)

    twice = augment.compose(noise, noise)
    out = twice(jnp.zeros((1, 4)), jax.random.key(0))
    once = functools.partial(noise, key=jax.random.key(0))(jnp.zeros((1, 4)))
    assert not np.allclose(out, 2 * once)
