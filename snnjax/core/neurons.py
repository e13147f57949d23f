"""Integrate-and-fire neurons as pure functions over time-major input.

Time convention (used everywhere in snnjax): axis 0 is time, ``z: [T, ...]``; the remaining axes are
whatever the layer has (``[T, B, H, W, C]`` for a conv layer, ``[T, B, F]`` for a dense one). The
membrane potential is the explicit carry of a ``lax.scan``, never hidden state.

Reference semantics (QCFS / SlipReLU code), per step ``t``:

```
m = v + z[t]            # integrate first: no one-step lag
s = (m >= θ)            # inclusive threshold
v = m - s·θ             # reset by subtraction ("soft reset")
out[t] = s·θ            # a spike carries the threshold's value
```

with ``v(0) = v0·θ`` (``v0 = ½`` for QCFS, ``shift2`` for SlipReLU).

Two further neurons serve SpikeConverter (Liu et al., AAAI 2022): `integrate_then_fire`
(temporal separation: a layer integrates its whole window before firing, which makes the SNN equal a
T-level quantized ANN exactly) and `signed_if_neuron` (firing overlaps integration; negative
spikes take back excess positive ones). Both are our reconstruction from the paper's description.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from snnjax.core import surrogates

__all__ = [
    "fixed_point_if_neuron",
    "if_neuron",
    "if_neuron_with_state",
    "if_step",
    "initial_membrane",
    "integrate_then_fire",
    "multi_spike_if_neuron",
    "signed_if_neuron",
]


def if_step(
    membrane: jax.Array, z_t: jax.Array, threshold: jax.Array, surrogate: Callable | None = None
) -> tuple[jax.Array, jax.Array]:
    """One integrate-and-fire step with inclusive threshold and reset by subtraction.

    Args:
      membrane: v before the step, shape ``S`` (e.g. ``[B, H, W, C]``).
      z_t: input current at this step, shape ``S``.
      threshold: θ, broadcast to shape ``S`` (use `jnp.broadcast_to`; rank promotion is not
        relied on).
      surrogate: optional derivative for the spike in the backward pass (`snnjax.core.surrogates`);
        the forward values are the same. None: the exact step, zero gradient through the spike.

    Returns:
      ``(new_membrane, output)``, both of shape ``S``; ``output`` is θ where the neuron fired, else 0.
    """
    potential = membrane + z_t
    if surrogate is not None:
        # m − θ ≥ 0 ⟺ m ≥ θ exactly in IEEE arithmetic, so the spikes are the same as below.
        output = surrogates.spike(potential - threshold, surrogate) * threshold
        return potential - output, output
    fired = potential >= threshold
    output = jnp.where(fired, threshold, jnp.zeros_like(threshold))
    return potential - output, output


def initial_membrane(
    shape: tuple[int, ...], threshold: jax.Array | float, v0: float = 0.5, dtype=jnp.float32
) -> jax.Array:
    """``v(0) = v0·θ`` broadcast to ``shape`` (the per-neuron shape, without the time axis)."""
    return jnp.broadcast_to(v0 * jnp.asarray(threshold, dtype), shape).astype(dtype)


def _time_major(z: jax.Array, name: str) -> jax.Array:
    z = jnp.asarray(z)
    if z.ndim < 1 or z.shape[0] < 1:
        raise ValueError(f"{name} expects time-major input [T, ...] with T >= 1, got shape {z.shape}.")
    return z


# Up to this many steps the IF scan is unrolled into straight-line code that XLA fuses into few passes
# over memory; the limits are where unrolling stopped paying off in the measurements of
# benchmarks/results/README.md (CPU and H100). Longer windows stay a rolled scan (compile time grows
# with the unrolled length).
UNROLL_MAX_STEPS = {"cpu": 8, "default": 32}


def _auto_unroll(num_steps: int) -> bool:
    limit = UNROLL_MAX_STEPS.get(jax.default_backend(), UNROLL_MAX_STEPS["default"])
    return num_steps <= limit


def if_neuron_with_state(
    z: jax.Array,
    threshold: jax.Array | float,
    v0: float = 0.5,
    membrane: jax.Array | None = None,
    unroll: int | bool | None = None,
    surrogate: Callable | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs an IF neuron over ``z`` and also returns the final membrane, to continue a run later.

    Args:
      z: input currents, time-major ``[T, ...]`` with ``T >= 1``.
      threshold: θ, a scalar or an array broadcasting against ``z.shape[1:]`` from the right
        (e.g. ``[C]`` for per-channel thresholds).
      v0: initial membrane as a fraction of θ; ignored when ``membrane`` is given.
      membrane: optional membrane to start from, shape ``z.shape[1:]`` (e.g. the second output of a
        previous call), which makes two calls on ``z[:k]`` and ``z[k:]`` equal one call on ``z``.
      unroll: ``lax.scan``'s unroll; None = fully unrolled up to ``UNROLL_MAX_STEPS`` steps (per
        backend), else rolled. The arithmetic is the same either way.
      surrogate: optional surrogate derivative of the spike (see `if_step`).

    Returns:
      ``(outputs, final_membrane)``: ``outputs`` has ``z``'s shape ``[T, ...]`` with values in
      ``{0, θ}``; ``final_membrane`` has shape ``z.shape[1:]``.

    Raises:
      ValueError: if ``z`` has no time axis or ``T == 0``, or ``membrane`` has the wrong shape.
    """
    z = _time_major(z, "if_neuron")
    neuron_shape = z.shape[1:]
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), neuron_shape)
    if membrane is None:
        membrane = initial_membrane(neuron_shape, theta, v0, z.dtype)
    elif membrane.shape != neuron_shape:
        raise ValueError(
            f"membrane must have the per-neuron shape z.shape[1:] = {neuron_shape}, got {membrane.shape}."
        )

    def step(v, z_t):
        return if_step(v, z_t, theta, surrogate)

    if unroll is None:
        unroll = _auto_unroll(z.shape[0])
    final_membrane, outputs = jax.lax.scan(step, membrane, z, unroll=unroll)
    return outputs, final_membrane


