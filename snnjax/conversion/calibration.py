"""Forward-only calibration of a converted SNN on a few training batches (no gradients, no test images).

Three corrections, each computed layer by layer in network order (a layer is calibrated with every
earlier layer already corrected), and stored as variables of the ``"calibration"`` collection under
the activation layer's module path, which `snnjax.SpikingNetwork` applies (layer mode, IF
neuron). Notation for one activation layer: ``a [B, ..., C]`` its ANN output, ``z, y [T, B, ..., C]``
the SNN layer's input current and output (spikes·θ) on the same images, means taken over the batch
and the spatial axes unless said otherwise.

* ``"bias"``, the light pipeline's bias correction (Li et al., ICML 2021, code yhhhli/SNN_Calibration):
  ``bias[C] += mean(y over T) − mean(a)``; the neuron receives ``z − bias`` at every step.
* ``"potential"``, its potential correction: ``membrane[..., C] += T·(mean_B(a) − mean_B(mean_T y))``
  (per neuron position, averaged over the batch only); v(0) becomes ``v0·θ + membrane``.
* ``"step_bias"``, a per-timestep bias as in FTBC (Wu et al., ECCV 2024): for t = 0..T−1 in order,
  the layer's step-t output ``o_t`` (computed with ``step_bias[t]``) gives
  ``step_bias[t] += α·(mean(o_t) − mean(a))``, and step t is recomputed with the new bias before
  the membrane moves on; steps at or after T get no bias.

Our reconstruction: the references calibrate one batch per call and assign the potential correction;
with several batches we apply each correction on top of the previous ones (each batch corrects what
is left), which equals the references for one batch. The references add ``0.5θ/T`` to each step
(or start at ``½θ``); here the SNN's own ``v0`` holds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax.conversion.interception import SITES
from snnjax.conversion.recording import activation_shapes, record_activations
from snnjax.conversion.simulation import CALIBRATION, SpikingNetwork, inference_kwargs
from snnjax.core.neurons import if_step

__all__ = ["CALIBRATION_KINDS", "calibrate_snn"]

CALIBRATION_KINDS = ("bias", "potential", "step_bias")
_VARIABLE = {"bias": "bias", "potential": "membrane", "step_bias": "step_bias"}


def _mean_but_last(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(jnp.float32), axis=tuple(range(x.ndim - 1)))


def _step_bias_scan(z, theta, v0, step_bias, target, alpha):
    """FTBC's per-step update for one layer over one batch; returns the new ``step_bias [T, C]``."""
    shape = z.shape[1:]
    theta = jnp.broadcast_to(theta.astype(z.dtype), shape)

    def step(v, inputs):
        z_t, b_t = inputs  # b_t: [C]
        # The IF step as the SNN runs it with a step bias: v + (z_t − b_t) (simulation subtracts the
        # bias from the input first), once with the current bias and once with the updated one.
        _, old = if_step(v, z_t - jnp.broadcast_to(b_t, shape), theta)
        b_t = b_t + alpha * (_mean_but_last(old) - target)
        v, _ = if_step(v, z_t - jnp.broadcast_to(b_t, shape), theta)
        return v, b_t

    start = jnp.broadcast_to(v0 * theta, shape)
    _, new_bias = jax.lax.scan(step, start, (z, step_bias.astype(z.dtype)))
    return new_bias


@functools.partial(jax.jit, static_argnames=("snn_model", "ann_model", "num_steps", "kind", "alpha"))
def _proposals(snn_model, snn_variables, ann_model, ann_variables, images, num_steps, kind, alpha):
    """Every layer's corrected calibration variable after one batch (only the next layer's is kept)."""
    ann = record_activations(ann_model, ann_variables, images)
    inputs = jnp.broadcast_to(images, (num_steps, *images.shape))
    _, snn = snn_model.apply_recorded(snn_variables, inputs, **inference_kwargs(snn_model.ann))
    current = traverse_util.flatten_dict(snn_variables[CALIBRATION], sep="/")
    params = traverse_util.flatten_dict(snn_variables["params"], sep="/")
    proposals = {}
    for path, (z, y) in snn.items():
        a = ann[path][1].astype(jnp.float32)
        old = current[f"{path}/{_VARIABLE[kind]}"]
        if kind == "bias":
            proposals[path] = old + _mean_but_last(y) - _mean_but_last(a)
        elif kind == "potential":
            rate = jnp.mean(y.astype(jnp.float32), axis=(0, 1))
            proposals[path] = old + num_steps * (jnp.mean(a, axis=0) - rate)
        else:
            theta = params[f"{path}/threshold"]
            proposals[path] = _step_bias_scan(z, theta, snn_model.v0, old, _mean_but_last(a), alpha)
    return proposals


