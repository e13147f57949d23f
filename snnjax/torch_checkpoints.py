"""Reading the reference repositories' PyTorch checkpoints into snnjax variables.

``read_torch_checkpoint`` reads a ``torch.save`` file (the zip format of PyTorch ≥ 1.6) **without
PyTorch and without executing pickled code**: its unpickler resolves only the handful of globals a
tensor state_dict needs (tensor rebuild functions, storage types, ``OrderedDict``) to local,
side-effect-free stand-ins, and refuses any other global with an error.

``from_torch_state_dict`` maps the layouts of the QCFS code (the original
``putshua/SNN_conversion_QCFS``, whose layout the SlipReLU code shares, and the revised
``putshua/ANN_SNN_QCFS``) for VGG-16 and ResNet-18/20/34 onto the matching snnjax model (layouts
learned from the published model definitions; no code copied): conv ``OIHW → HWIO``, linear
``(out, in) → (in, out)``, the NCHW flatten order of VGG's first linear layer, BatchNorm weight / bias /
running statistics, and each activation's ``up`` (original) or ``thresh`` (revised) → that layer's λ.
"""

from __future__ import annotations

import collections
import functools
import io
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax.activations import qcfs
from snnjax.layers import ThresholdActivation
from snnjax.models import create_model

__all__ = ["LAYOUTS", "TorchLayout", "from_torch_state_dict", "read_torch_checkpoint"]

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    """One storage of the archive: its element dtype, its name in the archive and its raw bytes."""

    def __init__(self, dtype: np.dtype, name: str, raw: bytes):
        self.dtype, self.name, self.raw = dtype, name, raw


class _TensorRecord:
    """What a ``_rebuild_tensor_v2`` call in the pickle asks for; checked and built by :func:`_build`.

    Nothing is read from the storage while unpickling: the arguments are only recorded, so that each
    can be checked with the state_dict key it belongs to named in the error.
    """

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2`` stand-in: records the request (see :func:`_build`)."""
    return _TensorRecord(storage, offset, size, stride)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _build(record: _TensorRecord, key: str, path: str) -> np.ndarray:
    """The array a tensor record describes, after checking that it lies inside its storage.

    Raises:
      ValueError: naming ``key`` and ``path``, for a storage whose byte length is not a whole number
        of elements, sizes/strides/offset that are not non-negative ints, mismatched size and stride
        lengths, an element outside the storage, or more elements than the storage holds.
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{path}: tensor {key!r} {reason}; the file is corrupt or was crafted.")

    storage = record.storage
    if not isinstance(storage, _Storage):
        raise refuse("has no storage from the archive")
    itemsize = storage.dtype.itemsize
    if len(storage.raw) % itemsize:
        raise refuse(
            f"has a storage ({storage.name}) of {len(storage.raw)} bytes, not a whole number of "
            f"{storage.dtype} elements"
        )
    count = len(storage.raw) // itemsize
    offset, size, stride = record.offset, record.size, record.stride
    if not (isinstance(size, tuple | list) and isinstance(stride, tuple | list)):
        raise refuse(f"has size {size!r} / stride {stride!r}, expected tuples")
    if not all(_is_int(v) and v >= 0 for v in (offset, *size, *stride)):
        raise refuse(
            f"has offset {offset!r}, size {tuple(size)!r}, stride {tuple(stride)!r}: all must be ints >= 0"
        )
    if len(size) != len(stride):
        raise refuse(f"has {len(size)} sizes but {len(stride)} strides")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= count:
        raise refuse(
            f"reaches element {last} (offset {offset}, size {tuple(size)}, stride {tuple(stride)}) of a "
            f"storage ({storage.name}) that holds {count}"
        )
    if numel > count:  # only overlapping (e.g. expanded, stride 0) views can do this
        raise refuse(
            f"has {numel} elements but its storage ({storage.name}) holds {count}; save tensor.clone() "
            "instead of an expanded view"
        )
    values = np.frombuffer(storage.raw, storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, *_):
    return data


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Accepts tensors and plain containers only; everything else is refused by name."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a weights file may hold only tensors and plain "
            "containers (this one would run code while loading)."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if len(pid) < 3:
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        name = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(name)
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle refers to storage {name!r}, which the archive lacks"
            ) from None
        return _Storage(np.dtype(storage_type.dtype).newbyteorder("<"), name, raw)


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``.pth`` file's state_dict as NumPy arrays, executing no pickled code.

    Args:
      path: a file written by ``torch.save`` (zip format) holding a state_dict, or a dict holding one
        under ``"state_dict"``, ``"model"`` or ``"net"`` (other entries are ignored).

    Returns:
      ``{"layer1.0.weight": array, ...}`` in the file's order; a leading ``"module."`` (DataParallel)
      is stripped.

    Raises:
      pickle.UnpicklingError: if the file refers to anything but tensors and plain containers.
      ValueError: if the file is not a zip-format checkpoint, is damaged, holds no state_dict, or a
        tensor does not lie inside its storage (the key is named).
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format PyTorch checkpoint (torch.save since PyTorch 1.6); re-save it "
            "with a current PyTorch."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if len(pickles) != 1:
                raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}.")
            prefix = pickles[0][: -len("data.pkl")]
            obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix).load()
    except (pickle.UnpicklingError, ValueError):
        raise
    except Exception as error:  # a damaged zip or pickle fails in many ways (EOF, bad CRC, bad opcodes)
        raise ValueError(f"{path}: damaged checkpoint ({type(error).__name__}: {error}).") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds no state_dict of tensors.")
    arrays = {str(k): _build(v, str(k), path) for k, v in obj.items() if isinstance(v, _TensorRecord)}
    if not arrays:
        raise ValueError(f"{path} holds no state_dict of tensors.")
    return {re.sub(r"^module\.", "", key): value for key, value in arrays.items()}


