"""ANN activations designed for ANN-to-SNN conversion, as pure JAX functions.

Every function here is elementwise: ``x`` may have any shape, and ``threshold`` (λ) is a scalar or any
array that broadcasts against ``x`` from the right (e.g. one value per channel, shape ``[C]`` for
``x`` of shape ``[..., C]``). All functions are jit/vmap/grad compatible and need no Flax.

Gradient conventions (these change training, so they are part of the API):

* ``floor`` is straight-through: forward ``floor(u)``, backward identity.
* Clipping passes the gradient on the **closed** interval, inclusive at both ends, like PyTorch's
  ``clamp``. ``jnp.clip`` is built from ``maximum``/``minimum`` whose gradient is 0.5 at ties; for
  QCFS that matters because ``floor(u) / L`` sits *exactly* on 0 or 1 over whole intervals of ``x``.
* Gradients w.r.t. λ come from autodiff of the forward formula (the λ-derivative printed in the QCFS
  paper is known to be wrong, so we do not hand-code it).
"""

from __future__ import annotations

import enum
import operator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "QCFSOrder",
    "clip_inclusive",
    "floor_ste",
    "qcfs",
    "relu",
    "slip_relu",
    "threshold_relu",
]


class QCFSOrder(enum.StrEnum):
    """Order of clip and floor in QCFS; same forward pass, different gradients.

    ``FLOOR_CLIP`` (the seed paper's code, ``MyFloor`` of putshua/SNN_conversion_QCFS; our default):
        ``a = λ · clip(floor(x·L/λ + φ) / L, 0, 1)``. The mask is taken on the *floored* value, so
        the gradient also flows on the strip ``x ∈ [-φλ/L, 0)`` (and on ``(λ, λ(1 + (1-φ)/L))``),
        where the floored value is exactly 0 or 1. With λ = 8, L = 4 the lower strip is about one
        BatchNorm standard deviation wide: pre-activations just below zero still move λ, the
        BatchNorm scale and the weights, λ follows the data down, and the first quantization level
        does not take most units.
    ``CLIP_FLOOR`` (the QCFS authors' revised code, putshua/ANN_SNN_QCFS):
        ``a = λ · floor(clip(x/λ, 0, 1) · L + φ) / L``. Gradient reaches x only for
        ``0 <= x <= λ``: λ then shrinks mostly by weight decay, most units sit on the first level,
        and IF neurons with v(0) = θ/2 stay silent for the first steps.

    Which to use: ``FLOOR_CLIP`` to train an ANN that converts well at low T. Trained on the reference
    recipe (ResNet-20, CIFAR-10 (JPEG), L = 4), it lost less at T = 4 and 8 than the reference code
    itself (1 epoch, 3 seeds: 3.7 ± 2.1 / 1.1 ± 1.4 points vs 6.8 ± 4.4 / 4.0 ± 3.9) and much less
    than ``CLIP_FLOOR`` (1 epoch: 27.75 % vs 33.1 % at T = 4), with an ANN no worse than the
    reference's (``benchmarks/results/README.md``, "Same recipe"). ``CLIP_FLOOR`` can give the better
    ANN: on the 4-epoch ResNet-20 CPU run (one seed) its ANN was 9.7 points higher and its SNN ahead
    from T = 4 on, though it lost more in conversion (README, low-latency table). On the MNIST CNN
    (2 epochs, 3 seeds) ``CLIP_FLOOR`` converts better at every T ≤ 8 (ANN − SNN at T = 1 / 2 / 4:
    14.2 / 4.4 / 0.3 vs 34.0 / 12.9 / 1.5 points, with an ANN 0.3 lower). So which order converts
    better depends on the network and its training; the default follows the seed paper's code.
    ``CLIP_FLOOR`` also follows the revised code's training gradients exactly; a converted network is
    the same under both (the forward pass is).
    """

    CLIP_FLOOR = "clip_floor"
    FLOOR_CLIP = "floor_clip"


def floor_ste(u: jax.Array) -> jax.Array:
    """``floor(u)`` in the forward pass, identity in the backward pass (straight-through)."""
    return u + jax.lax.stop_gradient(jnp.floor(u) - u)


def clip_inclusive(x: jax.Array, lower: jax.Array | float, upper: jax.Array | float) -> jax.Array:
    """``clip(x, lower, upper)`` whose gradient w.r.t. ``x`` is 1 on the closed ``[lower, upper]``.

    ``jnp.where`` picks ``x`` itself at the bounds, so the mask is inclusive at both ends (PyTorch
    ``clamp`` semantics). Where ``x`` is clipped the gradient goes to the bound instead, which is how
    a traced ``upper = λ`` receives its gradient.
    """
    x = jnp.where(x < lower, lower, x)
    return jnp.where(x > upper, upper, x)


def _broadcast_threshold(threshold: jax.Array | float, x: jax.Array) -> jax.Array:
    # Explicit broadcast from the right, so per-channel λ works under jax_numpy_rank_promotion="raise".
    return jnp.broadcast_to(jnp.asarray(threshold, jnp.result_type(x)), jnp.shape(x))


def _check_levels(levels: int) -> int:
    """``levels`` as a Python int: Python and NumPy ints are accepted; a traced value is refused."""
    if isinstance(levels, jax.core.Tracer):
        raise ValueError(
            "levels (L) is a traced value, but it sets the quantization grid and must be static: pass a "
            "Python int (e.g. functools.partial(qcfs, levels=4), or jax.jit(..., static_argnames='levels'))."
        )
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer) or levels <= 0:
        raise ValueError(f"levels (L) must be a positive int, got {levels!r}.")
    return operator.index(levels)


