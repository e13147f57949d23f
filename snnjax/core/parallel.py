"""Data parallelism with a 1-D device mesh and NamedSharding (no pmap).

Batches are split along axis 0 over the ``"data"`` mesh axis; parameters are replicated. The same code
runs on one device or many.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["data_mesh", "pad_batch", "padded_batches", "replicate", "shard_batch"]

DATA_AXIS = "data"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices)."""
    devices = devices if devices is not None else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Splits each array along axis 0 over the mesh's data axis.

    Raises:
      ValueError: if an array's leading size is not divisible by the number of devices.
    """
    size = mesh.shape[DATA_AXIS]
    for array in arrays:
        if array.shape[0] % size:
            raise ValueError(
                f"batch size {array.shape[0]} is not divisible by the {size} devices of the data "
                "mesh; change config.batch_size / config.eval_batch_size."
            )
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    if jax.process_count() == 1:
        return tuple(jax.device_put(a, sharding) for a in arrays)
    # Multi-host: every process holds the same global batch (same seed, same permutation) and
    # contributes the rows its devices own; assumes devices are ordered process by process.
    # Not exercised by the tests (one process); see README "Several hosts".
    count, index = jax.process_count(), jax.process_index()
    return tuple(
        jax.make_array_from_process_local_data(
            sharding, a[index * (len(a) // count) : (index + 1) * (len(a) // count)], a.shape
        )
        for a in arrays
    )


def pad_batch(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pads a partial batch with zeros to ``batch_size`` (one compiled shape for every batch).

    Returns:
      ``(images [batch_size, ...], labels [batch_size], mask [batch_size] bool)``; ``mask`` is False on
      padding.
    """
    pad = batch_size - len(images)
    mask = np.arange(batch_size) < len(images)
    if pad:
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    return images, labels, mask


def padded_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields every example once in fixed-size batches, padding the last one (see `pad_batch`).

    Args:
      images: ``[N, ...]``.
      labels: ``[N]``.
      batch_size: size of every yielded batch.
    """
    for start in range(0, len(images), batch_size):
        yield pad_batch(images[start : start + batch_size], labels[start : start + batch_size], batch_size)