class TorchLayout:
    """Key names of one reference repository.

    Attributes:
      threshold: the activation's λ parameter name (``up`` or ``thresh``).
      block_activation: the name of a ResNet block's output activation (``relu`` or ``act``).
    """

    def __init__(self, threshold: str, block_activation: str):
        self.threshold, self.block_activation = threshold, block_activation


LAYOUTS = {
    # putshua/SNN_conversion_QCFS (and HaiyanJiang/SNN_Conversion_unified): ReLUs replaced by a
    # module with parameter `up`, keeping the nn.Sequential indices.
    "qcfs_original": TorchLayout(threshold="up", block_activation="relu"),
    # putshua/ANN_SNN_QCFS: `IF` modules with parameter `thresh`; a block's output activation `act`.
    "qcfs_revised": TorchLayout(threshold="thresh", block_activation="act"),
}

_VGG16_GROUPS = (2, 2, 3, 3, 3)  # convs per pooling stage


def _vgg16_keys(layout: TorchLayout) -> list[tuple[tuple[str, ...], str, str]]:
    """``[(snnjax path, torch prefix, kind)]``; kind: conv | bn | act | dense."""
    keys, index = [], 0
    for group, count in enumerate(_VGG16_GROUPS):
        for k in range(count):
            torch_prefix = f"layer{group + 1}.{4 * k}"
            keys.append(((f"conv_bn{index}", "conv"), torch_prefix, "conv"))
            keys.append(((f"conv_bn{index}", "bn"), f"layer{group + 1}.{4 * k + 1}", "bn"))
            keys.append(((f"act{index}",), f"layer{group + 1}.{4 * k + 2}", "act"))
            index += 1
    keys += [
        (("fc0",), "classifier.1", "dense_flatten"),
        (("fc_act0",), "classifier.2", "act"),
        (("fc1",), "classifier.4", "dense"),
        (("fc_act1",), "classifier.5", "act"),
        (("head",), "classifier.7", "dense"),
    ]
    return keys


def _resnet_keys(stage_sizes, layout: TorchLayout) -> list[tuple[tuple[str, ...], str, str]]:
    keys = [
        (("stem", "conv"), "conv1.0", "conv"),
        (("stem", "bn"), "conv1.1", "bn"),
        (("stem_act",), "conv1.2", "act"),
    ]
    for stage, blocks in enumerate(stage_sizes):
        for block in range(blocks):
            ours, theirs = f"stage{stage}_block{block}", f"conv{stage + 2}_x.{block}"
            keys += [
                ((ours, "conv_bn1", "conv"), f"{theirs}.residual_function.0", "conv"),
                ((ours, "conv_bn1", "bn"), f"{theirs}.residual_function.1", "bn"),
                ((ours, "act1"), f"{theirs}.residual_function.2", "act"),
                ((ours, "conv_bn2", "conv"), f"{theirs}.residual_function.3", "conv"),
                ((ours, "conv_bn2", "bn"), f"{theirs}.residual_function.4", "bn"),
                ((ours, "shortcut", "conv"), f"{theirs}.shortcut.0", "conv"),
                ((ours, "shortcut", "bn"), f"{theirs}.shortcut.1", "bn"),
                ((ours, "act2"), f"{theirs}.{layout.block_activation}", "act"),
            ]
    return [*keys, (("head",), "fc", "dense")]


_RESNET_STAGES = {"resnet18": (2, 2, 2, 2), "resnet20": (3, 3, 3), "resnet34": (3, 4, 6, 3)}


