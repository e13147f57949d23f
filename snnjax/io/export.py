"""A converted SNN as a self-contained artefact: ``jax.export`` (StableHLO) plus a JSON sidecar.

`export_snn` serializes ``images [b, H, W, C] -> logits [T, b, classes]`` (the spiking apply at
a fixed T, the variables baked in as constants, the batch size ``b`` symbolic) with ``jax.export``,
lowered for CPU and CUDA by default, and writes next to it ``<path>.json`` with what a user needs to run
it: the input shape and normalization, T, v0, the number of classes, the method and neuron, where the
weights came from, and the artefact's sha256. `import_snn` checks the sidecar against the
artefact and runs it in any process that has JAX, without the config or the model code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snnjax.conversion.simulation import SpikingNetwork, spiking_apply

__all__ = ["ExportedSNN", "export_snn", "import_snn"]

FORMAT = "snnjax.exported_snn/1"
# The sidecar fields export_snn writes that describe the artefact, and their JSON types.
FIELDS = {
    "input_shape": list,
    "input_dtype": str,
    "output_shape": list,
    "T": int,
    "num_classes": int,
    "v0": (int, float),
    "neuron": str,
    "snn_mode": str,
    "platforms": list,
}
# Every key export_snn writes itself: user metadata may not overwrite them.
RESERVED = ("format", *FIELDS, "output", "jax_version", "sha256")


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
      snn_model: from `snnjax.spiking_model`.
      snn_variables: its variables (baked into the artefact).
      image_shape: ``(H, W, C)`` (or the per-example input shape) of the static input.
      num_steps: T, fixed in the artefact (it sets array shapes).
      path: where to write the artefact.
      metadata: extra JSON-serializable entries for the sidecar (e.g. normalization, source checkpoint).
      platforms: what the StableHLO is lowered for (``jax.export`` platforms names).

    Returns:
      The sidecar dict.

    Raises:
      ValueError: if ``metadata`` holds a key export_snn writes itself (it would misdescribe the
        artefact).
    """
    from snnjax.io.files import atomic_write

    clashes = sorted(set(metadata or {}) & set(RESERVED))
    if clashes:
        raise ValueError(
            f"metadata keys {clashes} would overwrite the sidecar fields export_snn writes from the "
            "artefact itself; rename them."
        )
    image_shape = tuple(int(d) for d in image_shape)
    variables = jax.tree.map(jnp.asarray, snn_variables)

    def run(images):
        return spiking_apply(snn_model, variables, images, num_steps)

    (batch,) = jax.export.symbolic_shape("b")
    exported = jax.export.export(jax.jit(run), platforms=tuple(platforms))(
        jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    )
    out = exported.out_avals[0]
    data = exported.serialize()
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
        "sha256": hashlib.sha256(data).hexdigest(),  # import_snn refuses a damaged artefact by it
        **dict(metadata or {}),
    }

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
      metadata: the sidecar (see `export_snn`).
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


def import_snn(path: str) -> ExportedSNN:
    """Loads an artefact written by `export_snn` (needs only JAX and this module).

    The sidecar is checked against the artefact before anything runs: its fields (present, of the
    right JSON type), the checksum of the artefact's bytes (sidecars written before it was recorded
    load without it), and T, the input and output shapes, the dtype and the platforms against the
    artefact's own signature (``images [b, H, W, C] -> logits [T, b, classes]``).

    Args:
      path: the artefact; its sidecar is ``path + ".json"``.

    Returns:
      The artefact with the sidecar as its metadata.

    Raises:
      FileNotFoundError: if the artefact or its sidecar is missing.
      ValueError: if either is not one, or they do not belong together (naming the file and field).
    """
    sidecar_path = path + ".json"
    for file in (path, sidecar_path):
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file} does not exist (export_snn writes the artefact and its .json sidecar)."
            )
    try:
        with open(sidecar_path) as f:
            metadata = json.load(f)
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text
        raise ValueError(f"{sidecar_path} is not an snnjax sidecar: {error}.") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        what = f"format {metadata.get('format')!r}" if isinstance(metadata, dict) else type(metadata).__name__
        raise ValueError(
            f"{sidecar_path} is not an snnjax sidecar (a JSON object with format {FORMAT!r} expected, "
            f"got {what})."
        )
    with open(path, "rb") as f:
        data = f.read()
    # Checked before deserializing: flatbuffers accepts most damaged bytes, and running a damaged
    # StableHLO module can crash the process.
    digest = metadata.get("sha256")
    if digest is not None and digest != hashlib.sha256(data).hexdigest():
        raise ValueError(
            f"{path} does not match the sha256 recorded in {sidecar_path}: the artefact is damaged or the "
            "sidecar belongs to another export. Re-export both with snnjax.export_snn."
        )
    try:
        exported = jax.export.deserialize(bytearray(data))
        avals = exported.in_avals, exported.out_avals
    except Exception as error:  # flatbuffers raises several types for a damaged file
        raise ValueError(
            f"{path} is not a readable jax.export artefact ({type(error).__name__}: {error})."
        ) from None
    _check_sidecar(metadata, sidecar_path)
    _check_against_artefact(metadata, *avals, exported.platforms, path, sidecar_path)
    return ExportedSNN(exported, metadata)


def _check_sidecar(metadata: dict[str, Any], sidecar_path: str) -> None:
    """Refuses a sidecar missing a field of `FIELDS` or holding one of another JSON type."""
    for field, kind in FIELDS.items():
        if field not in metadata:
            raise ValueError(
                f"{sidecar_path} lacks the field {field!r} (export_snn writes it); re-export with "
                "snnjax.export_snn."
            )
        value = metadata[field]
        if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is not a number here
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ValueError(
                f"{sidecar_path}: field {field!r} is {value!r} ({type(value).__name__}), expected {names}."
            )


def _signature_shape(aval) -> list:
    """An abstract value's shape as the sidecar writes it: the symbolic batch axis as ``"batch"``."""
    return [d if isinstance(d, int) else "batch" for d in aval.shape]


def _check_against_artefact(metadata, in_avals, out_avals, platforms, path, sidecar_path) -> None:
    """Refuses a sidecar whose T, shapes, dtype or platforms are not the artefact's.

    ``in_avals``: the artefact's inputs (one ``[b, *image_shape]``); ``out_avals``: its outputs (one
    ``[T, b, classes]``), read from the artefact itself.
    """
    if len(in_avals) != 1 or len(out_avals) != 1 or len(out_avals[0].shape) < 3:
        raise ValueError(
            f"{path} is not an export_snn artefact: it maps {len(in_avals)} input(s) to outputs "
            f"{[_signature_shape(a) for a in out_avals]}, not images to logits [T, batch, classes]."
        )
    images, logits = in_avals[0], out_avals[0]
    stated_against_actual = [
        ("T", metadata["T"], logits.shape[0]),
        ("input_shape", metadata["input_shape"], _signature_shape(images)),
        ("input_dtype", metadata["input_dtype"], str(images.dtype)),
        ("output_shape", metadata["output_shape"], _signature_shape(logits)),
        ("num_classes", metadata["num_classes"], logits.shape[-1]),
        ("platforms", metadata["platforms"], list(platforms)),
    ]
    for field, stated, actual in stated_against_actual:
        if stated != actual:
            raise ValueError(
                f"{sidecar_path} says {field} = {stated!r} but the artefact {path} has {actual!r} (its "
                f"signature: {_signature_shape(images)} -> {_signature_shape(logits)} = [T, batch, "
                "classes]); the sidecar belongs to another export. Re-export both with snnjax.export_snn."
            )
