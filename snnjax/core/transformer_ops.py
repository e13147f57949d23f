"""Time-major primitives of exact transformer conversion (SpikeZIP-TF style), as pure functions.

Every exact ANN-to-SNN transformer conversion (SpikeZIP-TF, Li et al., ICML 2024; ECMT, ACM MM 2024)
reduces to three operators on time-major arrays ``[T, ...]``, each with an identity that holds at
every step ``t`` for the running sums ``S_t = Σ_{s ≤ t} z_s`` of its inputs:

* `st_bif_neuron`: a signed, count-bounded IF neuron. Its accumulated output ``Σ_{s ≤ t} y_s``
  equals the ANN's quantizer (`signed_quantizer`) applied to ``S_t`` once the neuron has had
  ``L − lower`` steps with no new input to settle (one spike per step).
* `temporal_difference`: ``y_t = f(S_t) − f(S_{t−1})`` for a nonlinearity with no spiking form
  (softmax, LayerNorm, GELU): ``Σ_{s ≤ t} y_s = f(S_t)`` exactly (the sum telescopes), with
  ``f(S_0) := 0``.
* `spike_train_product`: ``y_t = A_{t−1}·b_t + a_t·B_{t−1} + a_t·b_t`` for a product of two
  spike trains (QKᵀ, attention·V): ``Σ_{s ≤ t} y_s = A_t·B_t``.

So an SNN built from them, fed its input once (or spread over steps), equals the quantized ANN after
enough steps: its readout is the *accumulated* output ``Σ_{s ≤ t} y_s``, not the CNN's mean over t
(the mean of a CNN's IF outputs estimates its rate; here each step's output is an increment).
Softmax and LayerNorm outputs stay multi-valued floats (analog) in every published method; only the
IF neurons' outputs are spikes.

Reconstructed from the papers' descriptions and the issue's statement of the semantics (the authors'
code, ``Intelligent-Computing-Research-Group/SpikeZIP-TF`` ``spike_quan_layer.py``, carries no licence:
nothing is copied). Choices, stated: the neuron starts at ``v(0) = ½θ`` (so its settled count rounds
half up, as the quantizer does); it fires at most one spike per step, +θ before −θ; bounds are on the
spike count, not the membrane.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from snnjax.core.neurons import _time_major

__all__ = ["signed_quantizer", "spike_train_product", "st_bif_neuron", "temporal_difference"]


def signed_quantizer(x: jax.Array, threshold: jax.Array | float, levels: int, lower: int = 0) -> jax.Array:
    """The quantizer an exact-conversion ANN trains with: ``θ·clip(floor(x/θ + ½), lower, levels)``.

    QCFS with shift φ = ½ written with the step θ = λ/L, extended to negative levels for signed
    activations (``lower < 0``, e.g. Q, K, V, block outputs). Its gradient is the QCFS straight-through
    one: 1 inside ``[(lower − ½)θ, (levels + ½)θ)``, 0 outside.

    Args:
      x: pre-activations, any shape.
      threshold: θ > 0, broadcasting against ``x``.
      levels: the largest count L ≥ 1.
      lower: the smallest count (0 for unsigned activations, negative for signed ones).

    Returns:
      ``x`` quantized, same shape.
    """
    theta = jnp.asarray(threshold, x.dtype)
    scaled = x / theta
    count = jnp.clip(jnp.floor(scaled + 0.5), lower, levels)
    # Straight-through: the identity's gradient inside the range, zero outside.
    inside = (scaled >= lower - 0.5) & (scaled < levels + 0.5)
    surrogate = jnp.where(inside, scaled, jax.lax.stop_gradient(scaled))
    return theta * (surrogate + jax.lax.stop_gradient(count - surrogate))


def st_bif_neuron(
    z: jax.Array, threshold: jax.Array | float, levels: int, lower: int = 0, v0: float = 0.5
) -> jax.Array:
    """Signed, count-bounded IF neuron (SpikeZIP-TF's ST-BIF) over time-major input.

    Per step: ``m = v + z[t]``; a +θ spike if ``m ≥ θ`` and the spike count ``c < levels``; else a −θ
    spike if ``m < 0`` and ``c > lower``; else none. ``v = m − output``, ``c`` counts +1 / −1.
    Starts at ``v(0) = v0·θ``, ``c = 0``.

    Identity (tested): with ``S`` the sum of all inputs, once the input has stopped the count settles
    to ``clip(floor(S/θ + v0), lower, levels)``: `signed_quantizer` of ``S`` for ``v0 = ½``. The
    count moves by at most one per step, so ``levels − lower`` steps after the last input suffice
    (and are needed: an input of ``levels·θ`` at once takes ``levels`` steps to be spent).

    Args:
      z: input currents ``[T, ...]``.
      threshold: θ > 0, broadcasting against ``z.shape[1:]`` from the right.
      levels: the largest spike count L.
      lower: the smallest (net) spike count, ≤ 0.
      v0: initial membrane as a fraction of θ.

    Returns:
      ``[T, ...]`` outputs in ``{−θ, 0, θ}``.
    """
    z = _time_major(z, "st_bif_neuron")
    theta = jnp.broadcast_to(jnp.asarray(threshold, z.dtype), z.shape[1:])
    zero = jnp.zeros_like(theta)

    def step(carry, z_t):
        membrane, count = carry
        potential = membrane + z_t
        up = (potential >= theta) & (count < levels)
        down = ~up & (potential < 0) & (count > lower)
        output = jnp.where(up, theta, jnp.where(down, -theta, zero))
        return (potential - output, count + up.astype(jnp.int32) - down.astype(jnp.int32)), output

    start = (v0 * theta, jnp.zeros(z.shape[1:], jnp.int32))
    _, outputs = jax.lax.scan(step, start, z)
    return outputs


def temporal_difference(
    fn: Callable[[jax.Array], jax.Array], z: jax.Array, per_step: bool = True
) -> jax.Array:
    """``y_t = fn(S_t) − fn(S_{t−1})`` with ``S_t`` the running sum of ``z`` and ``fn(S_0) := 0``.

    For a nonlinearity with no spiking form (softmax, LayerNorm, GELU): the accumulated output is
    ``fn`` of the accumulated input at every step, ``Σ_{s ≤ t} y_s = fn(S_t)``. ``fn`` is applied to
    each step's running sum (it may act on trailing axes, e.g. softmax over the keys).

    Args:
      fn: the nonlinearity (shape-preserving): of one step's ``[...]``, or with ``per_step=False`` of
        all steps' ``[T, ...]`` at once (it must act on each step alone, e.g. a layer run with time
        folded into the batch).
      z: inputs ``[T, ...]``.
      per_step: whether ``fn`` takes one step (mapped over T) or all of them.

    Returns:
      ``[T, ...]`` increments (multi-valued floats: an analog operator).
    """
    z = _time_major(z, "temporal_difference")
    sums = jnp.cumsum(z, axis=0)
    values = jax.vmap(fn)(sums) if per_step else fn(sums)
    return values - _one_step_before(values)


def spike_train_product(
    a: jax.Array,
    b: jax.Array,
    product: Callable[[jax.Array, jax.Array], jax.Array] = jnp.matmul,
    form: str = "events",
) -> jax.Array:
    """The increments of a bilinear product of two spike trains: ``Σ_{s ≤ t} y_s = A_t·B_t``.

    ``y_t = A_{t−1}·b_t + a_t·B_{t−1} + a_t·b_t`` with ``A_t``, ``B_t`` the running sums of ``a``
    and ``b`` (``A_0 = B_0 = 0``): the product of what has arrived so far, made incremental (SpikeZIP's
    ``A_acc·b_t + a_t·B_acc − a_t·b_t`` with its accumulators after the update). Each term has a
    spike train as one factor, so hardware computes it event by event.

    Args:
      a: ``[T, ...]``, e.g. queries ``[T, B, heads, n, d]``.
      b: ``[T, ...]``, e.g. keys transposed ``[T, B, heads, d, n]``.
      product: a bilinear function of one step's ``a`` and ``b`` (default ``jnp.matmul``).
      form: ``"events"``: the three terms above (the reference form); ``"difference"``:
        ``A_t·B_t − A_{t−1}·B_{t−1}``, one product per step instead of three (the same increments up
        to float rounding; what a dense simulation runs faster).

    Returns:
      ``[T, ...]`` increments of ``product(A_t, B_t)``.
    """
    a, b = _time_major(a, "spike_train_product"), _time_major(b, "spike_train_product")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"spike_train_product: a has {a.shape[0]} steps, b {b.shape[0]}; both need T.")
    step = jax.vmap(product)
    if form == "difference":
        totals = step(jnp.cumsum(a, axis=0), jnp.cumsum(b, axis=0))  # A_t·B_t
        return totals - _one_step_before(totals)
    if form != "events":
        raise ValueError(f"spike_train_product: form={form!r}; use 'events' or 'difference'.")
    before_a = _one_step_before(jnp.cumsum(a, axis=0))  # A_{t−1}
    before_b = _one_step_before(jnp.cumsum(b, axis=0))  # B_{t−1}
    return step(before_a, b) + step(a, before_b) + step(a, b)


def _one_step_before(x: jax.Array) -> jax.Array:
    """``[0, x_1, ..., x_{T−1}]``: each step's value of the step before (zero before the first)."""
    return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)
