"""Shared test fixtures: tiny models with non-trivial BatchNorm statistics and thresholds."""

import functools
import pathlib
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import snnjax
from snnjax.core import activations

QCFS4 = functools.partial(snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=4))


def randomize_variables(variables, seed=0, threshold=1.0):
    """Random BN affine/statistics (so folding is not trivial) and all thresholds set to ``threshold``."""
    flat = traverse_util.flatten_dict(variables)
    keys = iter(jax.random.split(jax.random.key(seed), len(flat)))
    out = {}
    for path, value in flat.items():
        key = next(keys)
        if path[-1] == "threshold":
            value = jnp.full_like(value, threshold)
        elif path[-1] == "mean":
            value = 0.1 * jax.random.normal(key, value.shape)
        elif path[-1] == "var":
            value = jax.random.uniform(key, value.shape, minval=0.5, maxval=2.0)
        elif path[-2:] == ("bn", "scale"):
            value = jax.random.uniform(key, value.shape, minval=0.5, maxval=1.5)
        elif path[-2:] == ("bn", "bias") or path[-1] == "bias":
            value = 0.2 * jax.random.normal(key, value.shape)
        out[path] = value
    return traverse_util.unflatten_dict(out)


def tiny_resnet(activation, num_classes=3):
    """Test-only ResNet: one block per stage, 4 and 8 channels, with a projection shortcut."""
    return snnjax.ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=num_classes, activation=activation)


def init(model, image_shape, seed=0):
    return model.init(jax.random.key(seed), jnp.zeros((1, *image_shape)), train=False)


def conv_nchw(x, w, stride, pad, bias=None):
    """NumPy 2-D convolution in PyTorch's layout: x ``[N, C, H, W]``, w ``[O, C, k, k]``; no XLA."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    cols = np.stack(
        [
            x[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            for i in range(k)
            for j in range(k)
        ],
        2,
    )  # [n, c, k·k, ho, wo]
    y = np.einsum("nckhw,ock->nohw", cols, w.reshape(o, c, k * k), optimize=True)
    return y if bias is None else y + bias[None, :, None, None]


def read_tensorboard_scalars(directory):
    """``{tag: {step: value}}`` of the TensorBoard event files in ``directory`` (TFRecord read here)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def png_header(width, height):
    """A PNG whose header claims ``width``×``height`` RGB pixels, with almost no pixel data."""

    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
