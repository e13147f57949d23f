"""Architectures whose activation is a constructor argument, so one class builds the ANN and the SNN.

Every model accepts any number of leading batch axes: ``[B, H, W, C]`` for the ANN and time-major
``[T, B, H, W, C]`` for the SNN (Flax convs/dense/pooling fold the leading axes into one batch, which
is exactly "layer mode": each synaptic layer runs once on the time-batched tensor, and each IF layer
scans over axis 0). Images are NHWC. Layers carry explicit names so the variable tree does not depend on
which activation is plugged in.

ConvNets pool with 2×2 average pooling by default, as in the reference conversion code; a max-pool
ANN (``pooling="max"``) converts with max → avg replaced or with a spiking max-pool gate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnjax.nn.layers import BatchNorm, ConvBN, ModuleDef

__all__ = [
    "ANN_POOLINGS",
    "MODELS",
    "SNN_MAX_POOLS",
    "VGG16_LAYERS",
    "ConvNet",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNet34",
    "SmallCNN",
    "TinyCNN",
    "VGG16",
    "POOLINGS",
    "create_model",
    "spiking_max_pool_gate",
]

POOL = "P"
VGG16_LAYERS = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512,
                512, POOL)  # fmt: skip


def _avg_pool(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _max_pool(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def spiking_max_pool_gate(x: jax.Array) -> jax.Array:
    """2×2 max-pooling for spikes: pass the spikes of the window's most active neuron so far.

    At step t each 2×2 window forwards the output at t of the neuron with the largest cumulative
    output over steps 1..t (ties: the first in row-major order), the gate of Rueckauer et al. (2017).
    Over time the window's count tracks the maximum count, while an output is still one spike.

    Args:
      x: spikes·θ, time-major ``[T, ..., H, W, C]`` (layer mode), H and W even.

    Returns:
      ``[T, ..., H/2, W/2, C]``.
    """
    *lead, height, width, channels = x.shape
    windows = x.reshape(*lead, height // 2, 2, width // 2, 2, channels)
    n = windows.ndim
    # [..., H/2, 2, W/2, 2, C] -> [..., H/2, W/2, C, 2, 2] -> [..., H/2, W/2, C, 4]
    windows = jnp.transpose(windows, (*range(n - 5), n - 5, n - 3, n - 1, n - 4, n - 2))
    windows = windows.reshape(*windows.shape[:-2], 4)
    winner = jnp.argmax(jnp.cumsum(windows, axis=0), axis=-1, keepdims=True)
    return jnp.take_along_axis(windows, winner, axis=-1)[..., 0]


# 2×2 pooling of ConvNet: "avg" (reference ANNs and their SNNs), "max" (ANN only), and the spiking
# replacement of a max-pool ("max_gate", layer-mode SNN only).
POOLINGS = {"avg": _avg_pool, "max": _max_pool, "max_gate": spiking_max_pool_gate}
ANN_POOLINGS = ("avg", "max")  # config.pooling
SNN_MAX_POOLS = ("avg", "max_gate")  # config.snn_max_pool: what a max-pool ANN's SNN pools with


class ConvNet(nn.Module):
    """A plain stack: [conv3×3 → BN → act | avg-pool]* → flatten → [dense → act]* → dense.

    Attributes:
      layers: conv widths, with ``"P"`` for a 2×2 average pool.
      hidden: widths of the hidden dense layers of the head.
      num_classes: logits size.
      activation: activation factory, called as ``activation(name=...)``.
      norm: normalization factory (BatchNorm, or FoldedBatchNorm after folding).
      conv_implementation: ``"auto"``, ``"hybrid"``, ``"im2col"`` or ``"xla"`` (see
        ``snnjax.nn.layers.Conv``).
      pooling: a key of ``POOLINGS`` (``"avg"``, ``"max"``; ``"max_gate"`` in a converted SNN), or a
        function ``[..., H, W, C] -> [..., H/2, W/2, C]``.
    """

    layers: Sequence[int | str]
    hidden: Sequence[int]
    num_classes: int
    activation: ModuleDef
    norm: ModuleDef = BatchNorm
    conv_implementation: str = "auto"
    pooling: str | Callable[[jax.Array], jax.Array] = "avg"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images ``[..., H, W, C]`` to logits ``[..., num_classes]``."""
        if callable(self.pooling):
            pool = self.pooling
        elif self.pooling in POOLINGS:
            pool = POOLINGS[self.pooling]
        else:
            raise ValueError(f"pooling {self.pooling!r} is unknown; allowed: {', '.join(POOLINGS)}.")
        conv_index = 0
        for layer in self.layers:
            if layer == POOL:
                x = pool(x)
                continue
            x = ConvBN(
                layer,
                norm=self.norm,
                conv_implementation=self.conv_implementation,
                name=f"conv_bn{conv_index}",
            )(x, train)
            x = self.activation(name=f"act{conv_index}")(x)
            conv_index += 1
        x = x.reshape(*x.shape[:-3], -1)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, name=f"fc{i}")(x)
            x = self.activation(name=f"fc_act{i}")(x)
        return nn.Dense(self.num_classes, name="head")(x)


