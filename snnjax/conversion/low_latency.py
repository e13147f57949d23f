"""Training-free low-latency neurons for a converted SNN, and what each one costs in latency.

Each mechanism is a pure function over one layer's time-major input currents ``z: [T, ...]`` with the
threshold θ (broadcasting against ``z.shape[1:]`` from the right) and the initial membrane fraction
``v0``, like `snnjax.core.neurons.if_neuron`; with the mechanism switched off (``max_spikes=1``,
``prerun=0``) each equals the IF neuron bit for bit. `snnjax.SpikingNetwork` runs them by name
(``neuron=`` and ``neuron_options=``), layer mode only.

* **Multi-level spikes** (`burst_neuron`, `group_neuron`): up to m spikes per step.
  Burst spikes (Li & Zeng, IJCAI 2022, code Brain-Cog-Lab/Conversion_Burst): quantum θ, at most m
  spikes a step. Group neurons (Lyu et al., ICASSP 2024, code Lyu6PosHao/ANN2SNN_GN): m member
  neurons with thresholds k·θ/m, k = 1..m, that integrate the same input and reset together by the
  number of members that fired; their potentials therefore stay equal, and the group is one
  potential with quantum θ/m and at most m spikes a step (which is how it is computed here), starting
  at ``v(0) = v0·θ/m`` (the reference's ½ of a member's threshold).
* **Offset-spike calibration, COS** (Hao et al., ICLR 2023, code hzc1208/ANN2SNN_COS):
  `offset_calibrated_membrane` pre-runs ρ steps and shifts each neuron's v(0) by the rule of the
  reference code; `cos_neuron` is the reference schedule (each layer pre-runs on the first ρ
  steps of its own input, then replays the input from the start), `cos_network_neuron` our
  network-wide variant (the pre-run steps are the first ρ steps of the whole network's run).
* **Residual membrane potential, SRP** (Hao et al., AAAI 2023, code hzc1208/ANN2SNN_SRP):
  `srp_neuron` runs τ steps, silences the neurons whose residual potential is not above 10⁻³·θ,
  restarts every membrane at ``v0·θ`` and runs the rest of the window with that mask.

Honest latency (`snnjax.conversion.neuron_registry.Neuron.total_latency`): every simulated step from the
first input to the output counts. With ``n`` spiking layers on the longest path, an output after ``t``
steps of the readout window costs ``t`` steps for IF, burst, group and calibrated neurons; ``τ + t`` for
SRP and ``ρ + t`` for the network-wide COS (the pre-run is part of the same run); ``n·ρ + t`` for the
reference COS schedule (layer ``l`` cannot start its calibrated run before it has pre-run on ρ outputs
of layer ``l-1``'s calibrated run); ``(n + 1)·t`` for SpikeConverter's layer-separated
``integrate_then_fire``. The papers report T without the pre-run steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from snnjax.core.neurons import _time_major, if_neuron_with_state, initial_membrane

__all__ = [
    "burst_neuron",
    "cos_network_neuron",
    "cos_neuron",
    "group_neuron",
    "multi_spike_neuron",
    "offset_calibrated_membrane",
    "srp_neuron",
]


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    return value


def multi_spike_neuron(
    z: jax.Array, quantum: jax.Array | float, max_spikes: int, membrane: jax.Array
) -> jax.Array:
    """IF neuron that fires up to ``max_spikes`` spikes of value ``quantum`` per step.

    Per step: ``m = v + z[t]``; ``n = #{k ∈ 1..max_spikes : m ≥ k·quantum}`` (inclusive thresholds,
    compared one by one, as the group neuron's members do); ``v = m − n·quantum``; output
    ``n·quantum``. With ``max_spikes = 1`` this is `snnjax.core.neurons.if_step` exactly.

    Args:
      z: input currents ``[T, ...]``.
      quantum: the value of one spike, broadcasting against ``z.shape[1:]`` from the right.
      max_spikes: m ≥ 1.
      membrane: v(0), shape ``z.shape[1:]``.

    Returns:
      Outputs ``[T, ...]`` in ``{0, q, …, m·q}``.
    """
    z = _time_major(z, "multi_spike_neuron")
    max_spikes = _count("max_spikes", max_spikes, 1)
    q = jnp.broadcast_to(jnp.asarray(quantum, z.dtype), z.shape[1:])
    levels = [k * q for k in range(1, max_spikes + 1)]  # the members' thresholds k·q

    def step(v, z_t):
        potential = v + z_t
        if max_spikes == 1:  # the IF neuron's own expression, so that m = 1 is IF bit for bit
            output = jnp.where(potential >= q, q, jnp.zeros_like(q))
        else:
            spikes = sum((potential >= level).astype(z.dtype) for level in levels)
            output = spikes * q
        return potential - output, output

    _, outputs = jax.lax.scan(step, membrane.astype(z.dtype), z)
    return outputs


def burst_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, max_spikes: int = 2
) -> jax.Array:
    """Burst spikes: up to ``max_spikes`` spikes of value θ per step (Li & Zeng, IJCAI 2022).

    The reference code fires ``clamp(floor(v/θ), 0, γ)`` spikes and starts at v = 0 with its own
    data-based θ; here θ is the converted layer's threshold and v(0) = ``v0``·θ (the method's φ), and
    the count is formed by comparisons (equal to the floor for these values).

    Args:
      z: input currents ``[T, ...]``.
      threshold: θ, broadcasting against ``z.shape[1:]``.
      v0: v(0)/θ.
      max_spikes: m, the burst length limit (1 = IF).

    Returns:
      ``[T, ...]`` outputs in ``{0, θ, …, m·θ}``.
    """
    z = _time_major(z, "burst_neuron")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    return multi_spike_neuron(z, theta, max_spikes, initial_membrane(z.shape[1:], theta, v0, z.dtype))


def group_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, max_spikes: int = 4
) -> jax.Array:
    """Group neuron of m = ``max_spikes`` members with thresholds k·θ/m (Lyu et al., ICASSP 2024).

    One shared potential (see the module docstring) with quantum θ/m, up to m spikes per step, and
    ``v(0) = v0·θ/m``. With a constant input ``z ∈ [0, θ]`` the mean output after T steps is
    ``θ/(mT)·floor(mT·z/θ + v0)``: QCFS with ``L = m·T`` levels (tested).

    Args:
      z: input currents ``[T, ...]``.
      threshold: θ, broadcasting against ``z.shape[1:]``.
      v0: v(0) as a fraction of one member's threshold θ/m.
      max_spikes: m, the number of members (1 = IF).

    Returns:
      ``[T, ...]`` outputs in ``{0, θ/m, …, θ}``.
    """
    z = _time_major(z, "group_neuron")
    _count("max_spikes", max_spikes, 1)
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    quantum = theta / max_spikes if max_spikes > 1 else theta
    return multi_spike_neuron(z, quantum, max_spikes, initial_membrane(z.shape[1:], quantum, v0, z.dtype))


def offset_calibrated_membrane(
    z_prerun: jax.Array, threshold: jax.Array | float, v0: float = 0.5
) -> jax.Array:
    """COS: the shifted initial membrane after a pre-run of ρ steps (Hao et al., ICLR 2023).

    Our reading of the reference code (its ``MPLayer``, first iteration), in units of θ: the neuron
    runs ``z_prerun`` from ``v0``. A neuron that fired at least once and ends below 0 fired one spike
    too many (an offset spike of +1): its start is lowered by ``max(1, m_min − 0.999)``, with
    ``m_min`` the smallest potential at which it fired. A neuron that ends at 1 or above fired too
    few: its start is raised by ``max(1, 1.001 − m_max)``, with ``m_max`` the largest potential of a
    step in which it did not fire (−1000 when it fired at every step). Others keep ``v0``.

    Args:
      z_prerun: the first ρ ≥ 1 input currents ``[ρ, ...]``.
      threshold: θ, broadcasting against ``z_prerun.shape[1:]``.
      v0: v(0)/θ of the pre-run (and of the uncorrected neurons).

    Returns:
      The calibrated absolute v(0), shape ``z_prerun.shape[1:]``.
    """
    z = _time_major(z_prerun, "offset_calibrated_membrane")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    big = jnp.asarray(1000.0, z.dtype)

    def step(carry, z_t):
        v, spikes, lowest_fired, highest_silent = carry
        potential = v + z_t
        fired = potential >= theta
        scaled = potential / theta
        lowest_fired = jnp.minimum(lowest_fired, jnp.where(fired, scaled, big))
        highest_silent = jnp.maximum(highest_silent, jnp.where(fired, -big, scaled))
        v = potential - jnp.where(fired, theta, jnp.zeros_like(theta))
        return (v, spikes + fired.astype(z.dtype), lowest_fired, highest_silent), None

    start = initial_membrane(z.shape[1:], theta, v0, z.dtype)
    full = jnp.full(z.shape[1:], 1.0, z.dtype)
    carry = (start, jnp.zeros_like(start), full * big, -full * big)
    (v, spikes, lowest_fired, highest_silent), _ = jax.lax.scan(step, carry, z)
    residual = v / theta
    down = jnp.where(lowest_fired - 0.999 > 1.0, lowest_fired - 0.999, 1.0)
    up = jnp.where(1.001 - highest_silent > 1.0, 1.001 - highest_silent, 1.0)
    shifted = jnp.where((residual < 0) & (spikes > 0), v0 - down, v0)
    shifted = jnp.where(residual >= 1.0, v0 + up, shifted)
    return shifted * theta


def cos_neuron(z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, prerun: int = 4) -> jax.Array:
    """COS, reference schedule: pre-run on ``z[:ρ]``, then run all of ``z`` from the shifted v(0).

    Each layer pre-runs on the first ρ steps of its own input (the previous layer's calibrated
    output) and then replays that input from step 0, so the layers' pre-runs follow one another:
    total latency ``n·ρ + t`` for ``n`` spiking layers (`snnjax.conversion.neuron_registry.Neuron`).

    Args:
      z: input currents ``[T, ...]`` with ``T ≥ ρ``.
      threshold: θ, broadcasting against ``z.shape[1:]``.
      v0: v(0)/θ before calibration.
      prerun: ρ ≥ 0 (0 = the IF neuron).

    Returns:
      ``[T, ...]`` outputs in ``{0, θ}`` of the calibrated run.

    Raises:
      ValueError: if ``T < ρ``.
    """
    z = _time_major(z, "cos_neuron")
    prerun = _count("prerun", prerun, 0)
    if prerun > z.shape[0]:
        raise ValueError(f"COS pre-runs on the first ρ={prerun} input steps; got only T={z.shape[0]}.")
    if prerun == 0:
        return if_neuron_with_state(z, threshold, v0)[0]
    membrane = offset_calibrated_membrane(z[:prerun], threshold, v0)
    return if_neuron_with_state(z, threshold, membrane=membrane)[0]


def _prerun_window(z: jax.Array, prerun: int, name: str) -> jax.Array:
    z = _time_major(z, name)
    prerun = _count("prerun", prerun, 0)
    if prerun >= z.shape[0]:
        raise ValueError(
            f"{name}: the window of {z.shape[0]} steps must hold the {prerun} pre-run steps and at least "
            "one more."
        )
    return z


def cos_network_neuron(
    z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, prerun: int = 4
) -> jax.Array:
    """COS, network-wide pre-run (ours): steps ``[0, ρ)`` pre-run, steps ``[ρ, ρ+T)`` the calibrated run.

    The whole network runs ρ steps; each neuron then restarts at its COS-shifted v(0)
    (`offset_calibrated_membrane` of its own pre-run input) for the rest of the window. Unlike
    the reference schedule, a layer's pre-run sees the previous layer's *pre-run* output, so all layers
    pre-run at once: total latency ``ρ + t``.

    Args:
      z: input currents ``[ρ + T, ...]``.
      threshold: θ.
      v0: v(0)/θ of the pre-run.
      prerun: ρ ≥ 0.

    Returns:
      ``[ρ + T, ...]``: the pre-run's outputs, then the calibrated run's (the readout uses the last T).
    """
    z = _prerun_window(z, prerun, "cos_network_neuron")
    if prerun == 0:
        return if_neuron_with_state(z, threshold, v0)[0]
    early, _ = if_neuron_with_state(z[:prerun], threshold, v0)
    membrane = offset_calibrated_membrane(z[:prerun], threshold, v0)
    late, _ = if_neuron_with_state(z[prerun:], threshold, membrane=membrane)
    return jnp.concatenate([early, late], axis=0)


def srp_neuron(z: jax.Array, threshold: jax.Array | float, v0: float = 0.5, *, prerun: int = 4) -> jax.Array:
    """SRP: τ steps, mask by residual potential, restart (Hao et al., AAAI 2023).

    As the reference code: the neuron runs ``z[:τ]`` from ``v0·θ``; its mask is ``v(τ) > 10⁻³·θ``
    (a neuron whose residual is ≤ 0 fired a spike its later input took back: its ANN output is 0);
    every membrane restarts at ``v0·θ`` and runs ``z[τ:]``, outputs multiplied by the mask (a masked
    neuron still integrates and resets; its spikes are not sent).

    Args:
      z: input currents ``[τ + T, ...]``.
      threshold: θ.
      v0: v(0)/θ of both runs.
      prerun: τ ≥ 0 (0 = the IF neuron).

    Returns:
      ``[τ + T, ...]``: the pre-run's outputs, then the masked run's (the readout uses the last T).
    """
    z = _prerun_window(z, prerun, "srp_neuron")
    if prerun == 0:
        return if_neuron_with_state(z, threshold, v0)[0]
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    early, residual = if_neuron_with_state(z[:prerun], theta, v0)
    keep = residual > 1e-3 * theta
    late, _ = if_neuron_with_state(z[prerun:], theta, v0)
    return jnp.concatenate([early, jnp.where(keep, late, jnp.zeros_like(late))], axis=0)
