"""Hardware bit widths: a converted SNN with b-bit weights and integer thresholds, in integer units.

Neuromorphic chips hold weights in few bits (Speck, Xylo, Loihi 2: 8; Innatera T1: 6) and membranes
and thresholds as integers in the weights' units (Speck, Xylo: 16 bits). `quantize_for_hardware`
turns a plain chain's SNN variables (threshold form, BatchNorm folded) into that form:

1. Weight balancing (`snnjax.conversion.transforms.balance_weights`): every θ becomes 1 and each
   layer's weights ``W'`` read unit spikes. Average pooling between two layers is taken as a sum pool
   whose ``1/area`` goes into the next layer's ``W'``, so every layer reads spike counts.
2. Per layer (or per output channel), the symmetric grid ``2^−p`` with the largest ``p`` for which
   ``max|W'| ≤ Q·2^−p``, ``Q = 2^(bits−1) − 1``: ``k = clip(round(W'·2^p), −Q, Q)`` (round half to
   even). A power-of-two step costs at most one bit against a free scale and keeps every product
   exact in float32. With a membrane of ``state_bits``, ``p ≤ state_bits − 4`` so that the
   membrane holds ±8θ; ``p ≥ 1`` is required (θ of at least 2 units).
3. Each neuron runs in units of its grid: integer weights ``k``, θ = ``2^p`` (per channel with
   ``weight_scale="channel"``, which needs per-channel thresholds), integer biases (saturated to the
   state width), ``v(0) = round(v0·θ)``. This is written back in snnjax's threshold form: a spike
   carries θ = ``2^p`` to the next layer, whose kernel holds ``k·area·2^−p`` so that each product is its
   integer ``k`` times a spike count; the head keeps the original logits' units.

The currents of every spiking layer but the first are then integer sums below 2^24, which float32
computes exactly when the pooling areas are powers of two (2×2: the simulation is the integer
computation; a test checks it against an independent integer simulation); with other areas they are
integers up to float rounding, which `snnjax.core.neurons.fixed_point_if_neuron` (used with
``state_bits``) rounds away. The first layer reads analog pixels: its current is real-valued, and
rounded to an integer by the fixed-point neuron.

`quantize_input` puts the image on a dyadic grid as well (multiples of ``2^−f``, what a chip's
integer input is): then, with power-of-two pooling areas, every current, the first layer's included,
is an exact sum in float32 (while it stays below 2^24 grid units), so any framework that sums the same
products in any order gets the same membranes, spikes and logits bit for bit. This is what makes an
export to another simulator (`snnjax.io.export_nir` with ``target="sinabs"``) give the same numbers at
every step, and not only up to spikes flipped by float rounding at a threshold.

Plain chains only (`snnjax.conversion.structure.linear_chain`): an identity shortcut would add spikes
of another layer's units, which needs the two layers to share a grid (not implemented).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax.conversion.structure import INPUT, linear_chain, trace_structure
from snnjax.conversion.transforms import balance_weights

__all__ = ["STATE_HEADROOM_BITS", "WEIGHT_SCALES", "quantize_for_hardware", "quantize_input"]

WEIGHT_SCALES = ("layer", "channel")
# The membrane keeps this many bits above θ (saturation at ±2^3·θ): p ≤ state_bits − 1 − 3.
STATE_HEADROOM_BITS = 3


def quantize_input(images: jax.Array, fraction_bits: int) -> jax.Array:
    """Rounds (normalized) images to the dyadic grid ``2^−fraction_bits``, half to even.

    With the integer hardware form's weights (`quantize_for_hardware`: integers ``k`` in every spiking
    layer, the first one included), the first layer's products are then multiples of
    ``2^−fraction_bits`` too (the integer bias as well), so its current is exact in float32 whenever
    ``(Σ|k|·max|x| + |b|)·2^fraction_bits < 2^24`` over a receptive field (e.g. 3×3×3 taps of |k| ≤ 127,
    |x| ≤ 3 and |b| ≤ 10^3 at 8 bits: 2.9·10^6).

    Args:
      images: ``[..., H, W, C]`` float images as the model reads them (after normalization).
      fraction_bits: f, 0..16: the grid is ``2^−f`` (8 keeps about an 8-bit pixel's resolution on
        inputs of unit scale).

    Returns:
      ``round(images·2^f)·2^−f``, same shape and dtype.

    Raises:
      ValueError: for ``fraction_bits`` out of range.
    """
    if isinstance(fraction_bits, bool) or not isinstance(fraction_bits, int) or not 0 <= fraction_bits <= 16:
        raise ValueError(f"fraction_bits must be an int in 0..16, got {fraction_bits!r}.")
    scale = 2.0**fraction_bits  # a power of two: the products below are exact
    return (jnp.round(images * scale) / scale).astype(images.dtype)


def _exponents(weights: np.ndarray, bits: int, per_channel: bool, cap: int | None) -> np.ndarray:
    """Each output channel's grid exponent p (one shared by all unless ``per_channel``).

    The largest p with ``max|W| ≤ (2^(bits−1) − 1)·2^−p``, capped at ``cap``; 0 for all-zero weights.
    """
    levels = 2 ** (bits - 1) - 1
    magnitude = np.abs(weights)
    if per_channel:
        amax = np.max(magnitude, axis=tuple(range(weights.ndim - 1)))
    else:
        amax = np.full(weights.shape[-1], magnitude.max())
    safe = np.where(amax > 0, amax, 1.0)
    p = np.where(amax > 0, np.floor(np.log2(levels / safe)), 0.0)
    return np.minimum(p, cap) if cap is not None else p


def _pool_area(calls, index: int) -> int:
    """The product of the average-pooling windows between ``calls[index]`` and the layer before it.

    Raises:
      ValueError: for a max pool, a padded average pool, or any operation that scales the input on
        the way (a global mean, a multiplication): the integer form needs spike counts summed.
    """
    area, node = 1, calls[index]
    while True:
        if len(node.sources) != 1 or any(op != "reshape" for op in node.ops):
            raise ValueError(
                f"the integer hardware form reads spike counts: {node.name!r} reads its input through "
                f"{list(node.ops) or node.sources} (plain chains with average pooling only)."
            )
        (source,) = node.sources
        if source is INPUT:
            return area
        previous = calls[source]
        if previous.kind == "activation":
            return area
        if previous.kind != "avg_pool" or previous.module["padding"] != "VALID":
            raise ValueError(
                f"the integer hardware form supports unpadded average pooling only, not {previous.kind!r} "
                f"({previous.module}) before {node.name!r}."
            )
        area *= int(np.prod(previous.module["window"]))
        node = previous


def quantize_for_hardware(
    snn_variables: Mapping[str, Any],
    *,
    model: nn.Module,
    inputs: jax.Array,
    weight_bits: int,
    weight_scale: str = "layer",
    state_bits: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SNN's variables in integer hardware form (see the module docstring).

    Args:
      snn_variables: from `snnjax.convert_variables` with ``fold_bn=True`` (threshold form).
      model: the ANN (a plain chain: Conv/Dense → activation → ... → head; pooling anywhere).
      inputs: an example batch ``[B, ...]`` for the structure walk (shapes only).
      weight_bits: b, 2..16 (symmetric: ``2^(b−1) − 1`` levels each side).
      weight_scale: ``"layer"`` (one grid per layer) or ``"channel"`` (one per output channel).
      state_bits: the membrane's width for `snnjax.core.neurons.fixed_point_if_neuron` (it caps the
        grid, and the biases saturate to it), or None for no cap.

    Returns:
      ``(variables, info)``: the variables to run with the same model (neuron ``"if"``, or
      ``"fixed_point_if"`` with ``bits=state_bits``), and ``{"weight_bits", "weight_scale",
      "state_bits", "layers": [{"name", "exponent" (p_l), "exponents" (p_c; per channel),
      "max_level" (max |k|), "relative_error" (max |W'_q − W'| / max |W'|)}]}``.

    Raises:
      ValueError: for bits out of range, an unknown scale, or a model that is not a plain chain with
        folded BatchNorm (named by `balance_weights`).
    """
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or not 2 <= weight_bits <= 16:
        raise ValueError(f"weight_bits must be an int in 2..16, got {weight_bits!r}.")
    if weight_scale not in WEIGHT_SCALES:
        raise ValueError(f"weight_scale {weight_scale!r} is unknown; allowed: {', '.join(WEIGHT_SCALES)}.")
    cap = None
    if state_bits is not None:
        if isinstance(state_bits, bool) or not isinstance(state_bits, int) or not 6 <= state_bits <= 24:
            raise ValueError(f"state_bits must be an int in 6..24 (or None), got {state_bits!r}.")
        cap = state_bits - 1 - STATE_HEADROOM_BITS
    balanced = balance_weights(snn_variables, model=model, inputs=inputs)
    calls = trace_structure(model, balanced, inputs)
    chain = linear_chain(calls)
    params = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(balanced["params"]).items()}
    if not all(np.all(np.isfinite(v)) for v in params.values()):
        raise ValueError("quantize_for_hardware: the variables hold non-finite values.")
    levels = 2 ** (weight_bits - 1) - 1
    state_limit = 2.0 ** (state_bits - 1) - 1 if state_bits is not None else None
    # What one unit of each input channel of the next layer is worth in that layer's threshold form:
    # the image reaches the first layer as is; a spiking layer's channel c sends spikes valued 2^p_c.
    in_scale = np.ones(1)
    layers = []
    out = dict(params)
    for linear, norms, activation in chain:
        path = linear.path
        # Average pooling between the previous layer and this one is a sum pool whose 1/area goes into
        # these weights (quantized with them), so that this layer reads spike counts.
        area = _pool_area(calls, calls.index(linear))
        weights = params[path + ("kernel",)] / area
        per_channel = weight_scale == "channel"
        # [C_out]; the head's logits are no membrane: its grid is not capped by the state's width.
        p_c = _exponents(weights, weight_bits, per_channel, cap if activation is not None else None)
        k = np.clip(np.round(weights * 2.0**p_c), -levels, levels)  # numpy rounds half to even
        quantized = k * 2.0**-p_c
        amax = np.abs(weights).max()
        layer = {
            "name": linear.name,
            "pool_area": area,
            "max_level": int(np.abs(k).max()),
            "relative_error": float(np.abs(quantized - weights).max() / amax) if amax > 0 else 0.0,
            "exponents": p_c.astype(int).tolist(),
        }
        # Undo the previous layer's spike value (per input channel; after a flatten, NHWC channels
        # repeat over the positions) and the pooling's 1/area: both powers of two, or exact integers.
        in_features = weights.shape[-2]
        unit = np.tile(in_scale, in_features // in_scale.size).reshape(-1, 1)
        if activation is None:  # the head: logits in the original units
            out[path + ("kernel",)] = quantized * area / unit
            layers.append(layer)
            break
        if p_c.min() < 1:
            raise ValueError(
                f"quantize_for_hardware: {linear.name!r} has weights too large for {weight_bits}-bit "
                f"levels at θ = 1 (grid exponent {int(p_c.min())} < 1: θ under 2 units): use more bits."
            )
        threshold = params[activation.path + ("threshold",)]
        if per_channel and threshold.ndim == 0:
            raise ValueError(
                f"weight_scale='channel' gives each output channel its own integer θ = 2^p_c, but "
                f"{activation.name!r} holds one threshold: build the model with per-channel thresholds "
                "(config.per_channel_threshold=True), or use weight_scale='layer'."
            )
        p_out = p_c if per_channel else np.full_like(p_c, p_c.max())  # per layer: one grid, p = max p_c
        out[path + ("kernel",)] = k * area / unit  # integers per unit spike
        for bias_path in [linear.path + ("bias",)] + [norm.path + ("bias",) for norm in norms]:
            if bias_path in params:
                bias = np.round(params[bias_path] * 2.0**p_out)
                out[bias_path] = np.clip(bias, -state_limit, state_limit) if state_limit is not None else bias
        theta = 2.0**p_out  # [C_out]
        out[activation.path + ("threshold",)] = theta if threshold.ndim else np.asarray(theta[0])
        layer["exponent"] = int(p_out.max())
        layers.append(layer)
        in_scale = 2.0**p_out
    dtype = jax.tree.leaves(snn_variables["params"])[0].dtype
    variables = dict(balanced)
    variables["params"] = traverse_util.unflatten_dict({k: jnp.asarray(v, dtype) for k, v in out.items()})
    info = {"weight_bits": weight_bits, "weight_scale": weight_scale, "state_bits": state_bits}
    return variables, {**info, "layers": layers}