# The named models are factories spelled like the classes they build: VGG16(num_classes=10, ...).
def VGG16(**fields: Any) -> ConvNet:
    """VGG-16 as the conversion references build it: 13 conv-BN-act layers, 2 hidden dense layers.

    Conv widths ``64, 64, P, 128, 128, P, 256×3, P, 512×3, P, 512×3, P`` (`VGG16_LAYERS`, P = 2×2
    pooling), then dense 4096 → act → 4096 → act → head. On 32×32 CIFAR input the last map is
    1×1×512, so the first dense is 512 → 4096; on 224×224 input the same model flattens 7·7·512.

    Args:
      **fields: the other `ConvNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``, ``pooling``.

    Returns:
      ``ConvNet(layers=VGG16_LAYERS, hidden=(4096, 4096), **fields)``; it maps ``[..., H, W, C]``
      images (any leading batch axes, e.g. ``[T, B, ...]`` in the SNN) to ``[..., num_classes]``.
    """
    return ConvNet(layers=VGG16_LAYERS, hidden=(4096, 4096), **fields)


def SmallCNN(**fields: Any) -> ConvNet:
    """A CPU-sized ConvNet for small images (8×8 digits, 28×28 MNIST): conv 32, 32, P, 64, P; dense 128.

    Args:
      **fields: the other `ConvNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``, ``pooling``.

    Returns:
      ``ConvNet(layers=(32, 32, "P", 64, "P"), hidden=(128,), **fields)``.
    """
    return ConvNet(layers=(32, 32, POOL, 64, POOL), hidden=(128,), **fields)