def _check_threshold(threshold: jax.Array | float) -> None:
    """Refuses λ ≤ 0 when λ is a concrete value (outside jit; traced values are not inspected)."""
    if isinstance(threshold, jax.core.Tracer):
        return
    values = np.asarray(threshold)
    if values.size and not np.all(values > 0):
        raise ValueError(
            f"the threshold λ must be positive (it divides x), got min λ = {float(values.min())}; with the "
            "identity parameterization λ can drift below zero in training: use threshold_parameterization="
            "'softplus' or a larger threshold_init."
        )


def relu(x: jax.Array) -> jax.Array:
    """Plain ReLU, ``max(x, 0)``; the activation of the threshold-balancing baseline."""
    return jax.nn.relu(x)


def threshold_relu(x: jax.Array, threshold: jax.Array | float) -> jax.Array:
    """Threshold-ReLU (clipped ReLU) ``clip(x, 0, λ)`` with the inclusive gradient mask.

    Args:
      x: pre-activations, any shape.
      threshold: λ, a scalar or an array broadcasting against ``x``.

    Returns:
      Array of ``x``'s shape. Gradient w.r.t. λ is 1 where ``x > λ`` and 0 elsewhere.
    """
    _check_threshold(threshold)
    return clip_inclusive(x, 0.0, _broadcast_threshold(threshold, x))


def qcfs(
    x: jax.Array,
    threshold: jax.Array | float,
    levels: int,
    shift: float = 0.5,
    order: QCFSOrder | str = QCFSOrder.FLOOR_CLIP,
) -> jax.Array:
    """Quantization-clip-floor-shift activation (Bu et al., ICLR 2022).

    ``a = λ · clip(floor(x·L/λ + φ) / L, 0, 1)``, which equals the average output of an IF neuron with
    threshold λ and initial membrane φλ over ``T = L`` steps of constant input ``x`` (and, with
    φ = ½, the expected output for any T).

    Args:
      x: pre-activations, any shape.
      threshold: λ > 0, a scalar or an array broadcasting against ``x``.
      levels: L, the number of quantization steps: a positive int (Python or NumPy), static.
      shift: φ in ``[0, 1)``; ½ is the paper's choice, 0 gives clip-floor (QCFS Theorem 1).
      order: ``"floor_clip"`` (default, the seed paper's code) or ``"clip_floor"`` (the revised
        code); identical forward pass, different gradients (the strip below 0), see `QCFSOrder`.

    Returns:
      Array of ``x``'s shape, values in ``{0, λ/L, ..., λ}``.

    Raises:
      ValueError: for ``levels`` that is not a positive int or is traced, or a concrete λ ≤ 0.
    """
    levels = _check_levels(levels)
    _check_threshold(threshold)
    order = QCFSOrder(order)
    threshold = _broadcast_threshold(threshold, x)
    if order is QCFSOrder.CLIP_FLOOR:
        return threshold * floor_ste(clip_inclusive(x / threshold, 0.0, 1.0) * levels + shift) / levels
    return threshold * clip_inclusive(floor_ste(x * levels / threshold + shift) / levels, 0.0, 1.0)


def slip_relu(
    x: jax.Array,
    threshold: jax.Array | float,
    levels: int,
    c: float,
    shift1: float = 0.0,
    shift2: float = 0.5,
) -> jax.Array:
    """SlipReLU (Jiang et al., ICML 2023): a weighted sum of threshold-ReLU and a step function.

    ``c · λ·clip(x/λ + shift1/L, 0, 1) + (1 − c) · λ·clip(floor(L·x/λ + shift2)/L, 0, 1)``.

    The first term is written as ``clip(x + shift1·λ/L, 0, λ)`` (the same function and gradient) so
    that ``c = 1, shift1 = 0`` is *exactly* `threshold_relu`; the second term is exactly
    `qcfs` in ``floor_clip`` order, so ``c = 0, shift2 = ½`` is QCFS and ``c = 0, shift2 = 0``
    is clip-floor.

    Args:
      x: pre-activations, any shape.
      threshold: λ > 0, a scalar or an array broadcasting against ``x``.
      levels: L, a positive int.
      c: slope weight in ``[0, 1]`` (a Python number; checked).
      shift1: shift of the ReLU part, in units of λ/L.
      shift2: shift of the step part (φ of QCFS); also the IF initial membrane fraction ``v0``.

    Returns:
      Array of ``x``'s shape.

    Raises:
      ValueError: if ``c`` is outside ``[0, 1]`` or ``levels`` is not a positive int.
    """
    if not isinstance(c, jax.core.Tracer) and not 0.0 <= float(c) <= 1.0:
        raise ValueError(f"SlipReLU weight c must lie in [0, 1], got {c!r}.")
    levels = _check_levels(levels)
    _check_threshold(threshold)
    threshold = _broadcast_threshold(threshold, x)
    ramp = clip_inclusive(x + shift1 * threshold / levels, 0.0, threshold)
    step = qcfs(x, threshold, levels, shift=shift2, order=QCFSOrder.FLOOR_CLIP)
    return c * ramp + (1.0 - c) * step
