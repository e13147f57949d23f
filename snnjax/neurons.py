"""Integrate-and-fire neurons as pure functions over time-major input.

Time convention (used everywhere in snnjax): axis 0 is time, ``z: [T, ...]``; the remaining axes are
whatever the layer has (``[T, B, H, W, C]`` for a conv layer, ``[T, B, F]`` for a dense one). The
membrane potential is the explicit carry of a ``lax.scan``, never hidden state.

Reference semantics (QCFS / SlipReLU code), per step ``t``::

    m = v + z[t]            # integrate first: no one-step lag
    s = (m >= θ)            # inclusive threshold
    v = m - s·θ             # reset by subtraction ("soft reset")
    out[t] = s·θ            # a spike carries the threshold's value

with ``v(0) = v0·θ`` (``v0 = ½`` for QCFS, ``shift2`` for SlipReLU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["if_neuron", "if_neuron_with_state", "if_step", "initial_membrane"]


def if_step(membrane: jax.Array, z_t: jax.Array, threshold: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One integrate-and-fire step with inclusive threshold and reset by subtraction.

    Args:
      membrane: v before the step, shape ``S`` (e.g. ``[B, H, W, C]``).
      z_t: input current at this step, shape ``S``.
      threshold: θ, broadcast to shape ``S`` (use :func:`jnp.broadcast_to`; rank promotion is not
        relied on).

    Returns:
      ``(new_membrane, output)``, both of shape ``S``; ``output`` is θ where the neuron fired, else 0.
    """
    potential = membrane + z_t
    fired = potential >= threshold
    output = jnp.where(fired, threshold, jnp.zeros_like(threshold))
    return potential - output, output


def initial_membrane(
    shape: tuple[int, ...], threshold: jax.Array | float, v0: float = 0.5, dtype=jnp.float32
) -> jax.Array:
    """``v(0) = v0·θ`` broadcast to ``shape`` (the per-neuron shape, without the time axis)."""
    return jnp.broadcast_to(v0 * jnp.asarray(threshold, dtype), shape).astype(dtype)


def if_neuron_with_state(
    z: jax.Array,
    threshold: jax.Array | float,
    v0: float = 0.5,
    membrane: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs an IF neuron over ``z`` and also returns the final membrane, to continue a run later.

    Args:
      z: input currents, time-major ``[T, ...]`` with ``T >= 1``.
      threshold: θ, a scalar or an array broadcasting against ``z.shape[1:]`` from the right
        (e.g. ``[C]`` for per-channel thresholds).
      v0: initial membrane as a fraction of θ; ignored when ``membrane`` is given.
      membrane: optional membrane to start from, shape ``z.shape[1:]`` (e.g. the second output of a
        previous call), which makes two calls on ``z[:k]`` and ``z[k:]`` equal one call on ``z``.

    Returns:
      ``(outputs, final_membrane)``: ``outputs`` has ``z``'s shape ``[T, ...]`` with values in
      ``{0, θ}``; ``final_membrane`` has shape ``z.shape[1:]``.

    Raises:
      ValueError: if ``z`` has no time axis or ``T == 0``, or ``membrane`` has the wrong shape.
    """
    z = jnp.asarray(z)
    if z.ndim < 1 or z.shape[0] < 1:
        raise ValueError(f"if_neuron expects time-major input [T, ...] with T >= 1, got shape {z.shape}.")
    neuron_shape = z.shape[1:]
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), neuron_shape)
    if membrane is None:
        membrane = initial_membrane(neuron_shape, theta, v0, z.dtype)
    elif membrane.shape != neuron_shape:
        raise ValueError(
            f"membrane must have the per-neuron shape z.shape[1:] = {neuron_shape}, got {membrane.shape}."
        )

    def step(v, z_t):
        return if_step(v, z_t, theta)

    final_membrane, outputs = jax.lax.scan(step, membrane, z)
    return outputs, final_membrane


def if_neuron(z: jax.Array, threshold: jax.Array | float, v0: float = 0.5) -> jax.Array:
    """Integrate-and-fire neuron over time-major input; see the module docstring for the rule.

    Args:
      z: input currents ``[T, ...]``, ``T >= 1``.
      threshold: θ, a scalar or an array broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ (½ for QCFS, ``shift2`` for SlipReLU).

    Returns:
      Outputs ``s·θ`` of shape ``[T, ...]``.
    """
    return if_neuron_with_state(z, threshold, v0)[0]
