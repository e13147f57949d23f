"""Reading the reference repositories' PyTorch checkpoints into snnjax variables.

``read_torch_checkpoint`` reads a ``torch.save`` file (the zip format of PyTorch ≥ 1.6) **without
PyTorch and without executing pickled code**: its unpickler resolves only the handful of globals a
tensor state_dict needs (tensor rebuild functions, storage types, dtypes, ``OrderedDict``) to local,
side-effect-free stand-ins, and refuses any other global with an error. Its memory is bounded by what
the pickle declares: each storage record's size is compared with the element count the pickle gives
it before anything is decompressed, the pickle itself is limited to 4 MiB, and tensors are views of
their storage (as in PyTorch), so a file cannot ask for many copies of one storage.

``import_torch_state_dict`` maps the layouts of the QCFS code (the original
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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from snnjax.core.activations import qcfs
from snnjax.nn.layers import ThresholdActivation
from snnjax.nn.models import create_model

__all__ = ["LAYOUTS", "TorchLayout", "import_torch_state_dict", "read_torch_checkpoint"]

# The torch dtypes the reader reads, by the name torch pickles them under, with their NumPy dtype
# (ml_dtypes, which jax depends on, provides bfloat16 and the float8 formats, bit for bit as torch).
_TORCH_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "complex128": np.complex128,
    "complex64": np.complex64,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint64": np.uint64,
    "uint32": np.uint32,
    "uint16": np.uint16,
    "uint8": np.uint8,
    "bool": np.bool_,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    **({"float8_e8m0fnu": ml_dtypes.float8_e8m0fnu} if hasattr(ml_dtypes, "float8_e8m0fnu") else {}),
}

# torch.save names a typed storage class for the dtypes that had one before PyTorch 2.0; tensors of
# newer dtypes (uint16/32/64, float8) are saved as an untyped (byte) storage whose dtype is an argument
# of ``_rebuild_tensor_v3``.
_STORAGE_TYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# A torch global whose name reads as a dtype (qint8, float4_e2m1fn_x2, complex32, bits8, ...).
_DTYPE_NAME = re.compile(r"(q?u?int|b?float|complex|bits)\d\w*")

# The largest data.pkl read. torch.save writes ~120 bytes per tensor (~350 per parameter with its Adam
# state), so this holds ~30,000 tensors; unpickling can take ~225 bytes of memory per byte of pickle (an
# empty set per one-byte opcode), so the bound also keeps the pickle's own objects under ~1 GB.
_MAX_PICKLE_BYTES = 4 << 20


class _DType(NamedTuple):
    """A ``torch.<dtype>`` global of the pickle.

    The stand-ins are shared by every load, so they are immutable tuples: a crafted pickle's BUILD opcode
    cannot change them (and with them how the next file is read).
    """

    dtype: np.dtype


class _StorageType(NamedTuple):
    """A ``torch.<Name>Storage`` global of the pickle (immutable for the reason given in `_DType`)."""

    dtype: np.dtype


class _Storage:
    """One storage record of the archive, with the element dtype and count the pickle declares for it.

    Its bytes are decompressed only when a tensor of the state_dict needs them, and only once.
    """

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype, numel: int):
        self.archive, self.info, self.dtype, self.numel = archive, info, dtype, numel
        self.name, self.nbytes = info.filename, numel * dtype.itemsize
        self._buffer: np.ndarray | None = None

    def read(self, path: str) -> np.ndarray:
        """The record's bytes as a writeable ``uint8`` array of ``nbytes``.

        The caller has checked the zip header's size against ``nbytes``; the header may still lie, so
        no more than ``nbytes + 1`` bytes are decompressed whatever the record holds.

        Raises:
          ValueError: naming ``path`` and the record, if it holds fewer or more bytes than declared.
        """
        if self._buffer is None:
            with self.archive.open(self.info) as record:
                raw = record.read(self.nbytes + 1)
            if len(raw) != self.nbytes:
                held = "more" if len(raw) > self.nbytes else len(raw)
                raise ValueError(
                    f"{path}: storage record {self.name!r} holds {held} bytes, not the {self.nbytes} its "
                    f"zip header and the pickle ({self.numel} {self.dtype} elements) declare; the file is "
                    "corrupt or was crafted."
                )
            # A copy: bytes are read-only, and the arrays returned should be writeable like torch's.
            self._buffer = np.frombuffer(raw, np.uint8).copy()
        return self._buffer


class _TensorRecord:
    """What a ``_rebuild_tensor_v2/v3`` call in the pickle asks for; checked and built by `_build`.

    Nothing is read from the storage while unpickling: the arguments are only recorded, so that each
    can be checked with the state_dict key it belongs to named in the error. ``dtype`` is a
    `_DType` (``_rebuild_tensor_v3``) or ``None`` for the storage's dtype (``_rebuild_tensor_v2``).
    """

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype


def _rebuild_tensor(storage, offset, size, stride, *_):
    """``torch._utils._rebuild_tensor_v2`` stand-in: records the request (see `_build`)."""
    return _TensorRecord(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v3`` stand-in; ``rest`` is (requires_grad, hooks, dtype, ...).

    No default arguments: a pickle's BUILD opcode can change a function's defaults.
    """
    dtype = rest[2] if len(rest) > 2 else None
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f"torch._utils._rebuild_tensor_v3 called with dtype {dtype!r}")
    return _TensorRecord(storage, offset, size, stride, dtype)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _build(record: _TensorRecord, key: str, path: str) -> np.ndarray:
    """The array a tensor record describes, after checking that it lies inside its storage.

    The array is a view of its storage's bytes, as a torch tensor is: tensors sharing a storage share
    memory, so the result is never larger than the storages the file declares.

    Raises:
      ValueError: naming ``key`` and ``path``, for a storage record whose size differs from what the
        pickle declares, a storage whose byte length is not a whole number of elements, sizes/strides/
        offset that are not non-negative ints, mismatched size and stride lengths, an element outside the
        storage, or more elements than the storage holds.
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(f"{path}: tensor {key!r} {reason}; the file is corrupt or was crafted.")

    storage = record.storage
    if not isinstance(storage, _Storage):
        raise refuse("has no storage from the archive")
    dtype = storage.dtype if record.dtype is None else record.dtype.dtype
    # Compared before anything is decompressed: a record may inflate to far more than it declares.
    if storage.info.file_size != storage.nbytes:
        raise refuse(
            f"has a storage record {storage.name!r} of {storage.info.file_size} bytes, but the pickle "
            f"declares {storage.numel} {storage.dtype} elements ({storage.nbytes} bytes)"
        )
    itemsize = dtype.itemsize
    if storage.nbytes % itemsize:
        raise refuse(
            f"has a storage ({storage.name}) of {storage.nbytes} bytes, not a whole number of {dtype} "
            "elements"
        )
    count = storage.nbytes // itemsize
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
        try:
            return np.zeros(size, dtype)
        except (ValueError, OverflowError):  # e.g. (0, 10**20): NumPy's dimension limit
            raise refuse(f"has size {tuple(size)}, which NumPy cannot hold even empty") from None
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
    # Strided as opaque cells of the element's size, then viewed: as_strided goes through a typestr,
    # which cannot name some ml_dtypes types (float8_e5m2 becomes the unknown '<f1').
    cells = storage.read(path).view(np.dtype((np.void, itemsize)))
    view = np.lib.stride_tricks.as_strided(
        cells[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return view.view(dtype)


def _rebuild_parameter(data, *_):
    return data


def _little_endian(dtype) -> np.dtype:
    # torch.save writes the saving machine's byte order; x86 and ARM are little-endian.
    return np.dtype(dtype).newbyteorder("<")


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _StorageType(_little_endian(np.uint8)),
    ("torch", "UntypedStorage"): _StorageType(_little_endian(np.uint8)),
    **{("torch", name): _StorageType(_little_endian(_TORCH_DTYPES[t])) for name, t in _STORAGE_TYPES.items()},
    **{("torch", name): _DType(_little_endian(dtype)) for name, dtype in _TORCH_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Accepts tensors and plain containers only; everything else is refused by name."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, _Storage] = {}  # by record name: tensors sharing one storage share it

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module.split(".")[0] == "torch" and name.endswith("Storage"):
            raise pickle.UnpicklingError(
                f"unsupported tensor storage {module}.{name}: this reader reads torch."
                f"{', torch.'.join(_STORAGE_TYPES)} and torch.storage.UntypedStorage (dtypes "
                f"{', '.join(_TORCH_DTYPES)})."
            )
        if module == "torch" and _DTYPE_NAME.fullmatch(name):
            raise pickle.UnpicklingError(
                f"unsupported tensor dtype torch.{name}: this reader reads {', '.join(_TORCH_DTYPES)}."
            )
        if module == "torch._utils" and name.startswith("_rebuild_"):
            raise pickle.UnpicklingError(
                f"unsupported tensor kind {module}.{name}: this reader reads dense tensors only (not "
                "quantized, sparse, nested or subclassed ones); save a state_dict of plain tensors."
            )
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a weights file may hold only tensors and plain "
            "containers (this one would run code while loading)."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if len(pid) < 5 or not (_is_int(pid[4]) and pid[4] >= 0):
            raise pickle.UnpicklingError(
                f"malformed storage reference {pid!r}; expected ('storage', type, key, location, numel)"
            )
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        name = f"{self._prefix}data/{key}"
        if name not in self._storages:
            try:
                info = self._archive.getinfo(name)
            except KeyError:
                raise pickle.UnpicklingError(
                    f"the pickle refers to storage {name!r}, which the archive lacks"
                ) from None
            self._storages[name] = _Storage(self._archive, info, storage_type.dtype, numel)
        return self._storages[name]


def _read_pickle(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    """The ``data.pkl`` record, refused (before decompressing) if larger than ``_MAX_PICKLE_BYTES``."""
    size, data = archive.getinfo(name).file_size, b""
    if size <= _MAX_PICKLE_BYTES:
        with archive.open(name) as record:
            data = record.read(_MAX_PICKLE_BYTES + 1)  # at most: the zip header may lie
    if size > _MAX_PICKLE_BYTES or len(data) > _MAX_PICKLE_BYTES:
        raise ValueError(
            f"{path}: its pickle {name!r} is larger than the {_MAX_PICKLE_BYTES} bytes this reader accepts "
            f"({size} bytes by its zip header; a state_dict's pickle holds ~120 bytes per tensor, the "
            "tensors' data lives in other records); the file is corrupt or was crafted."
        )
    return data


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``.pth`` file's state_dict as NumPy arrays, executing no pickled code.

    Args:
      path: a file written by ``torch.save`` (zip format) holding a state_dict, or a dict holding one
        under ``"state_dict"``, ``"model"`` or ``"net"`` (other entries are ignored).

    Returns:
      ``{"layer1.0.weight": array, ...}`` in the file's order; a leading ``"module."`` (DataParallel)
      is stripped. Each array keeps its tensor's dtype (bfloat16 and float8 as the ``ml_dtypes`` NumPy
      types; `import_torch_state_dict` casts to float32) and is a writeable view of its storage:
      tensors that share a storage in the file share memory, as they do in PyTorch.

    Raises:
      pickle.UnpicklingError: if the file refers to anything but tensors of a supported dtype and plain
        containers (the global is named).
      ValueError: if the file is not a zip-format checkpoint, is damaged, holds no state_dict, its
        pickle is over 4 MiB, a storage record's size differs from what the pickle declares, or a
        tensor does not lie inside its storage (the key and record are named).
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format PyTorch checkpoint (torch.save since PyTorch 1.6); re-save it "
            "with a current PyTorch."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [
                name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")
            ]
            if len(pickles) != 1:
                raise ValueError(f"{path}: expected one data.pkl in the archive, found {pickles}.")
            prefix = pickles[0][: -len("data.pkl")]
            data = _read_pickle(archive, pickles[0], path)
            obj = _RestrictedUnpickler(io.BytesIO(data), archive, prefix).load()
            if isinstance(obj, Mapping):
                for key in ("state_dict", "model", "net"):
                    if isinstance(obj.get(key), Mapping):
                        obj = obj[key]
                        break
            if not isinstance(obj, Mapping):
                raise ValueError(f"{path} holds no state_dict of tensors.")
            # Built while the archive is open: storages are read only for the tensors returned.
            arrays = {str(k): _build(v, str(k), path) for k, v in obj.items() if isinstance(v, _TensorRecord)}
    except (pickle.UnpicklingError, ValueError):
        raise
    except Exception as error:  # a damaged zip or pickle fails in many ways (EOF, bad CRC, bad opcodes)
        raise ValueError(f"{path}: damaged checkpoint ({type(error).__name__}: {error}).") from None
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


def import_torch_state_dict(
    state_dict: Mapping[str, np.ndarray],
    arch: str,
    num_classes: int,
    layout: str = "qcfs_revised",
    image_size: int = 32,
    in_channels: int = 3,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Maps a reference state_dict onto the variables of ``snnjax.create_model(arch, ...)``.

    Args:
      state_dict: from `read_torch_checkpoint` (or ``{k: v.numpy()}`` of a torch state_dict).
      arch: ``vgg16``, ``resnet18``, ``resnet20`` or ``resnet34``.
      num_classes: the classifier's size.
      layout: a key of `LAYOUTS`.
      image_size: input side (32 for CIFAR, 224 for ImageNet); fixes VGG's flatten size.
      in_channels: input channels (3 for colour images).

    Returns:
      ``(variables, report)``: ``{"params", "batch_stats"}`` for a model built with a
      `snnjax.nn.layers.ThresholdActivation` (identity parameterization, one λ per layer) and
      `snnjax.nn.layers.BatchNorm`; ``report = {"unmapped": [...], "ignored": [...]}`` names the
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