def if_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, surrogate: Callable | None = None
) -> jax.Array:
    """Integrate-and-fire neuron over time-major input; see the module docstring for the rule.

    Gradients: by default the spike is the exact step function, so ``jax.grad`` with respect to ``z``
    is zero (with respect to θ it is not: a spike carries θ's value). ``surrogate`` (e.g.
    ``snnjax.core.surrogates.triangle()``) keeps the outputs and uses its derivative for the spike in the
    backward pass, so a converted SNN can be fine-tuned.

    Args:
      z: input currents ``[T, ...]``, ``T >= 1``.
      threshold: θ, a scalar or an array broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ (½ for QCFS, ``shift2`` for SlipReLU).
      surrogate: optional surrogate derivative of the spike (`snnjax.core.surrogates`).

    Returns:
      Outputs ``s·θ`` of shape ``[T, ...]``.
    """
    return if_neuron_with_state(z, threshold, v0, surrogate=surrogate)[0]


def integrate_then_fire(z: jax.Array, threshold: jax.Array | float, v0: float = 0.5) -> jax.Array:
    """SpikeConverter's temporally separated neuron: integrate the whole window, then fire.

    Over a window of T steps the neuron first integrates every input without firing,
    ``V = v0·θ + Σ_t z[t]``; in the following T steps it fires one spike per step while ``V ≥ θ``
    (inclusive), resetting by subtraction. Spike ``k`` (0-based) is fired iff ``V ≥ (k+1)·θ``, so the
    count is ``clip(floor(V/θ), 0, T)`` whatever the order of the inputs, and the mean output over the
    window is ``θ/T · clip(floor(Σ_t z[t]/θ + v0), 0, T)``: QCFS with ``L = T`` and shift ``φ = v0``
    applied to the mean input. A network of these neurons therefore equals a T-level quantized
    clipped-ReLU ANN layer by layer.

    The firing phase of layer ``l`` is the integration phase of layer ``l+1``: the output is returned
    on the same ``[T, ...]`` window axis, and an SNN of ``n`` such layers has a latency of
    ``(n + 1)·T`` steps (the last, analog layer integrates for one more window).

    Args:
      z: input currents of one window, time-major ``[T, ...]``.
      threshold: θ, a scalar or an array broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ.

    Returns:
      ``[T, ...]`` outputs in ``{0, θ}``; the spikes occupy the first ``count`` steps.
    """
    z = _time_major(z, "integrate_then_fire")
    num_steps = z.shape[0]
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    potential = initial_membrane(z.shape[1:], theta, v0, z.dtype) + jnp.sum(z, axis=0)
    ordinal = jnp.arange(1, num_steps + 1, dtype=z.dtype).reshape((num_steps,) + (1,) * (z.ndim - 1))
    fires = potential[None] >= ordinal * theta[None]
    return jnp.where(fires, theta[None], jnp.zeros_like(theta)[None])


def signed_if_neuron(z: jax.Array, threshold: jax.Array | float, v0: float = 0.5) -> jax.Array:
    """IF neuron with signed spikes, for firing that starts before integration ends.

    Per step: ``m = v + z[t]``; if ``m ≥ θ`` a +θ spike (``v = m − θ``); else if ``m ≤ −θ`` and the
    neuron's net output so far is positive, a −θ spike (``v = m + θ``) that takes back an earlier
    one; else no spike. Once the input stops the net count ``n`` satisfies ``V = v0·θ + Σz − n·θ``
    with ``V ∈ (−θ, θ)`` (unless a bound binds), i.e. ``n`` is ``floor(V/θ)`` or one more; a plain IF
    neuron instead keeps every early spike whatever arrives later.

    Args:
      z: input currents ``[T, ...]``.
      threshold: θ, broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ.

    Returns:
      ``[T, ...]`` outputs in ``{−θ, 0, θ}``.
    """
    z = _time_major(z, "signed_if_neuron")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    zero = jnp.zeros_like(theta)

    def step(carry, z_t):
        membrane, net_count = carry
        potential = membrane + z_t
        positive = potential >= theta
        negative = ~positive & (potential <= -theta) & (net_count > 0)
        output = jnp.where(positive, theta, jnp.where(negative, -theta, zero))
        net_count = net_count + positive.astype(jnp.int32) - negative.astype(jnp.int32)
        return (potential - output, net_count), output

    start = (initial_membrane(z.shape[1:], theta, v0, z.dtype), jnp.zeros(z.shape[1:], jnp.int32))
    _, outputs = jax.lax.scan(step, start, z)
    return outputs


