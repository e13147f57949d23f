"""Surrogate derivatives of the IF neuron's spike, for fine-tuning a converted SNN with ``jax.grad``.

The spike is a step function of the membrane's distance to threshold, ``s = H(x)`` with
``x = m − θ`` and ``H(x) = 1`` for ``x ≥ 0`` (inclusive, as in the forward rule). Its true derivative is
zero almost everywhere, so by default ``jax.grad`` through `snnjax.if_neuron` gives zero with
respect to the input currents (the gradient with respect to θ is not zero: a spike carries θ's value).
A surrogate keeps the forward pass exactly as it is and replaces ``H'(x)`` in the backward pass
(``jax.custom_vjp``). Each factory returns the derivative ``g(x)``; pass it as ``surrogate=`` to
`snnjax.if_neuron` or `snnjax.spiking_model`. ``x`` is in the membrane's own units (not
divided by θ), as in the reference code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["arctan", "spike", "straight_through", "triangle"]

Surrogate = Callable[[jax.Array], jax.Array]


def triangle(width: float = 1.0) -> Surrogate:
    """``g(x) = max(0, γ − |x|)/γ²`` (γ = ``width``): the revised QCFS code's ZIF surrogate (γ = 1).

    Its integral over x is 1, like the step it stands for.
    """
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}.")
    return functools.partial(_triangle, width=float(width))


def _triangle(x: jax.Array, width: float) -> jax.Array:
    return jnp.maximum(width - jnp.abs(x), 0.0) / width**2


def arctan(alpha: float = 2.0) -> Surrogate:
    """``g(x) = α / (2·(1 + (π·α·x/2)²))``, the derivative of ``arctan(π·α·x/2)/π + ½`` (integral 1)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}.")
    return functools.partial(_arctan, alpha=float(alpha))


def _arctan(x: jax.Array, alpha: float) -> jax.Array:
    return alpha / (2.0 * (1.0 + (math.pi * alpha * x / 2.0) ** 2))


def straight_through() -> Surrogate:
    """``g(x) = 1``: the spike passes the gradient unchanged (straight-through estimator)."""
    return _ones


def _ones(x: jax.Array) -> jax.Array:
    return jnp.ones_like(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def spike(x: jax.Array, surrogate: Surrogate) -> jax.Array:
    """``H(x) = 1 if x ≥ 0 else 0`` (in ``x``'s dtype), with ``surrogate(x)`` as its derivative."""
    return (x >= 0).astype(x.dtype)


def _spike_fwd(x, surrogate):
    return spike(x, surrogate), x


def _spike_bwd(surrogate, x, cotangent):
    return (cotangent * surrogate(x).astype(cotangent.dtype),)


spike.defvjp(_spike_fwd, _spike_bwd)