def calibrate_snn(
    snn_model: SpikingNetwork,
    snn_variables: Mapping[str, Any],
    ann_model: nn.Module,
    ann_variables: Mapping[str, Any],
    batches: Iterable[np.ndarray],
    num_steps: int,
    kind: str = "bias",
    alpha: float = 0.5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibrates the SNN's layers against the ANN on the given batches (see the module docstring).

    Args:
      snn_model: an IF-neuron SNN from `snnjax.spiking_model` (run here in layer mode).
      snn_variables: its variables (threshold form; existing calibration variables are replaced).
      ann_model: the ANN it was converted from.
      ann_variables: the ANN's variables (its activations are the calibration target).
      batches: training images ``[B, H, W, C]``, one array per batch; every batch given is used, and
        nothing else is read.
      num_steps: T_cal, the simulation length calibrated for (``step_bias`` holds T_cal steps).
      kind: ``"bias"``, ``"potential"`` or ``"step_bias"``.
      alpha: FTBC's step size for ``"step_bias"``.

    Returns:
      ``(variables, info)``: ``snn_variables`` plus the ``"calibration"`` collection, and
      ``{"kind", "steps", "batches", "images"}``.

    Raises:
      ValueError: for an unknown kind, a neuron other than ``"if"``, T_cal < 1 or no batch.
    """
    if kind not in CALIBRATION_KINDS:
        raise ValueError(f"calibration kind {kind!r} is unknown; allowed: {', '.join(CALIBRATION_KINDS)}.")
    if snn_model.neuron != "if":
        raise ValueError(f"calibration is defined for the 'if' neuron, not {snn_model.neuron!r}.")
    if not isinstance(snn_model.ann, nn.Module) or snn_variables.get(SITES):
        raise ValueError(
            "calibrate_snn keeps its corrections in the Linen activation layers' 'calibration' "
            "collection: it runs on Linen models whose activations are snnjax layers, not on NNX, "
            "function or ReLU-function sites (not implemented yet)."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps (T_cal) must be a positive int, got {num_steps!r}.")
    layer_model = snn_model.clone(mode="layer")
    variables = {k: v for k, v in snn_variables.items() if k != CALIBRATION}
    layers: list[str] = []
    calibration: dict[str, jax.Array] = {}
    num_batches = num_images = 0
    for images in batches:
        images = jnp.asarray(images)
        if not layers:  # zero corrections for every layer, so the variable tree keeps one structure
            shapes = activation_shapes(ann_model, ann_variables, images)
            layers = list(shapes)
            for path, (_, out) in shapes.items():
                shape = {
                    "bias": out.shape[-1:],
                    "potential": out.shape[1:],
                    "step_bias": (num_steps,) + out.shape[-1:],
                }
                calibration[f"{path}/{_VARIABLE[kind]}"] = jnp.zeros(shape[kind], jnp.float32)
        for path in layers:
            variables[CALIBRATION] = traverse_util.unflatten_dict(calibration, sep="/")
            proposals = _proposals(
                layer_model, variables, ann_model, ann_variables, images, num_steps, kind, float(alpha)
            )
            calibration[f"{path}/{_VARIABLE[kind]}"] = proposals[path]
        num_batches += 1
        num_images += int(images.shape[0])
    if not num_batches:
        raise ValueError("calibrate_snn got no batch: pass at least one batch of training images.")
    variables[CALIBRATION] = traverse_util.unflatten_dict(calibration, sep="/")
    info = {"kind": kind, "steps": num_steps, "batches": num_batches, "images": num_images}
    return variables, info
