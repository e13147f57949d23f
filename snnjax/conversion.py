"""ANN→SNN conversion as transforms of the Flax variable tree, and the spiking apply function.

The SNN is the ANN's model class with each activation layer's function swapped for an IF neuron
(:func:`spiking_model`); its variables are the ANN's variables passed through
:func:`ann_to_snn_variables` (each layer's λ becomes that layer's IF threshold θ; optional BN folding).
:func:`spiking_apply` then runs the SNN in layer mode on time-major input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax.layers import (
    Activation,
    FoldedBatchNorm,
    SteppedIFActivation,
    ThresholdActivation,
    ThresholdParameterization,
    threshold_from_param,
)
from snnjax.neurons import if_neuron

__all__ = [
    "ann_to_snn_variables",
    "calibrate_thresholds",
    "cumulative_mean_logits",
    "fold_batchnorm",
    "spiking_activation",
    "spiking_apply",
    "spiking_model",
]

Variables = Mapping[str, Any]


def _flat(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(dict(tree)) if tree else {}


def fold_batchnorm(variables: Variables, epsilon: float = 1e-5) -> dict[str, Any]:
    """Folds every ``ConvBN`` pair's BatchNorm (running statistics) into its convolution.

    ``W' = W·γ/√(var+ε)`` per output channel; the BN slot becomes a bias
    ``b' = β + γ(b − μ)/√(var+ε)`` (read by :class:`~snnjax.layers.FoldedBatchNorm`) and the conv's own
    bias, if any, is zeroed so the tree keeps its structure. Apply the result with
    ``norm=FoldedBatchNorm``.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` of a model built from ``ConvBN`` blocks.
      epsilon: the BatchNorm epsilon the model was trained with.

    Returns:
      New variables with no ``batch_stats`` for folded layers.
    """
    params = _flat(variables["params"])
    stats = _flat(variables.get("batch_stats", {}))
    folded_prefixes = [k[:-2] for k in params if k[-2:] == ("conv", "kernel")]
    for prefix in folded_prefixes:
        if prefix + ("bn", "scale") not in params:
            continue
        gamma = params.pop(prefix + ("bn", "scale"))
        beta = params.pop(prefix + ("bn", "bias"))
        mean = stats.pop(prefix + ("bn", "mean"))
        var = stats.pop(prefix + ("bn", "var"))
        gain = gamma / jnp.sqrt(var + epsilon)
        kernel = params[prefix + ("conv", "kernel")]
        # Broadcast the per-output-channel gain over [kh, kw, c_in] explicitly (no rank promotion).
        params[prefix + ("conv", "kernel")] = kernel * gain.reshape((1,) * (kernel.ndim - 1) + (-1,))
        conv_bias = params.get(prefix + ("conv", "bias"), jnp.zeros_like(beta))
        params[prefix + ("bn", "bias")] = beta + (conv_bias - mean) * gain
        if prefix + ("conv", "bias") in params:
            params[prefix + ("conv", "bias")] = jnp.zeros_like(conv_bias)
    folded = {"params": traverse_util.unflatten_dict(params)}
    if stats:
        folded["batch_stats"] = traverse_util.unflatten_dict(stats)
    return folded


def ann_to_snn_variables(
    ann_variables: Variables,
    *,
    threshold_parameterization: str = ThresholdParameterization.IDENTITY,
    fold_bn: bool = False,
    bn_epsilon: float = 1e-5,
) -> dict[str, Any]:
    """Turns trained ANN variables into SNN variables.

    Every ``threshold`` leaf (the stored λ parameter of an activation layer) becomes the IF threshold
    θ = λ, stored directly (the SNN uses the identity parameterization); all weights and BN statistics
    are carried over unchanged unless ``fold_bn``.

    Args:
      ann_variables: ``{"params": ..., "batch_stats": ...}`` of the trained ANN.
      threshold_parameterization: how the ANN stored λ (see ``ThresholdParameterization``).
      fold_bn: fold BatchNorm into the preceding convs (then build the SNN with ``fold_bn=True``).
      bn_epsilon: BatchNorm epsilon, used when folding.

    Returns:
      SNN variables, a new tree (the input is not modified).

    Raises:
      ValueError: if the tree has no ``threshold`` leaf at all (e.g. a plain-ReLU ANN: run
        :func:`calibrate_thresholds` first).
    """
    params = _flat(ann_variables["params"])
    threshold_keys = [k for k in params if k[-1] == "threshold"]
    if not threshold_keys:
        raise ValueError(
            "The ANN variables have no activation thresholds ('threshold' leaves). A plain-ReLU ANN "
            "needs data-based thresholds: call snnjax.calibrate_thresholds(...) first."
        )
    for key in threshold_keys:
        params[key] = threshold_from_param(params[key], threshold_parameterization)
    variables = dict(ann_variables)
    variables["params"] = traverse_util.unflatten_dict(params)
    return fold_batchnorm(variables, bn_epsilon) if fold_bn else variables


def calibrate_thresholds(
    model: nn.Module, variables: Variables, images: jax.Array, percentile: float = 99.9
) -> dict[str, Any]:
    """Data-based threshold balancing for a plain-ReLU ANN: θ = a percentile of each layer's output.

    Runs ``images`` through the ANN (inference mode) and, for every parameter-free
    :class:`~snnjax.layers.Activation` layer, sets θ to the ``percentile`` of its outputs over the
    batch (100 = the max, the classic rule).

    Args:
      model: the ANN, built with ``Activation`` layers.
      variables: its variables.
      images: calibration inputs ``[N, H, W, C]`` (training data).
      percentile: in ``(0, 100]``.

    Returns:
      ``variables`` with a scalar ``threshold`` leaf added for each activation layer.
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}.")
    _, state = model.apply(
        variables,
        images,
        train=False,
        capture_intermediates=lambda mdl, method: isinstance(mdl, Activation) and method == "__call__",
        mutable=["intermediates"],
    )
    params = _flat(variables["params"])
    for key, value in _flat(state["intermediates"]).items():
        # Keys look like (..., "act0", "__call__"); the value is a tuple of outputs.
        layer_path = key[:-1]
        activations = np.asarray(value[0] if isinstance(value, tuple) else value)
        params[layer_path + ("threshold",)] = jnp.asarray(np.percentile(activations, percentile), jnp.float32)
    calibrated = dict(variables)
    calibrated["params"] = traverse_util.unflatten_dict(params)
    return calibrated


SIMULATION_MODES = ("layer", "step")


def spiking_activation(
    v0: float = 0.5, per_channel: bool = False, mode: str = "layer"
) -> Callable[..., nn.Module]:
    """Activation factory for the SNN: an IF neuron (threshold θ from the variables, v(0)=v0·θ).

    Args:
      v0: initial membrane fraction.
      per_channel: thresholds are per channel.
      mode: ``"layer"`` (one ``lax.scan`` over time per IF layer, input ``[T, B, ...]``) or ``"step"``
        (:class:`~snnjax.layers.SteppedIFActivation`, one timestep per call).
    """
    if mode not in SIMULATION_MODES:
        raise ValueError(f"simulation mode {mode!r} is unknown; allowed: {', '.join(SIMULATION_MODES)}.")
    if mode == "step":
        return functools.partial(SteppedIFActivation, v0=v0, per_channel=per_channel)
    return functools.partial(
        ThresholdActivation,
        fn=functools.partial(if_neuron, v0=v0),
        parameterization=ThresholdParameterization.IDENTITY,
        per_channel=per_channel,
    )


def spiking_model(
    ann_model: nn.Module,
    *,
    v0: float = 0.5,
    fold_bn: bool = False,
    per_channel: bool = False,
    mode: str = "layer",
) -> nn.Module:
    """The SNN: the same model with its activation swapped for the IF neuron.

    Args:
      ann_model: an unbound model with ``activation`` (and ``norm``) attributes.
      v0: initial membrane fraction (½ for QCFS, ``shift2`` for SlipReLU).
      fold_bn: use :class:`FoldedBatchNorm` (pair with ``ann_to_snn_variables(..., fold_bn=True)``).
      per_channel: thresholds are per channel.
      mode: ``"layer"`` or ``"step"`` simulation (see :func:`spiking_apply`); same outputs.

    Returns:
      A clone of ``ann_model`` to be applied with :func:`spiking_apply`.
    """
    updates: dict[str, Any] = {"activation": spiking_activation(v0, per_channel, mode)}
    if fold_bn:
        updates["norm"] = FoldedBatchNorm
    return ann_model.clone(**updates)


def _is_step_mode(snn_model: nn.Module) -> bool:
    return getattr(snn_model.activation, "func", None) is SteppedIFActivation


def spiking_apply(
    snn_model: nn.Module, snn_variables: Variables, images: jax.Array, num_steps: int
) -> jax.Array:
    """Runs the SNN for ``num_steps`` steps and returns the logits of every step.

    The image is the analog input of the first layer at every step; the last layer stays analog.
    Layer mode (``spiking_model(..., mode="layer")``): each synaptic layer runs once on the
    time-batched ``[T, B, ...]`` tensor and each IF layer is one ``lax.scan`` over time. Step mode
    (``mode="step"``): the whole network advances one timestep at a time inside one ``lax.scan`` whose
    carry holds every membrane potential; memory does not grow with T (online/streaming use). Both
    modes give the same outputs.

    Args:
      snn_model: from :func:`spiking_model`.
      snn_variables: from :func:`ann_to_snn_variables`.
      images: ``[B, H, W, C]``.
      num_steps: T ≥ 1 (a Python int: it sets array shapes).

    Returns:
      Per-step logits ``[T, B, num_classes]`` (average them over t for the prediction at t; see
      :func:`cumulative_mean_logits`).
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps (T) must be a positive int, got {num_steps!r}.")
    if not _is_step_mode(snn_model):
        inputs = jnp.broadcast_to(images, (num_steps, *images.shape))
        return snn_model.apply(snn_variables, inputs, train=False)

    def advance(membranes, variables):
        return snn_model.apply(
            {**variables, "membrane": membranes}, images, train=False, mutable=["membrane"]
        )

    # The first step creates every membrane at v0·θ; the scan carries them through the other steps.
    first_logits, state = snn_model.apply(snn_variables, images, train=False, mutable=["membrane"])

    def step(membranes, _):
        variables = {**snn_variables, "membrane": membranes}
        logits, new_state = snn_model.apply(variables, images, train=False, mutable=["membrane"])
        return new_state["membrane"], logits

    _, later_logits = jax.lax.scan(step, state["membrane"], None, length=num_steps - 1)
    return jnp.concatenate([first_logits[None], later_logits], axis=0)


def cumulative_mean_logits(logits: jax.Array) -> jax.Array:
    """Running mean over time: ``out[t] = mean(logits[:t+1])``, the SNN readout after t+1 steps.

    Args:
      logits: per-step logits ``[T, B, num_classes]``.

    Returns:
      ``[T, B, num_classes]``.
    """
    steps = jnp.arange(1, logits.shape[0] + 1, dtype=logits.dtype).reshape(-1, 1, 1)
    return jnp.cumsum(logits, axis=0) / steps
