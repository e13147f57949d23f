"""Flax Linen layers shared by the ANN and the SNN.

The ANN and the SNN are the *same* model class; they differ only in the activation layers' pure
function (an ANN activation ``fn(x, λ)`` or an IF neuron ``fn(z, θ)`` over time-major input) and, after
BN folding, in the norm layers. Layers are named explicitly inside the models, so swapping the
function never changes the variable tree: conversion is a transform of that tree.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from snnjax.core.transformer_ops import signed_quantizer

__all__ = [
    "Activation",
    "BatchNorm",
    "ClassToken",
    "Conv",
    "ConvBN",
    "FoldedBatchNorm",
    "ModuleDef",
    "PositionEmbedding",
    "Product",
    "SignedQCFS",
    "ThresholdActivation",
    "ThresholdParameterization",
    "UnbiasedVarianceBatchNorm",
    "auto_conv_implementation",
    "conv_hybrid",
    "conv_im2col",
    "conv_xla",
    "threshold_from_param",
    "threshold_to_param",
]

ModuleDef = Callable[..., nn.Module]


RUNNING_VARIANCES = ("biased", "unbiased")


def BatchNorm(running_var: str = "biased", **kwargs: Any) -> nn.BatchNorm:  # noqa: N802 (a module factory)
    """``nn.BatchNorm`` with PyTorch's defaults (torch momentum 0.1 is Flax momentum 0.9, eps 1e-5).

    Args:
      running_var: ``"biased"`` (Flax: the running variance averages the batch's biased variance) or
        ``"unbiased"`` (PyTorch: it averages the unbiased one; `UnbiasedVarianceBatchNorm`).
      **kwargs: passed to the module (``use_running_average``, ``name``, ...).
    """
    if running_var not in RUNNING_VARIANCES:
        raise ValueError(f"running_var={running_var!r} is unknown; allowed: {', '.join(RUNNING_VARIANCES)}.")
    cls = UnbiasedVarianceBatchNorm if running_var == "unbiased" else nn.BatchNorm
    return cls(momentum=0.9, epsilon=1e-5, **kwargs)


class UnbiasedVarianceBatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` whose running variance averages the *unbiased* batch variance, as PyTorch's does.

    Both normalize a training batch by its biased variance σ²_b, so training computes the same; they
    differ in what enters the running variance (what evaluation and BatchNorm folding read): Flax's
    update is ``v' = m·v + (1−m)·σ²_b``, PyTorch's ``m·v + (1−m)·σ²_b·c`` with ``c = n/(n−1)``,
    n the values per channel in the batch (examples × positions). This module computes Flax's update
    and rewrites it as ``c·v' + (1−c)·m·v``, which is PyTorch's. The difference is small for conv
    layers (n ≥ 8,192 in ResNet-20 at batch 128: c − 1 ≤ 1.2·10⁻⁴) and larger for small batches.
    Channels are the last axis (``axis=-1``, snnjax's NHWC models).
    """

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask: jax.Array | None = None):
        """Normalizes ``x [..., C]`` as ``nn.BatchNorm``; a training call updates the running variance."""
        train = not nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        update = train and not self.is_initializing() and self.has_variable("batch_stats", "var")
        old = self.get_variable("batch_stats", "var") if update else None
        y = super().__call__(x, use_running_average, mask=mask)
        if update:
            if self.axis not in (-1, x.ndim - 1) or mask is not None or self.axis_name is not None:
                raise ValueError(
                    f"{self.name}: the unbiased running variance supports axis=-1 without a mask or a "
                    f"cross-replica axis_name (n would be per replica), got axis={self.axis}, "
                    f"mask={'set' if mask is not None else None}, axis_name={self.axis_name!r}."
                )
            n = x.size // x.shape[-1]
            if n < 2:
                raise ValueError(
                    f"{self.name}: the unbiased variance needs 2 or more values per channel, got {n}."
                )
            c = n / (n - 1)
            new = self.get_variable("batch_stats", "var")
            self.put_variable("batch_stats", "var", c * new + (1 - c) * self.momentum * old)
        return y


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
        # jax.nn.softplus's own formula, written out: inside an SNN a call of jax.nn.softplus would be
        # refused as an analog activation function (snnjax.conversion.simulation.analog_calls).
        return jnp.logaddexp(param, 0)
    return param