def TinyCNN(**fields: Any) -> ConvNet:
    """Test-only: conv 4, P; dense 8 — a few hundred parameters for fast unit tests, not a real model.

    Args:
      **fields: the other `ConvNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``, ``pooling``.

    Returns:
      ``ConvNet(layers=(4, "P"), hidden=(8,), **fields)``.
    """
    return ConvNet(layers=(4, POOL), hidden=(8,), **fields)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-act-conv-BN, plus shortcut, then act after the add."""

    features: int
    strides: int
    activation: ModuleDef
    norm: ModuleDef
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Maps ``[..., H, W, C]`` to ``[..., H/strides, W/strides, features]``."""
        conv = functools.partial(
            ConvBN, use_bias=False, norm=self.norm, conv_implementation=self.conv_implementation
        )
        y = conv(self.features, strides=(self.strides,) * 2, name="conv_bn1")(x, train)
        y = self.activation(name="act1")(y)
        y = conv(self.features, name="conv_bn2")(y, train)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, (1, 1), strides=(self.strides,) * 2, name="shortcut")(x, train)
        return self.activation(name="act2")(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stem (stride 1, no max-pool), basic blocks, global avg-pool, linear.

    Attributes:
      stage_sizes: blocks per stage.
      widths: channels per stage (the stem uses ``widths[0]``).
      num_classes: logits size.
      activation: activation factory.
      norm: normalization factory.
      conv_implementation: ``"auto"``, ``"hybrid"``, ``"im2col"`` or ``"xla"`` (see
        ``snnjax.nn.layers.Conv``).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    num_classes: int
    activation: ModuleDef
    norm: ModuleDef = BatchNorm
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images ``[..., H, W, C]`` to logits ``[..., num_classes]``."""
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError(
                f"stage_sizes {self.stage_sizes} and widths {self.widths} must have equal length."
            )
        x = ConvBN(
            self.widths[0],
            use_bias=False,
            norm=self.norm,
            conv_implementation=self.conv_implementation,
            name="stem",
        )(x, train)
        x = self.activation(name="stem_act")(x)
        for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    width,
                    strides,
                    self.activation,
                    self.norm,
                    conv_implementation=self.conv_implementation,
                    name=f"stage{stage}_block{block}",
                )(x, train)
        x = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.num_classes, name="head")(x)


def ResNet18(**fields: Any) -> ResNet:
    """ResNet-18, CIFAR style (3×3 stem, no max-pool): 2, 2, 2, 2 basic blocks of 64, 128, 256, 512.

    Args:
      **fields: the other `ResNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``.

    Returns:
      ``ResNet(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), **fields)``.
    """
    return ResNet(stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512), **fields)


def ResNet34(**fields: Any) -> ResNet:
    """ResNet-34, CIFAR style (3×3 stem, no max-pool): 3, 4, 6, 3 basic blocks of 64, 128, 256, 512.

    Args:
      **fields: the other `ResNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``.

    Returns:
      ``ResNet(stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), **fields)``.
    """
    return ResNet(stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512), **fields)


def ResNet20(**fields: Any) -> ResNet:
    """ResNet-20 (He et al. 2016, CIFAR): 3 stages of 3 basic blocks with 16, 32, 64 channels.

    Args:
      **fields: the other `ResNet` fields: ``num_classes`` and ``activation`` (required),
        ``norm``, ``conv_implementation``.

    Returns:
      ``ResNet(stage_sizes=(3, 3, 3), widths=(16, 32, 64), **fields)``.
    """
    return ResNet(stage_sizes=(3, 3, 3), widths=(16, 32, 64), **fields)


MODELS = {
    "tiny_cnn": TinyCNN,
    "small_cnn": SmallCNN,
    "vgg16": VGG16,
    "resnet18": ResNet18,
    "resnet20": ResNet20,
    "resnet34": ResNet34,
}


def create_model(
    name: str,
    num_classes: int,
    activation: ModuleDef,
    norm: ModuleDef = BatchNorm,
    conv_implementation: str = "auto",
    pooling: str = "avg",
) -> nn.Module:
    """Builds the model called ``name`` (a key of ``MODELS``) with the given activation factory.

    ``pooling`` applies to ConvNets (VGG-16, SmallCNN, TinyCNN); ResNets pool globally by a mean and
    accept only ``"avg"``.
    """
    if name not in MODELS:
        raise ValueError(f"config.model={name!r} is unknown; allowed: {', '.join(MODELS)}.")
    kwargs = {"num_classes": num_classes, "activation": activation, "norm": norm,
              "conv_implementation": conv_implementation}  # fmt: skip
    if not name.startswith("resnet"):
        return MODELS[name](pooling=pooling, **kwargs)
    if pooling != "avg":
        raise ValueError(f"config.pooling={pooling!r}: {name} has no 2×2 pooling layers; use 'avg'.")
    return MODELS[name](**kwargs)
