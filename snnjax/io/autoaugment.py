"""AutoAugment's CIFAR-10 policy (Cubuk et al., 2019) as a pure, vectorised JAX function.

The reference training code applies it to PIL images (pixel values 0..255) between the random flip and
normalization; here it runs on device on normalized batches, so it maps back to pixel space first
(``mean``/``std``), applies one randomly chosen sub-policy per image (each of its two operations with
its probability, magnitudes from the usual 10-bin ranges, random signs), rounds to whole pixel values
as PIL does, and normalizes again. Operations follow Pillow's definitions (tested against Pillow);
geometric operations use nearest-neighbour sampling and fill with grey (128), where the reference
uses bicubic sampling for shears.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["CIFAR10_POLICY", "OPERATIONS", "apply_any_operation", "apply_operation", "cifar10_policy"]

# (probability, operation, magnitude bin) pairs: the published CIFAR-10 policy.
CIFAR10_POLICY = (
    ((0.1, "invert", 7), (0.2, "contrast", 6)),
    ((0.7, "rotate", 2), (0.3, "translate_x", 9)),
    ((0.8, "sharpness", 1), (0.9, "sharpness", 3)),
    ((0.5, "shear_y", 8), (0.7, "translate_y", 9)),
    ((0.5, "autocontrast", 8), (0.9, "equalize", 2)),
    ((0.2, "shear_y", 7), (0.3, "posterize", 7)),
    ((0.4, "color", 3), (0.6, "brightness", 7)),
    ((0.3, "sharpness", 9), (0.7, "brightness", 9)),
    ((0.6, "equalize", 5), (0.5, "equalize", 1)),
    ((0.6, "contrast", 7), (0.6, "sharpness", 5)),
    ((0.7, "color", 7), (0.5, "translate_x", 8)),
    ((0.3, "equalize", 7), (0.4, "autocontrast", 8)),
    ((0.4, "translate_y", 3), (0.2, "sharpness", 6)),
    ((0.9, "brightness", 6), (0.2, "color", 8)),
    ((0.5, "solarize", 2), (0.0, "invert", 3)),
    ((0.2, "equalize", 0), (0.6, "autocontrast", 0)),
    ((0.2, "equalize", 8), (0.6, "equalize", 4)),
    ((0.9, "color", 9), (0.6, "equalize", 6)),
    ((0.8, "autocontrast", 4), (0.2, "solarize", 8)),
    ((0.1, "brightness", 3), (0.7, "color", 0)),
    ((0.4, "solarize", 5), (0.9, "autocontrast", 3)),
    ((0.9, "translate_y", 9), (0.7, "translate_y", 9)),
    ((0.9, "autocontrast", 2), (0.8, "solarize", 3)),
    ((0.8, "equalize", 8), (0.1, "invert", 3)),
    ((0.7, "translate_y", 9), (0.9, "autocontrast", 1)),
)

GREY = 128.0


def _grayscale(image: jax.Array) -> jax.Array:
    """Pillow's L conversion (ITU-R 601-2 luma, rounded), shape ``[H, W, 1]``."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return jnp.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)[..., None]


def _blend(degenerate: jax.Array, image: jax.Array, factor: jax.Array) -> jax.Array:
    """Pillow's ImageEnhance: ``degenerate + factor·(image − degenerate)``, clipped to 0..255."""
    return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _affine(image: jax.Array, matrix: jax.Array) -> jax.Array:
    """Samples ``image`` at ``matrix @ (x, y, 1)`` for every output pixel (nearest, grey outside).

    ``matrix`` is Pillow's AFFINE data ``(a, b, c, d, e, f)``: input = (a x + b y + c, d x + e y + f),
    with pixel centres at ``+0.5``.
    """
    height, width, _ = image.shape
    ys, xs = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
    a, b, c, d, e, f = (matrix[i] for i in range(6))
    src_x = jnp.floor(a * xs + b * ys + c)
    src_y = jnp.floor(d * xs + e * ys + f)
    inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    yi = jnp.clip(src_y, 0, height - 1).astype(jnp.int32)
    xi = jnp.clip(src_x, 0, width - 1).astype(jnp.int32)
    sampled = image[yi, xi]
    return jnp.where(inside[..., None], sampled, GREY)


