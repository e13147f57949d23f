"""AutoAugment operations against Pillow (the reference's image library), and the policy's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from snnjax import autoaugment

FILL = (128, 128, 128)


def photo(seed):
    """A blocky random RGB image (so histogram ops see repeated values), uint8 [32, 32, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (8, 8, 3))
    noisy = np.kron(coarse, np.ones((4, 4, 1))) + rng.integers(-30, 30, (32, 32, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def ours(image, name, bin_index, sign=1.0):
    out = autoaugment.apply_operation(jnp.asarray(image, jnp.float32), name, bin_index, jnp.float32(sign))
    return np.asarray(out)


def pil(image, fn):
    return np.asarray(fn(Image.fromarray(image)), np.float32)


def mag(low, high, bin_index):
    return low + (high - low) * bin_index / 9


def affine(data):
    return lambda im: im.transform(im.size, Image.AFFINE, data, Image.NEAREST, fillcolor=FILL)


EXACT = {
    "invert": lambda b, s: ImageOps.invert,
    "posterize": lambda b, s: lambda im: ImageOps.posterize(im, round(8 - 4 * b / 9)),
    "solarize": lambda b, s: lambda im: ImageOps.solarize(im, mag(256, 0, b)),
    "equalize": lambda b, s: ImageOps.equalize,
    "translate_x": lambda b, s: affine((1, 0, s * mag(0, 150 / 331, b) * 32, 0, 1, 0)),
    "translate_y": lambda b, s: affine((1, 0, 0, 0, 1, s * mag(0, 150 / 331, b) * 32)),
}
ENHANCE = {
    "color": ImageEnhance.Color,
    "contrast": ImageEnhance.Contrast,
    "brightness": ImageEnhance.Brightness,
    "sharpness": ImageEnhance.Sharpness,
}


@pytest.mark.parametrize("name", list(EXACT))
@pytest.mark.parametrize("bin_index, sign", [(2, 1.0), (7, -1.0), (9, 1.0)])
def test_pixel_exact_operations_match_pillow(name, bin_index, sign):
    image = photo(bin_index)
    expected = pil(image, EXACT[name](bin_index, sign))
    np.testing.assert_array_equal(ours(image, name, bin_index, sign), expected)


@pytest.mark.parametrize("name", list(ENHANCE))
@pytest.mark.parametrize("bin_index, sign", [(3, 1.0), (6, -1.0), (9, 1.0)])
def test_enhancements_match_pillow_to_rounding(name, bin_index, sign):
    image = photo(10 + bin_index)
    factor = 1 + sign * mag(0, 0.9, bin_index)
    expected = pil(image, lambda im: ENHANCE[name](im).enhance(factor))
    difference = np.abs(ours(image, name, bin_index, sign) - expected)
    assert difference.max() <= 1.0  # rounding of the blend
    assert difference.mean() < 0.6


@pytest.mark.parametrize("seed", [2, 7, 9])
def test_autocontrast_matches_pillow_but_for_its_float_artifacts(seed):
    # Pillow computes ix·scale + offset in float64 and truncates, so the channel maximum sometimes
    # becomes 254 (255 − 1e-14); we compute the exact value.
    image = photo(seed)
    difference = np.abs(ours(image, "autocontrast", 0) - pil(image, ImageOps.autocontrast))
    assert difference.max() <= 1.0 and (difference > 0).mean() < 0.01


GEOMETRIC = {
    "rotate": lambda b, s: lambda im: im.rotate(s * mag(0, 30, b), resample=Image.NEAREST, fillcolor=FILL),
    "shear_x": lambda b, s: affine((1, s * mag(0, 0.3, b), 0, 0, 1, 0)),
    "shear_y": lambda b, s: affine((1, 0, 0, s * mag(0, 0.3, b), 1, 0)),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("bin_index, sign", [(2, 1.0), (5, -1.0), (9, 1.0)])
def test_geometric_operations_match_pillow_up_to_sampling_ties(name, bin_index, sign):
    # Pillow maps coordinates in float64, we in float32: where a source coordinate is within rounding
    # of a whole pixel the nearest neighbour may differ by one pixel; elsewhere they must agree.
    image = photo(20 + bin_index)
    expected = pil(image, GEOMETRIC[name](bin_index, sign))
    same = np.all(ours(image, name, bin_index, sign) == expected, axis=-1)
    assert same.mean() > 0.95


def test_policy_keeps_normalization_shape_and_seed():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    pixels = np.stack([photo(s) for s in range(16)]).astype(np.float32)
    images = jnp.asarray((pixels / 255 - np.asarray(mean)) / np.asarray(std), jnp.float32)
    fn = jax.jit(lambda x, k: autoaugment.cifar10_policy(x, k, mean, std))
    out = fn(images, jax.random.key(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(out, fn(images, jax.random.key(0)))
    back = np.asarray(out) * np.asarray(std) + np.asarray(mean)
    np.testing.assert_allclose(back * 255, np.round(back * 255), atol=2e-3)  # whole pixel values
    changed = np.any(np.abs(np.asarray(out) - np.asarray(images)) > 1e-3, axis=(1, 2, 3))
    assert 0.3 < changed.mean() <= 1.0  # most sub-policies change the image most of the time


def test_unknown_operation_rejected():
    with pytest.raises(ValueError, match="unknown AutoAugment operation"):
        ours(photo(0), "mixup", 3)
