"""Hardware bit widths: a converted SNN with b-bit weights and integer thresholds, in integer units.

Neuromorphic chips hold weights in few bits (Speck, Xylo, Loihi 2: 8; Innatera T1: 6) and membranes
and thresholds as integers in the weights' units (Speck, Xylo: 16 bits). `quantize_for_hardware`
turns a plain chain's SNN variables (threshold form, BatchNorm folded) into that form, and the
simulation then runs exactly what such a chip computes:

1. Weight balancing (`snnjax.conversion.transforms.balance_weights`): every θ becomes 1 and each
   layer's weights ``W'`` read unit spikes.
2. Per layer (or per output channel), the symmetric grid ``2^−p`` with the largest ``p`` for which
   ``max|W'| ≤ Q·2^−p``, ``Q = 2^(bits−1) − 1``: ``k = clip(round(W'·2^p), −Q, Q)`` (round half to
   even). A power-of-two step costs at most one bit against a free scale and keeps every product
   exact in float32. With a membrane of ``state_bits``, ``p ≤ state_bits − 4`` so that the
   membrane holds ±8θ.
3. The layer runs in units of its finest grid ``2^−p_l`` (``p_l = max_c p_c``): integer weights
   ``k·2^(p_l − p_c)``, θ = ``2^p_l``, ``v(0) = v0·θ``, biases rounded to integers. These are
   written back in snnjax's threshold form: a spike carries θ = ``2^p_l`` to the next layer, whose
   kernel holds ``k·2^−p_l`` so that the product is its integer ``k`` exactly; the head keeps the
   original logits' units (``k·2^−(p_c + p_l)``, float bias).

Every value a spiking layer computes is then an integer below 2^24, which float32 represents
exactly, so the simulation is the integer computation (a test checks it against an independent
integer simulation); 2×2 average pooling divides by 4, also exact. With ``state_bits`` the SNN runs
`snnjax.core.neurons.fixed_point_if_neuron` (the input current of the first layer, analog pixels
times integer weights, is rounded to an integer there; deeper layers' currents are integers already).

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

from snnjax.conversion.transforms import _structure_chain, balance_weights

__all__ = ["STATE_HEADROOM_BITS", "WEIGHT_SCALES", "quantize_for_hardware"]

WEIGHT_SCALES = ("layer", "channel")
# The membrane keeps this many bits above θ (saturation at ±2^3·θ): p ≤ state_bits − 1 − 3.
STATE_HEADROOM_BITS = 3


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
    chain = _structure_chain(balanced, model, inputs)
    params = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(balanced["params"]).items()}
    if not all(np.all(np.isfinite(v)) for v in params.values()):
        raise ValueError("quantize_for_hardware: the variables hold non-finite values.")
    levels = 2 ** (weight_bits - 1) - 1
    state_limit = 2.0 ** (state_bits - 1) - 1 if state_bits is not None else None
    input_exponent = 0.0  # the image reaches the first layer as is (value 1 per unit)
    layers = []
    out = dict(params)
    for path, bias_paths, activation in chain:
        weights = params[path + ("kernel",)]
        # [C_out]; the head's logits are no membrane: its grid is not capped by the state's width.
        p_c = _exponents(weights, weight_bits, weight_scale == "channel", cap if activation else None)
        k = np.clip(np.round(weights * 2.0**p_c), -levels, levels)  # numpy rounds half to even
        quantized = k * 2.0**-p_c
        amax = np.abs(weights).max()
        name = "/".join(path)
        layer = {
            "name": name,
            "max_level": int(np.abs(k).max()),
            "relative_error": float(np.abs(quantized - weights).max() / amax) if amax > 0 else 0.0,
        }
        biases = [b for b in bias_paths if b in params]
        if activation is None:  # the head: logits in the original units
            out[path + ("kernel",)] = quantized * 2.0**-input_exponent
            layer["exponents"] = p_c.astype(int).tolist()
            layers.append(layer)
            break
        p_l = float(p_c.max())
        out[path + ("kernel",)] = k * 2.0 ** (p_l - p_c) * 2.0**-input_exponent  # integers in layer units
        for bias_path in biases:
            bias = np.round(params[bias_path] * 2.0**p_l)
            out[bias_path] = np.clip(bias, -state_limit, state_limit) if state_limit is not None else bias
        threshold = params[activation + ("threshold",)]
        out[activation + ("threshold",)] = np.full_like(threshold, 2.0**p_l)
        layer.update(exponent=int(p_l), exponents=p_c.astype(int).tolist())
        layers.append(layer)
        input_exponent = p_l
    dtype = jax.tree.leaves(snn_variables["params"])[0].dtype
    variables = dict(balanced)
    variables["params"] = traverse_util.unflatten_dict({k: jnp.asarray(v, dtype) for k, v in out.items()})
    info = {"weight_bits": weight_bits, "weight_scale": weight_scale, "state_bits": state_bits}
    return variables, {**info, "layers": layers}