def _rotate_matrix(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """Pillow's ``Image.rotate`` (counter-clockwise, about the centre) as an inverse affine map."""
    angle = -jnp.deg2rad(degrees)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * cx - b * cy
    f = cy - d * cx - e * cy
    return jnp.stack([a, b, c, d, e, f])


def _equalize_channel(channel: jax.Array) -> jax.Array:
    """Pillow's ``ImageOps.equalize`` for one channel of whole pixel values."""
    values = channel.astype(jnp.int32).reshape(-1)
    histogram = jnp.zeros(256, jnp.int32).at[values].add(1)
    last = jnp.max(jnp.where(histogram > 0, jnp.arange(256), -1))
    step = (values.size - histogram[last]) // 255
    safe_step = jnp.maximum(step, 1)
    lut = (step // 2 + jnp.cumsum(histogram) - histogram) // safe_step
    lut = jnp.clip(lut, 0, 255)
    return jnp.where(step > 0, lut[values].reshape(channel.shape), channel)


def _autocontrast_channel(channel: jax.Array) -> jax.Array:
    """Pillow's ``ImageOps.autocontrast`` (cutoff 0) for one channel."""
    low, high = jnp.min(channel), jnp.max(channel)
    # Pillow truncates (x − lo)·255/(hi − lo) computed in float64. The exact value is a multiple of
    # 1/(hi − lo) >= 1/255, so a 1e-3 nudge makes float32 land on the same side of every integer.
    stretched = (channel - low) * 255.0 / jnp.maximum(high - low, 1.0)
    stretched = jnp.clip(jnp.floor(stretched + 1e-3), 0.0, 255.0)
    return jnp.where(high > low, stretched, channel)


def _sharpness_degenerate(image: jax.Array) -> jax.Array:
    """Pillow's SMOOTH filter of ``image`` (rounded), the border left as it is."""
    kernel = jnp.array([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)))
    height, width, _ = image.shape
    smooth = sum(kernel[i, j] * padded[i : i + height, j : j + width] for i in range(3) for j in range(3))
    smooth = jnp.floor(smooth + 0.5)
    border = jnp.zeros((height, width, 1), bool).at[1:-1, 1:-1].set(True)
    return jnp.where(border, smooth, image)


def _sharpness(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Pillow's ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image (border unchanged)."""
    return _blend(_sharpness_degenerate(image), image, factor)


def _magnitude(low: float, high: float, bin_index: int) -> float:
    return low + (high - low) * bin_index / 9.0


# Magnitude ranges of the 10 bins; and the operation families the vectorised policy computes once per
# image and stage (with per-image parameters) before picking the image's operation.
_AFFINE_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
_ENHANCE_OPS = ("color", "contrast", "brightness", "sharpness")
_RANGES = {
    "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3), "rotate": (0.0, 30.0),
    "translate_x": (0.0, 150.0 / 331.0), "translate_y": (0.0, 150.0 / 331.0),
    "color": (0.0, 0.9), "contrast": (0.0, 0.9), "brightness": (0.0, 0.9), "sharpness": (0.0, 0.9),
    "solarize": (256.0, 0.0),
}  # fmt: skip


def _slot_parameter(name: str, bin_index: int) -> float:
    """The number ``apply_operation`` derives from ``(name, bin_index)``: magnitude, or posterize's step."""
    if name == "posterize":
        return float(2 ** (8 - round(8 - 4 * bin_index / 9)))
    if name in _RANGES:
        return _magnitude(*_RANGES[name], bin_index)
    return 0.0  # the operation takes no parameter


def apply_operation(image: jax.Array, name: str, bin_index: int, sign: jax.Array) -> jax.Array:
    """Applies one named AutoAugment operation to an image of whole pixel values.

    Args:
      image: ``[H, W, 3]`` float, values 0..255.
      name: one of ``OPERATIONS``.
      bin_index: magnitude bin 0..9.
      sign: ±1 for the operations with a direction (shear, translate, rotate, enhancements).

    Returns:
      ``[H, W, 3]`` float, whole values 0..255.
    """
    height, width, _ = image.shape
    parameter = _slot_parameter(name, bin_index)
    signed = sign * parameter
    if name in ("shear_x", "shear_y", "translate_x", "translate_y"):
        zero, one = jnp.zeros_like(signed), jnp.ones_like(signed)
        # The reference expresses translation as a fraction (0..150/331) of the image size.
        matrix = {
            "shear_x": [one, signed, zero, zero, one, zero],
            "shear_y": [one, zero, zero, signed, one, zero],
            "translate_x": [one, zero, signed * width, zero, one, zero],
            "translate_y": [one, zero, zero, zero, one, signed * height],
        }[name]
        return _affine(image, jnp.stack(matrix))
    if name == "rotate":
        return _affine(image, _rotate_matrix(signed, height, width))
    if name in ("color", "contrast", "brightness", "sharpness"):
        factor = 1.0 + signed
        if name == "color":
            return jnp.floor(_blend(_grayscale(image), image, factor) + 0.5)
        if name == "contrast":
            mean = jnp.floor(jnp.mean(_grayscale(image)) + 0.5)
            return jnp.floor(_blend(mean, image, factor) + 0.5)
        if name == "brightness":
            return jnp.floor(_blend(jnp.zeros_like(image), image, factor) + 0.5)
        return jnp.floor(_sharpness(image, factor) + 0.5)
    if name == "posterize":  # parameter: 2^(8 − bits), bits = round(8 − 4·bin/9)
        return jnp.floor(image / parameter) * parameter
    if name == "solarize":  # parameter: the threshold
        return jnp.where(image >= parameter, 255.0 - image, image)
    if name == "autocontrast":
        return jax.vmap(_autocontrast_channel, in_axes=-1, out_axes=-1)(image)
    if name == "equalize":
        return jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(image)
    if name == "invert":
        return 255.0 - image
    raise ValueError(f"unknown AutoAugment operation {name!r}; known: {', '.join(OPERATIONS)}.")


OPERATIONS = (
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "color", "posterize",
    "solarize", "contrast", "sharpness", "brightness", "autocontrast", "equalize", "invert",
)  # fmt: skip


def apply_any_operation(image: jax.Array, op: jax.Array, parameter: jax.Array, sign: jax.Array) -> jax.Array:
    """`apply_operation` with the operation chosen at run time, bit for bit.

    Computes one representative of each family (one affine resampling for the five geometric
    operations, one blend for the four enhancements, and posterize, solarize, autocontrast, equalize,
    invert) and picks by ``op``: under ``vmap`` this costs one pass per family instead of one per
    operation of every sub-policy, which a ``vmap``-ed ``lax.switch`` pays.

    Args:
      image: ``[H, W, 3]`` float, whole values 0..255.
      op: int32 scalar, an index into ``OPERATIONS``.
      parameter: float32 scalar, ``_slot_parameter(OPERATIONS[op], bin_index)``.
      sign: ±1.

    Returns:
      ``[H, W, 3]``, equal to ``apply_operation(image, OPERATIONS[op], bin_index, sign)``.
    """
    height, width, _ = image.shape
    is_op = {name: op == OPERATIONS.index(name) for name in OPERATIONS}
    signed = sign * parameter
    zero, one = jnp.zeros_like(signed), jnp.ones_like(signed)
    matrix = _rotate_matrix(signed, height, width)
    for name, row in (
        ("shear_x", [one, signed, zero, zero, one, zero]),
        ("shear_y", [one, zero, zero, signed, one, zero]),
        ("translate_x", [one, zero, signed * width, zero, one, zero]),
        ("translate_y", [one, zero, zero, zero, one, signed * height]),
    ):
        matrix = jnp.where(is_op[name], jnp.stack(row), matrix)
    gray = _grayscale(image)
    mean = jnp.floor(jnp.mean(gray) + 0.5)
    degenerate = jnp.where(
        is_op["color"],
        gray,
        jnp.where(is_op["contrast"], mean, jnp.where(is_op["brightness"], 0.0, _sharpness_degenerate(image))),
    )
    families = (  # (member operations, result)
        (_AFFINE_OPS, _affine(image, matrix)),
        (_ENHANCE_OPS, jnp.floor(_blend(degenerate, image, 1.0 + signed) + 0.5)),
        (("posterize",), jnp.floor(image / parameter) * parameter),
        (("solarize",), jnp.where(image >= parameter, 255.0 - image, image)),
        (("autocontrast",), jax.vmap(_autocontrast_channel, in_axes=-1, out_axes=-1)(image)),
        (("equalize",), jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(image)),
    )
    out = 255.0 - image  # invert
    for members, result in families:
        out = jnp.where(jnp.any(jnp.stack([is_op[name] for name in members])), result, out)
    return out


def cifar10_policy(
    images: jax.Array, key: jax.Array, mean: Sequence[float], std: Sequence[float]
) -> jax.Array:
    """Applies the CIFAR-10 AutoAugment policy to a normalized batch.

    Each image draws one sub-policy and then, for each of its two operations, a use (with the
    operation's probability) and a sign; both operations run through `apply_any_operation`.

    Args:
      images: ``[B, H, W, 3]``, normalized as ``(pixel/255 − mean)/std``.
      key: PRNG key.
      mean: per-channel mean used for the normalization.
      std: per-channel std used for the normalization.

    Returns:
      ``[B, H, W, 3]``, normalized the same way.
    """
    mean = jnp.asarray(mean, images.dtype).reshape(1, 1, 1, -1)
    std = jnp.asarray(std, images.dtype).reshape(1, 1, 1, -1)
    pixels = jnp.clip(jnp.floor((images * std + mean) * 255.0 + 0.5), 0.0, 255.0)
    # [sub-policy, stage] tables of the operation index, its parameter and its probability.
    ops = jnp.asarray([[OPERATIONS.index(n) for _, n, _ in p] for p in CIFAR10_POLICY], jnp.int32)
    parameters = jnp.asarray([[_slot_parameter(n, b) for _, n, b in p] for p in CIFAR10_POLICY], jnp.float32)
    probabilities = jnp.asarray([[q for q, _, _ in p] for p in CIFAR10_POLICY], jnp.float32)
    choice_key, op_key = jax.random.split(key)
    choices = jax.random.randint(choice_key, (images.shape[0],), 0, len(CIFAR10_POLICY))

    def one(image, choice, k):
        for stage, stage_key in enumerate(jax.random.split(k, 2)):
            use_key, sign_key = jax.random.split(stage_key)
            sign = jnp.where(jax.random.bernoulli(sign_key), 1.0, -1.0)
            applied = apply_any_operation(image, ops[choice, stage], parameters[choice, stage], sign)
            image = jnp.where(jax.random.uniform(use_key) < probabilities[choice, stage], applied, image)
        return image

    out = jax.vmap(one)(pixels, choices, jax.random.split(op_key, images.shape[0]))
    return ((out / 255.0 - mean) / std).astype(images.dtype)