def multi_spike_if_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.0, *, min_membrane: float = -1.0
) -> jax.Array:
    """IF neuron with multi-spike output and a membrane floor: what sinabs runs for a NIR ``IF`` node.

    Per step: ``m = v + z[t]``; ``n = trunc(m/θ)`` spikes if ``m > 0``, else none (so ``n ≥ 1`` iff
    ``m/θ ≥ 1``: an inclusive threshold, and several spikes in one step when ``m ≥ 2θ``); ``v = m −
    n·θ``; then the floor ``v = relu(v − f) + f`` with ``f = min_membrane·θ``; the output is ``n·θ``.
    Starts at ``v(0) = v0·θ``. Reconstructed from sinabs 3.1.3 (SynSense, the Speck/Xylo toolchain):
    ``sinabs.nir`` maps a NIR ``IF`` node to ``IAFSqueeze(spike_threshold=θ, min_v_mem=−θ)``, whose
    step (``layers/functional/lif.py``) integrates, fires ``MultiSpike`` (``(v > 0)·trunc(v/θ)``),
    resets by ``MembraneSubtract`` (``v − n·θ``) and floors the membrane as written above; its
    membranes start at 0. The same expressions are used here, in the same order, so that float32
    results agree bit for bit. sinabs's spikes are counts (value 1); NIR export for sinabs folds θ
    into the weights that read them (`snnjax.io.export_nir` with ``target="sinabs"``).

    With ``v0 = 0`` the neuron fires ``floor`` of the accumulated input over θ, not its rounding: the
    QCFS shift that matches it is ``φ = 0``.

    Args:
      z: input currents ``[T, ...]``.
      threshold: θ > 0, broadcasting against ``z.shape[1:]`` from the right.
      v0: initial membrane as a fraction of θ (sinabs: 0).
      min_membrane: the membrane floor as a fraction of θ (sinabs: −1).

    Returns:
      ``[T, ...]`` outputs ``n·θ`` (``n ≥ 0`` spikes per step).
    """
    z = _time_major(z, "multi_spike_if_neuron")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    floor = jnp.asarray(min_membrane, z.dtype) * theta

    def step(membrane, z_t):
        potential = membrane + z_t
        count = (potential > 0) * jnp.trunc(potential / theta)
        membrane = potential - count * theta
        return jnp.maximum(membrane - floor, 0) + floor, count * theta  # sinabs: relu(v − f) + f

    _, outputs = jax.lax.scan(step, initial_membrane(z.shape[1:], theta, v0, z.dtype), z)
    return outputs


def fixed_point_if_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, bits: int = 16
) -> jax.Array:
    """The IF neuron of integer hardware: a ``bits``-bit membrane that saturates, integer input.

    Per step: ``m = clip(v + round(z[t]), −2^(bits−1), 2^(bits−1) − 1)`` (a saturating add of the
    input current rounded to an integer, half to even); a spike if ``m ≥ θ``; ``v = m − s·θ``; the
    output is ``s·θ``. Starts at ``v(0) = round(v0·θ)`` (an integer register). Everything is in the
    layer's integer units (the weights' least significant bit, `snnjax.conversion.hardware`), where θ is
    an integer: every value is then an integer below 2^24, which float32 computes exactly. With integer
    currents, an integer ``v0·θ`` and a membrane that never reaches the bounds it equals `if_neuron`.

    Args:
      z: input currents ``[T, ...]`` in the layer's integer units.
      threshold: θ (an integer ≥ 1 in those units), broadcasting against ``z.shape[1:]``.
      v0: initial membrane as a fraction of θ.
      bits: the membrane's width (two's complement), 2 to 24.

    Returns:
      ``[T, ...]`` outputs ``s·θ``, ``s ∈ {0, 1}``.

    Raises:
      ValueError: for ``bits`` outside 2..24 (float32 holds integers exactly up to 2^24).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 24:
        raise ValueError(f"bits must be an int in 2..24 (float32 is exact up to 2^24), got {bits!r}.")
    z = _time_major(z, "fixed_point_if_neuron")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    low, high = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1

    def step(membrane, z_t):
        # The saturating integer add, then the reference firing and reset of `if_step` (adding a zero
        # current there is exact).
        saturated = jnp.clip(membrane + jnp.round(z_t), low, high)
        return if_step(saturated, jnp.zeros_like(saturated), theta)

    start = jnp.round(initial_membrane(z.shape[1:], theta, v0, z.dtype))
    _, outputs = jax.lax.scan(step, start, z)
    return outputs