def from_torch_state_dict(
    state_dict: Mapping[str, np.ndarray],
    arch: str,
    num_classes: int,
    layout: str = "qcfs_revised",
    image_size: int = 32,
    in_channels: int = 3,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Maps a reference state_dict onto the variables of ``snnjax.create_model(arch, ...)``.

    Args:
      state_dict: from :func:`read_torch_checkpoint` (or ``{k: v.numpy()}`` of a torch state_dict).
      arch: ``vgg16``, ``resnet18``, ``resnet20`` or ``resnet34``.
      num_classes: the classifier's size.
      layout: a key of :data:`LAYOUTS`.
      image_size: input side (32 for CIFAR, 224 for ImageNet); fixes VGG's flatten size.
      in_channels: input channels (3 for colour images).

    Returns:
      ``(variables, report)``: ``{"params", "batch_stats"}`` for a model built with a
      :class:`~snnjax.layers.ThresholdActivation` (identity parameterization, one λ per layer) and
      :class:`~snnjax.layers.BatchNorm`; ``report = {"unmapped": [...], "ignored": [...]}`` names the
      torch keys that were not used (``ignored``: BatchNorm's ``num_batches_tracked``).

    Raises:
      ValueError: for an unknown arch or layout, a missing key (named) or a shape mismatch (named,
        with both shapes).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is unknown; allowed: {', '.join(LAYOUTS)}.")
    torch_layout = LAYOUTS[layout]
    if arch == "vgg16":
        mapping = _vgg16_keys(torch_layout)
    elif arch in _RESNET_STAGES:
        mapping = _resnet_keys(_RESNET_STAGES[arch], torch_layout)
    else:
        raise ValueError(f"arch {arch!r} is not importable; allowed: vgg16, {', '.join(_RESNET_STAGES)}.")
    expected = _expected_shapes(arch, num_classes, (image_size, image_size, in_channels))
    used: set[str] = set()
    params: dict[tuple[str, ...], np.ndarray] = {}
    stats: dict[tuple[str, ...], np.ndarray] = {}

    def take(key: str) -> np.ndarray:
        if key not in state_dict:
            raise ValueError(f"the state_dict has no {key!r} (layout {layout!r}, arch {arch!r}).")
        used.add(key)
        return np.asarray(state_dict[key])

    for path, prefix, kind in mapping:
        if kind == "conv":
            if ("params", *path, "kernel") not in expected:
                continue  # e.g. an identity shortcut: no conv on either side
            params[(*path, "kernel")] = take(f"{prefix}.weight").transpose(2, 3, 1, 0)
            if ("params", *path, "bias") in expected:
                params[(*path, "bias")] = take(f"{prefix}.bias")
        elif kind == "bn":
            if ("params", *path, "scale") not in expected:
                continue
            params[(*path, "scale")] = take(f"{prefix}.weight")
            params[(*path, "bias")] = take(f"{prefix}.bias")
            stats[(*path, "mean")] = take(f"{prefix}.running_mean")
            stats[(*path, "var")] = take(f"{prefix}.running_var")
        elif kind == "act":
            params[(*path, "threshold")] = take(f"{prefix}.{torch_layout.threshold}").reshape(())
        else:
            weight = take(f"{prefix}.weight")
            if kind == "dense_flatten" and weight.shape[1] != 512:
                # PyTorch flattens NCHW (c, h, w); snnjax flattens NHWC (h, w, c).
                side = int(round(np.sqrt(weight.shape[1] / 512)))
                weight = (
                    weight.reshape(-1, 512, side, side).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
                )
            params[(*path, "kernel")] = weight.T
            params[(*path, "bias")] = take(f"{prefix}.bias")
    variables = {"params": params, "batch_stats": stats}
    for collection, tree in variables.items():
        for path, value in tree.items():
            want = expected.get((collection, *path))
            if want is None:
                raise ValueError(f"{'/'.join(path)} has no counterpart in snnjax's {arch}.")
            if tuple(value.shape) != tuple(want):
                raise ValueError(
                    f"shape mismatch for {'/'.join(path)}: the checkpoint gives {tuple(value.shape)}, "
                    f"snnjax's {arch} (num_classes={num_classes}, image_size={image_size}) needs "
                    f"{tuple(want)}."
                )
    missing = sorted("/".join(k) for k in expected if k[1:] not in variables[k[0]])
    if missing:
        raise ValueError(f"the checkpoint leaves these snnjax variables unset: {missing[:10]}")
    ignored = sorted(k for k in state_dict if k.endswith("num_batches_tracked"))
    unmapped = sorted(k for k in state_dict if k not in used and k not in ignored)
    result = {name: traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in tree.items()})
              for name, tree in variables.items()}  # fmt: skip
    return result, {"unmapped": unmapped, "ignored": ignored}


def _expected_shapes(
    arch: str, num_classes: int, image_shape: tuple[int, int, int]
) -> dict[tuple[str, ...], tuple[int, ...]]:
    """``{(collection, *path): shape}`` of snnjax's ``arch`` (computed abstractly)."""
    model = create_model(
        arch, num_classes, functools.partial(ThresholdActivation, fn=functools.partial(qcfs, levels=8))
    )
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes).items()}
