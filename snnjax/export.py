"""A converted SNN as a self-contained artefact: ``jax.export`` (StableHLO) plus a JSON sidecar.

:func:`export_snn` serializes ``images [b, H, W, C] -> logits [T, b, classes]`` (the spiking apply at
a fixed T, the variables baked in as constants, the batch size ``b`` symbolic) with ``jax.export``,
lowered for CPU and CUDA by default, and writes next to it ``<path>.json`` with what a user needs to run
it: the input shape and normalization, T, v0, the number of classes, the method and neuron, and where the
weights came from. :func:`load_exported` runs it in any process that has JAX, without the config or
the model code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.simulation import SpikingNetwork, spiking_apply

__all__ = ["ExportedSNN", "export_snn", "load_exported"]

FORMAT = "snnjax.exported_snn/1"


def export_snn(
    snn_model: SpikingNetwork,
    snn_variables: Mapping[str, Any],
    image_shape: Sequence[int],
    num_steps: int,
    path: str,
    metadata: Mapping[str, Any] | None = None,
    platforms: Sequence[str] = ("cpu", "cuda"),
) -> dict[str, Any]:
    """Writes ``path`` (the serialized ``jax.export.Exported``) and ``path + ".json"`` (the sidecar).

    Both files are written atomically; an existing file is replaced.

    Args:
      snn_model: from :func:`snnjax.spiking_model`.
      snn_variables: its variables (baked into the artefact).
      image_shape: ``(H, W, C)`` (or the per-example input shape) of the static input.
      num_steps: T, fixed in the artefact (it sets array shapes).
      path: where to write the artefact.
      metadata: extra JSON-serializable entries for the sidecar (e.g. normalization, source checkpoint).
      platforms: what the StableHLO is lowered for (``jax.export`` platforms names).

    Returns:
      The sidecar dict.
    """
    from snnjax.workdir import atomic_write

    image_shape = tuple(int(d) for d in image_shape)
    variables = jax.tree.map(jnp.asarray, snn_variables)

    def run(images):
        return spiking_apply(snn_model, variables, images, num_steps)

    (batch,) = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(run), platforms=tuple(platforms))(
        jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    )
    out = exported.out_avals[0]
    sidecar = {
        "format": FORMAT,
        "input_shape": ["batch", *image_shape],
        "input_dtype": "float32",
        "output_shape": [num_steps, "batch", *(int(d) for d in out.shape[2:])],
        "output": "per-step logits [T, batch, classes]; the prediction after t steps is argmax of the "
        "mean over steps 1..t",
        "T": int(num_steps),
        "v0": float(snn_model.v0),
        "neuron": snn_model.neuron,
        "snn_mode": snn_model.mode,
        "num_classes": int(out.shape[-1]),
        "platforms": list(exported.platforms),
        "jax_version": jax.__version__,
        **dict(metadata or {}),
    }
    data = exported.serialize()

    def write_artefact(temporary):
        with open(temporary, "wb") as f:
            f.write(data)

    def write_sidecar(temporary):
        with open(temporary, "w") as f:
            json.dump(sidecar, f, indent=2)

    atomic_write(path, write_artefact)
    atomic_write(path + ".json", write_sidecar)
    return sidecar


@dataclasses.dataclass(frozen=True)
class ExportedSNN:
    """A loaded artefact: call it on images ``[b, *input_shape]`` to get logits ``[T, b, classes]``.

    Attributes:
      exported: the deserialized ``jax.export.Exported``.
      metadata: the sidecar (see :func:`export_snn`).
    """

    exported: Any
    metadata: dict[str, Any]

    def __call__(self, images: jax.Array) -> jax.Array:
        """Per-step logits of the SNN for ``images`` (normalized as ``metadata["normalization"]`` says)."""
        expected = tuple(self.metadata["input_shape"][1:])
        if tuple(np.shape(images)[1:]) != expected or np.ndim(images) != len(expected) + 1:
            raise ValueError(
                f"images must have shape [batch, {', '.join(map(str, expected))}], got {np.shape(images)}."
            )
        return self.exported.call(jnp.asarray(images, jnp.float32))


def load_exported(path: str) -> ExportedSNN:
    """Loads an artefact written by :func:`export_snn` (needs only JAX and this module).

    Raises:
      FileNotFoundError: if the artefact or its sidecar is missing; ValueError: if either is not one.
    """
    for file in (path, path + ".json"):
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file} does not exist (export_snn writes the artefact and its .json sidecar)."
            )
    try:
        with open(path + ".json") as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}.json is not an snnjax sidecar: {error}.") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path}.json is not an snnjax sidecar (format {FORMAT!r} expected).")
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as error:  # flatbuffers raises several types for a damaged file
        raise ValueError(
            f"{path} is not a readable jax.export artefact ({type(error).__name__}: {error})."
        ) from None
    return ExportedSNN(exported, metadata)
