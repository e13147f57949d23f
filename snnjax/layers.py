"""Flax Linen layers shared by the ANN and the SNN.

The ANN and the SNN are the *same* model class; they differ only in the activation layers' pure
function (an ANN activation ``fn(x, λ)`` or an IF neuron ``fn(z, θ)`` over time-major input) and, after
BN folding, in the norm layers. Layers are named explicitly inside the models, so swapping the
function never changes the variable tree: conversion is a transform of that tree.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "Activation",
    "BatchNorm",
    "ConvBN",
    "FoldedBatchNorm",
    "ModuleDef",
    "ThresholdActivation",
    "ThresholdParameterization",
    "threshold_from_param",
    "threshold_to_param",
]

ModuleDef = Callable[..., nn.Module]


def BatchNorm(**kwargs: Any) -> nn.BatchNorm:  # noqa: N802 (a module factory, named like one)
    """``nn.BatchNorm`` with PyTorch's defaults (torch momentum 0.1 is Flax momentum 0.9, eps 1e-5)."""
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, **kwargs)


class ThresholdParameterization(enum.StrEnum):
    """How a layer's trainable threshold λ is stored as a parameter.

    ``IDENTITY``: the parameter *is* λ (reference code; λ can become negative if initialized small).
    ``SOFTPLUS``: the parameter is ``p`` with ``λ = softplus(p)``, so λ stays positive.
    """

    IDENTITY = "identity"
    SOFTPLUS = "softplus"


def threshold_from_param(param: jax.Array, parameterization: str) -> jax.Array:
    """Maps a stored threshold parameter to λ."""
    if ThresholdParameterization(parameterization) is ThresholdParameterization.SOFTPLUS:
        return jax.nn.softplus(param)
    return param


def threshold_to_param(threshold: jax.Array | float, parameterization: str) -> jax.Array:
    """Inverse of :func:`threshold_from_param` (λ > 0 required for softplus)."""
    threshold = jnp.asarray(threshold, jnp.float32)
    if ThresholdParameterization(parameterization) is ThresholdParameterization.SOFTPLUS:
        # softplus^-1(y) = log(expm1(y)), written stably for large y.
        return threshold + jnp.log(-jnp.expm1(-threshold))
    return threshold


class ThresholdActivation(nn.Module):
    """An activation layer that owns a trainable threshold λ (one per layer, or one per channel).

    Attributes:
      fn: pure function ``fn(x, threshold) -> y`` with ``y.shape == x.shape``; e.g.
        ``functools.partial(qcfs, levels=4)`` for the ANN, or ``functools.partial(if_neuron, v0=0.5)``
        for the SNN (where ``x`` is time-major ``[T, B, ...]``).
      threshold_init: initial λ.
      parameterization: how λ is stored; see :class:`ThresholdParameterization`.
      per_channel: one λ per channel (last axis) instead of one scalar per layer.
    """

    fn: Callable[[jax.Array, jax.Array], jax.Array]
    threshold_init: float = 8.0
    parameterization: str = ThresholdParameterization.IDENTITY
    per_channel: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies ``fn`` with this layer's λ; ``x`` has shape ``[..., C]``, returned unchanged."""
        shape = (x.shape[-1],) if self.per_channel else ()
        init_value = threshold_to_param(self.threshold_init, self.parameterization)
        param = self.param("threshold", lambda _, s: jnp.full(s, init_value, jnp.float32), shape)
        threshold = threshold_from_param(param, self.parameterization).astype(x.dtype)
        return self.fn(x, threshold)


class Activation(nn.Module):
    """A parameter-free activation layer (plain ReLU); conversion must supply its threshold."""

    fn: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies ``fn`` elementwise."""
        return self.fn(x)


class FoldedBatchNorm(nn.Module):
    """What a BatchNorm becomes after folding into the preceding conv: a per-channel bias.

    Accepts (and ignores) ``use_running_average`` so it drops in wherever a BatchNorm factory is
    called.
    """

    use_running_average: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Adds the folded bias ``[C]`` to ``x: [..., C]``."""
        bias = self.param("bias", nn.initializers.zeros_init(), (x.shape[-1],))
        return x + jnp.broadcast_to(bias.astype(x.dtype), x.shape)


class ConvBN(nn.Module):
    """A convolution followed by its normalization, kept together so BN folding finds the pair.

    Attributes:
      features: output channels.
      kernel_size: spatial kernel size.
      strides: spatial strides.
      use_bias: conv bias (VGG has one, ResNets do not).
      norm: normalization factory, called as ``norm(use_running_average=..., name="bn")``.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    use_bias: bool = True
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps ``x: [..., H, W, C_in]`` to ``[..., H', W', features]`` (any leading batch axes)."""
        padding = tuple((k // 2, k // 2) for k in self.kernel_size)
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=padding,
            use_bias=self.use_bias,
            name="conv",
        )(x)
        return self.norm(use_running_average=not train, name="bn")(x)
