"""Experimental: code kept for measurement, not part of the public API (may change or go away).

* `if_neuron_pallas`: the IF neuron as a hand-written Pallas kernel (GPU).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from snnjax.core.neurons import _time_major, if_step

__all__ = ["if_neuron_pallas"]


# Neurons per program of the Pallas IF kernel; longest window it handles (its time loop is unrolled).
PALLAS_BLOCK = 1024
PALLAS_MAX_STEPS = 64


def if_neuron_pallas(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, interpret: bool = False
) -> jax.Array:
    """`snnjax.if_neuron` as one Pallas kernel (GPU).

    Each program keeps a block of membranes in registers and walks the T steps, so z is read once and
    the spikes written once. Same arithmetic as `snnjax.core.neurons.if_step`, so the outputs are
    identical (tested on CPU in interpret mode). It is faster than XLA's scan on a single layer but
    not inside a network, where XLA fuses the BatchNorm/bias before the neuron into its own scan
    (``benchmarks/pallas_if_probe.py``, ``benchmarks/results/h100_pallas.md``), so
    `snnjax.if_neuron` keeps the scan. Inference only (no VJP).

    Args:
      z: input currents ``[T, ...]``, float32, ``1 <= T <= PALLAS_MAX_STEPS``.
      threshold: θ, broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ.
      interpret: run the kernel in Pallas' interpreter (CPU testing).

    Returns:
      ``[T, ...]`` outputs in ``{0, θ}``.
    """
    from jax.experimental import pallas as pl

    z = _time_major(z, "if_neuron_pallas")
    num_steps, neuron_shape = z.shape[0], z.shape[1:]
    size = math.prod(neuron_shape)
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), neuron_shape).reshape(size)
    flat = z.reshape(num_steps, size)
    pad = -size % PALLAS_BLOCK
    if pad:  # padded neurons get θ = 1 and zero input: they never fire and are cut off below
        flat = jnp.pad(flat, ((0, 0), (0, pad)))
        theta = jnp.pad(theta, (0, pad), constant_values=1)

    def kernel(z_ref, theta_ref, out_ref):
        block_theta = theta_ref[...]
        membrane = v0 * block_theta
        for t in range(num_steps):
            membrane, out_ref[t, :] = if_step(membrane, z_ref[t, :], block_theta)

    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(flat.shape, z.dtype),
        grid=(flat.shape[1] // PALLAS_BLOCK,),
        in_specs=[
            pl.BlockSpec((num_steps, PALLAS_BLOCK), lambda i: (0, i)),
            pl.BlockSpec((PALLAS_BLOCK,), lambda i: (i,)),
        ],
        out_specs=pl.BlockSpec((num_steps, PALLAS_BLOCK), lambda i: (0, i)),
        interpret=interpret,
    )(flat, theta)
    return out[:, :size].reshape(z.shape)