def threshold_to_param(threshold: jax.Array | float, parameterization: str) -> jax.Array:
    """Inverse of `threshold_from_param` (λ > 0 required for softplus)."""
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
      parameterization: how λ is stored; see `ThresholdParameterization`.
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


class SignedQCFS(nn.Module):
    """The quantizer of a transformer trained for exact conversion: ``θ·clip(⌊x/θ + ½⌋, lower, levels)``.

    QCFS with shift φ = ½ (`snnjax.core.transformer_ops.signed_quantizer`), extended to negative
    counts for signed activations (``lower < 0``: queries, keys, values, block outputs). It owns a
    trainable range λ (the ``threshold`` parameter, one per layer) and quantizes with the step
    θ = λ/levels; λ learns with the straight-through (LSQ-form) gradient ``count − x/θ`` inside the
    range and ``count`` outside. In the SNN (`snnjax.conversion.transformer`) it becomes an ST-BIF
    neuron (`snnjax.core.transformer_ops.st_bif_neuron`) with threshold θ and the same count bounds.

    Attributes:
      levels: the largest count L ≥ 1.
      lower: the smallest count: 0 (unsigned, a ReLU-like activation) or ``-levels`` (signed).
      threshold_init: the initial range λ.
    """

    levels: int
    lower: int = 0
    threshold_init: float = 4.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Quantizes ``x`` (any shape) to ``θ·{lower, …, levels}``; same shape."""
        threshold = self.param("threshold", lambda _: jnp.asarray(self.threshold_init, jnp.float32))
        return signed_quantizer(x, threshold.astype(x.dtype) / self.levels, self.levels, self.lower)


class Product(nn.Module):
    """A product of two activations, ``jnp.einsum(equation, a, b)`` (QKᵀ, attention·V).

    A layer of its own so that the SNN finds it: there it multiplies two spike trains
    incrementally (`snnjax.core.transformer_ops.spike_train_product`).

    Attributes:
      equation: the einsum equation of one batch, e.g. ``"bqhd,bkhd->bhqk"``.
    """

    equation: str

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """``einsum(equation, a, b)``; both inputs batch-major."""
        return jnp.einsum(self.equation, a, b)


class ClassToken(nn.Module):
    """Prepends a learned token to a token sequence: ``[B, N, D] → [B, N + 1, D]``.

    Affine in its input (``f(x) = concat(c, x)``): the SNN adds the token once, at the first step.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``[B, N, D]``."""
        token = self.param("token", nn.initializers.zeros_init(), (1, 1, x.shape[-1]))
        return jnp.concatenate([jnp.broadcast_to(token.astype(x.dtype), (x.shape[0], 1, x.shape[-1])), x], 1)


class PositionEmbedding(nn.Module):
    """Adds a learned embedding to every token position: ``[B, N, D] → [B, N, D]``.

    Affine in its input: the SNN adds the embedding once, at the first step.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``[B, N, D]``."""
        init = nn.initializers.normal(stddev=0.02)
        embedding = self.param("embedding", init, x.shape[1:])
        return x + embedding.astype(x.dtype)[None]


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


def conv_im2col(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
    """2-D convolution as one matmul over gathered patches (im2col).

    On XLA:CPU the convolution kernels (especially the weight gradient, and any conv on small maps) run
    far below the machine's matmul rate; slicing + one ``dot`` reaches it, and so does the backward
    pass (a matmul for the kernel, a matmul plus padded adds for the input).

    Args:
      x: ``[N, H, W, C_in]``.
      kernel: ``[kh, kw, C_in, C_out]`` (HWIO, as ``lax.conv`` and ``nn.Conv``).
      strides: ``(sh, sw)``.
      padding: ``((top, bottom), (left, right))``.

    Returns:
      ``[N, H_out, W_out, C_out]``, equal to ``lax.conv_general_dilated`` up to float summation order.
    """
    kh, kw, c_in, c_out = kernel.shape
    (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    h_out = (x.shape[1] - kh) // sh + 1
    w_out = (x.shape[2] - kw) // sw + 1
    columns = [
        x[:, i : i + sh * (h_out - 1) + 1 : sh, j : j + sw * (w_out - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    # Feature order (i, j, c) matches the HWIO kernel flattened to [kh·kw·C_in, C_out].
    patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    y = patches.reshape(-1, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, c_out)
    return y.reshape(x.shape[0], h_out, w_out, c_out)


def conv_xla(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
    """2-D convolution by ``lax.conv_general_dilated`` (NHWC, HWIO), the contract of `conv_im2col`."""
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_hybrid(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
    """XLA's convolution, except that the kernel gradient is computed as im2col + matmul.

    On XLA:CPU the forward and input-gradient convolutions run near the matmul rate on larger maps but
    the weight-gradient convolution does not (``benchmarks/results/train_throughput.md``); this keeps
    the fast two and replaces the slow one. Same contract and gradients as `conv_xla`.
    """
    return conv_xla(x, kernel, strides, padding)


def _conv_hybrid_fwd(x, kernel, strides, padding):
    return conv_xla(x, kernel, strides, padding), (x, kernel)


def _conv_hybrid_bwd(strides, padding, residuals, cotangent):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: conv_xla(x_, kernel, strides, padding), x)
    _, kernel_vjp = jax.vjp(lambda k_: conv_im2col(x, k_, strides, padding), kernel)
    return input_vjp(cotangent)[0], kernel_vjp(cotangent)[0]


conv_hybrid.defvjp(_conv_hybrid_fwd, _conv_hybrid_bwd)

CONV_IMPLEMENTATIONS = {"im2col": conv_im2col, "xla": conv_xla, "hybrid": conv_hybrid}


def auto_conv_implementation(spatial_size: int) -> str:
    """The fastest convolution for this backend and a map of ``spatial_size = H·W`` input pixels.

    On CPU: im2col on maps of 4×4 and below (where XLA's convolutions fall back to slow generic
    kernels), XLA above (its convolutions, their input and weight gradients go to YNNPACK; the
    ``hybrid`` im2col weight gradient that used to win is now 1.6× slower on a ResNet-20 train step), as
    measured by ``python -m benchmarks.train_throughput`` (``benchmarks/results/``). GPUs/TPUs: XLA
    throughout.
    """
    if jax.default_backend() != "cpu":
        return "xla"
    return "im2col" if spatial_size <= 16 else "xla"


class Conv(nn.Module):
    """A 2-D convolution with ``nn.Conv``'s variables (``kernel`` HWIO, ``bias``) and a choice of kernel.

    ``implementation="auto"`` picks by backend and map size (`auto_conv_implementation`): on CPU
    full im2col on maps up to 4×4 and XLA's convolution above; XLA's convolution on GPU/TPU. Accepts any
    number of leading batch axes.

    Attributes:
      features: output channels.
      kernel_size: ``(kh, kw)``.
      strides: ``(sh, sw)``.
      padding: ``((top, bottom), (left, right))``.
      use_bias: add a bias.
      implementation: ``"auto"``, ``"im2col"``, ``"hybrid"`` or ``"xla"``.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], ...] = ((1, 1), (1, 1))
    use_bias: bool = True
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``[..., H, W, C_in]`` to ``[..., H_out, W_out, features]``."""
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features)
        )
        implementation = self.implementation
        if implementation == "auto":
            implementation = auto_conv_implementation(x.shape[-3] * x.shape[-2])
        if implementation not in CONV_IMPLEMENTATIONS:
            raise ValueError(
                f"conv implementation {implementation!r} is unknown; allowed: auto, "
                f"{', '.join(CONV_IMPLEMENTATIONS)}."
            )
        batch_shape = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:])
        y = CONV_IMPLEMENTATIONS[implementation](flat, kernel.astype(x.dtype), self.strides, self.padding)
        y = y.reshape(*batch_shape, *y.shape[1:])
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
            y = y + jnp.broadcast_to(bias.astype(y.dtype), y.shape)
        return y


class ConvBN(nn.Module):
    """A convolution followed by its normalization, kept together so BN folding finds the pair.

    Attributes:
      features: output channels.
      kernel_size: spatial kernel size.
      strides: spatial strides.
      use_bias: conv bias (VGG has one, ResNets do not).
      norm: normalization factory, called as ``norm(use_running_average=..., name="bn")``.
      conv_implementation: see `Conv`.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    use_bias: bool = True
    norm: ModuleDef = BatchNorm
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps ``x: [..., H, W, C_in]`` to ``[..., H', W', features]`` (any leading batch axes)."""
        padding = tuple((k // 2, k // 2) for k in self.kernel_size)
        x = Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=padding,
            use_bias=self.use_bias,
            implementation=self.conv_implementation,
            name="conv",
        )(x)
        return self.norm(use_running_average=not train, name="bn")(x)
