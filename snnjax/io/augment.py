"""Seeded on-device data augmentation as pure JAX functions on normalized NHWC batches.

Each augmentation is ``fn(images, key) -> images`` with ``images: [B, H, W, C]``; `compose`
chains them with independent keys. They run inside the jitted train step, keyed by the step number,
so a resumed run draws the same augmentations. As in the reference CIFAR pipeline: random crop with
4-pixel zero padding (in pixel space, i.e. a black border), horizontal flip, AutoAugment's CIFAR-10
policy (`snnjax.io.autoaugment`), then Cutout 16 applied after normalization (the hole is 0 in
normalized units).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from snnjax.io import autoaugment

__all__ = ["AUGMENTATIONS", "compose", "cutout", "from_config", "random_crop", "random_flip"]

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def random_crop(
    images: jax.Array, key: jax.Array, padding: int = 4, fill: Sequence[float] = (0.0,)
) -> jax.Array:
    """Pads each image by ``padding`` with the per-channel value ``fill`` and crops back at a random offset.

    Args:
      images: ``[B, H, W, C]``.
      key: PRNG key.
      padding: border width in pixels.
      fill: per-channel padding value ``[C]`` (or one value): a black pixel after normalization.

    Returns:
      ``[B, H, W, C]``.
    """
    batch, height, width, channels = images.shape
    fill = jnp.broadcast_to(jnp.asarray(fill, images.dtype), (channels,))
    canvas = jnp.broadcast_to(fill, (batch, height + 2 * padding, width + 2 * padding, channels))
    canvas = jax.lax.dynamic_update_slice(canvas, images, (0, padding, padding, 0))
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(canvas, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Flips each image left-right with probability ½. ``images: [B, H, W, C]``."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(jnp.broadcast_to(flip, images.shape), images[:, :, ::-1, :], images)


def cutout(images: jax.Array, key: jax.Array, size: int = 16) -> jax.Array:
    """Cutout (DeVries & Taylor): zeroes a ``size``×``size`` square (clipped at the border) per image.

    The square's centre is uniform over the image, as in the reference implementation.
    ``images: [B, H, W, C]``, already normalized (0 is the mean colour).
    """
    batch, height, width, _ = images.shape
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (batch, 1, 1, 1), 0, height)
    cx = jax.random.randint(key_x, (batch, 1, 1, 1), 0, width)
    ys = jnp.arange(height).reshape(1, -1, 1, 1)
    xs = jnp.arange(width).reshape(1, 1, -1, 1)
    half = size // 2
    hole = (ys >= cy - half) & (ys < cy + size - half) & (xs >= cx - half) & (xs < cx + size - half)
    return jnp.where(jnp.broadcast_to(hole, images.shape), jnp.zeros_like(images), images)


def compose(*augmentations: Augmentation) -> Augmentation:
    """Chains augmentations, each with its own key split from the given one."""

    def apply(images: jax.Array, key: jax.Array) -> jax.Array:
        for augmentation, subkey in zip(
            augmentations, jax.random.split(key, len(augmentations)), strict=True
        ):
            images = augmentation(images, subkey)
        return images

    return apply


AUGMENTATIONS = ("crop", "flip", "autoaugment", "cutout")


def from_config(
    config: ml_collections.ConfigDict,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> Augmentation | None:
    """The augmentation named by ``config.augment`` (comma-separated, applied in order), or None.

    Args:
      config: reads ``augment`` (e.g. ``"crop,flip,autoaugment,cutout"``, the reference CIFAR-10
        order), ``crop_padding`` and ``cutout_size``.
      mean: per-channel mean of the dataset's normalization (pixels in [0, 1]).
      std: per-channel std of the dataset's normalization.
    """
    names = [n.strip() for n in config.augment.split(",") if n.strip()]
    if not names:
        return None
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    table = {
        # A black pixel after normalization pads the crop, as torchvision pads the raw image with 0.
        "crop": functools.partial(random_crop, padding=config.crop_padding, fill=tuple(-mean / std)),
        "flip": random_flip,
        "autoaugment": functools.partial(
            autoaugment.cifar10_policy, mean=tuple(mean.tolist()), std=tuple(std.tolist())
        ),
        "cutout": functools.partial(cutout, size=config.cutout_size),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"config.augment names unknown {unknown}; allowed: {', '.join(AUGMENTATIONS)}.")
    return compose(*(table[n] for n in names))
