"""AutoAugment operations against Pillow (the reference's image library), and the policy's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from snnjax.io import autoaugment

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


SLOTS = sorted({(name, bin_index) for sub in autoaugment.CIFAR10_POLICY for _, name, bin_index in sub})


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_run_time_operation_equals_the_named_operation(sign):
    # apply_any_operation picks the operation at run time; under vmap it must give, image by image,
    # exactly what apply_operation gives for that (name, bin) of the policy. Both jitted, as the policy
    # runs: eager op-by-op dispatch rounds the enhancement blends differently from XLA's fused code.
    images = jnp.asarray(np.stack([photo(40 + i) for i in range(len(SLOTS))]), jnp.float32)
    ops = jnp.asarray([autoaugment.OPERATIONS.index(n) for n, _ in SLOTS], jnp.int32)
    parameters = jnp.asarray([autoaugment._slot_parameter(n, b) for n, b in SLOTS], jnp.float32)
    signs = jnp.full(len(SLOTS), sign, jnp.float32)
    got = jax.jit(jax.vmap(autoaugment.apply_any_operation))(images, ops, parameters, signs)
    named = jax.jit(autoaugment.apply_operation, static_argnums=(1, 2))
    for i, (name, bin_index) in enumerate(SLOTS):
        expected = named(images[i], name, bin_index, jnp.float32(sign))
        np.testing.assert_array_equal(got[i], expected, err_msg=f"{name} bin {bin_index} sign {sign}")


def per_image_switch_policy(images, key, mean, std):
    """Independent oracle: every sub-policy as its own branch of a per-image ``lax.switch`` of the named
    operations, drawing its keys as the policy documents (split per image, then per operation)."""

    def branch(sub_policy):
        def apply(image, k):
            op_keys = jax.random.split(k, 2)
            for (probability, name, bin_index), op_key in zip(sub_policy, op_keys, strict=True):
                use_key, sign_key = jax.random.split(op_key)
                sign = jnp.where(jax.random.bernoulli(sign_key), 1.0, -1.0)
                applied = autoaugment.apply_operation(image, name, bin_index, sign)
                image = jnp.where(jax.random.uniform(use_key) < probability, applied, image)
            return image

        return apply

    mean, std = jnp.asarray(mean).reshape(1, 1, 1, -1), jnp.asarray(std).reshape(1, 1, 1, -1)
    pixels = jnp.clip(jnp.floor((images * std + mean) * 255.0 + 0.5), 0.0, 255.0)
    branches = [branch(p) for p in autoaugment.CIFAR10_POLICY]
    choice_key, op_key = jax.random.split(key)
    choices = jax.random.randint(choice_key, (images.shape[0],), 0, len(branches))
    keys = jax.random.split(op_key, images.shape[0])
    out = jax.vmap(lambda image, c, k: jax.lax.switch(c, branches, image, k))(pixels, choices, keys)
    return (out / 255.0 - mean) / std


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_equals_a_per_image_switch_of_named_operations(seed):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    pixels = np.stack([photo(100 + s) for s in range(64)]).astype(np.float32)
    images = jnp.asarray((pixels / 255 - np.asarray(mean)) / np.asarray(std), jnp.float32)
    key = jax.random.key(seed)
    got = jax.jit(lambda x, k: autoaugment.cifar10_policy(x, k, mean, std))(images, key)
    expected = jax.jit(lambda x, k: per_image_switch_policy(x, k, mean, std))(images, key)
    np.testing.assert_array_equal(got, expected)
