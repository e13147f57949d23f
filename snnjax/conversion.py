"""ANN→SNN conversion as transforms of the Flax variable tree.

The SNN's variables are the ANN's passed through :func:`ann_to_snn_variables` (each layer's λ becomes
that layer's IF threshold θ; optional BN folding); :mod:`snnjax.simulation` runs the ANN module with its
activation layers intercepted (:func:`spiking_model`, :func:`spiking_apply`, re-exported here).
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
    SteppedIFActivation,
    ThresholdActivation,
    ThresholdParameterization,
    threshold_from_param,
)
from snnjax.neurons import NEURONS
from snnjax.simulation import (
    CONVERTIBLE_ACTIVATIONS,
    SIMULATION_MODES,
    SpikingNetwork,
    cumulative_mean_logits,
    spiking_apply,
    spiking_apply_sequence,
    spiking_model,
)

__all__ = [
    "CONVERTIBLE_ACTIVATIONS",
    "SIMULATION_MODES",
    "SpikingNetwork",
    "ann_to_snn_variables",
    "balance_weights",
    "calibrate_thresholds",
    "cumulative_mean_logits",
    "fold_batchnorm",
    "spiking_activation",
    "spiking_apply",
    "spiking_apply_sequence",
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
    model: nn.Module,
    variables: Variables,
    images: jax.Array,
    percentile: float = 99.9,
    per_channel: bool = False,
) -> dict[str, Any]:
    """Data-based threshold balancing for a plain-ReLU ANN: θ = a percentile of each layer's output.

    Runs ``images`` through the ANN (inference mode) and, for every parameter-free
    :class:`~snnjax.layers.Activation` layer, sets θ to the ``percentile`` of its outputs (100 = the
    max, the classic rule), over everything (per layer) or over all axes but the channel axis.

    Args:
      model: the ANN, built with ``Activation`` layers.
      variables: its variables.
      images: calibration inputs ``[N, H, W, C]`` (training data).
      percentile: in ``(0, 100]``.
      per_channel: one θ per channel (last axis) instead of one per layer; build the SNN with
        ``per_channel=True``. A channel that never activates gets θ = the layer's θ, not 0.

    Returns:
      ``variables`` with a ``threshold`` leaf (``[]`` or ``[C]``) added for each activation layer.
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
        threshold = np.percentile(activations, percentile)
        if per_channel:
            by_channel = np.percentile(activations.reshape(-1, activations.shape[-1]), percentile, axis=0)
            # θ = 0 would make a silent channel fire on any positive input; fall back to the layer's θ.
            threshold = np.where(by_channel > 0, by_channel, threshold)
        params[layer_path + ("threshold",)] = jnp.asarray(threshold, jnp.float32)
    calibrated = dict(variables)
    calibrated["params"] = traverse_util.unflatten_dict(params)
    return calibrated


def _chain_layers(params: Mapping[tuple[str, ...], Any]) -> list[tuple[tuple[str, ...], str | None]]:
    """``[(linear layer path, activation name after it)]`` of a :class:`~snnjax.models.ConvNet` chain."""
    names = {k[0] for k in params}
    if any(name.startswith(("stem", "stage")) for name in names):
        raise ValueError(
            "Weight rescaling needs a plain chain of layers (ConvNet: VGG-16, SmallCNN); a ResNet's "
            "identity shortcuts carry no weights to rescale, so keep the thresholds (threshold form)."
        )
    convs = sorted((n for n in names if n.startswith("conv_bn")), key=lambda n: int(n[len("conv_bn") :]))
    dense = sorted((n for n in names if n.startswith("fc") and not n.startswith("fc_act")),
                   key=lambda n: int(n[len("fc") :]))  # fmt: skip
    chain: list[tuple[tuple[str, ...], str | None]] = [
        ((n, "conv"), f"act{n[len('conv_bn') :]}") for n in convs
    ]
    chain += [((n,), f"fc_act{n[len('fc') :]}") for n in dense]
    return [*chain, (("head",), None)]


def balance_weights(snn_variables: Variables) -> dict[str, Any]:
    """The weight form of threshold balancing: rescale weights so every threshold becomes 1.

    For each linear layer ``l`` of the chain, ``W ← W·λ_{l−1}/λ_l`` and ``b ← b/λ_l`` (per channel
    when the thresholds are: ``λ_{l−1}`` scales the input channels, ``λ_l`` the output channels); the
    head gets ``W ← W·λ_last`` and keeps its bias. Every membrane is then the original one divided by
    its θ, so the SNN fires exactly the same spikes and computes the same logits (up to float
    rounding); a test checks it.

    Args:
      snn_variables: SNN variables from :func:`ann_to_snn_variables` with ``fold_bn=True`` (a
        BatchNorm after the conv would undo the rescaling) of a :class:`~snnjax.models.ConvNet`.

    Returns:
      New variables with every ``threshold`` leaf equal to 1.

    Raises:
      ValueError: for unfolded BatchNorm or a model that is not a plain chain.
    """
    params = _flat(snn_variables["params"])
    if any(k[-2:] == ("bn", "scale") for k in params):
        raise ValueError("balance_weights needs folded BatchNorm: convert with fold_bn=True first.")
    input_scale = jnp.ones(())
    for path, activation in _chain_layers(params):
        kernel = params[path + ("kernel",)]
        in_features = kernel.shape[-2]
        # After a flatten (NHWC, channels fastest) a per-channel scale repeats over the positions.
        scale_in = jnp.tile(input_scale, in_features // input_scale.size) if input_scale.ndim else input_scale
        kernel = kernel * jnp.broadcast_to(scale_in.reshape(-1, 1), kernel.shape)
        if activation is None:
            params[path + ("kernel",)] = kernel
            break
        threshold = params[(activation, "threshold")]
        out_scale = jnp.broadcast_to(threshold, (kernel.shape[-1],))
        params[path + ("kernel",)] = kernel / jnp.broadcast_to(out_scale, kernel.shape)
        bias_paths = [path + ("bias",), (path[0], "bn", "bias")]
        for bias_path in bias_paths:
            if bias_path in params:
                params[bias_path] = params[bias_path] / out_scale
        params[(activation, "threshold")] = jnp.ones_like(threshold)
        input_scale = threshold
    balanced = dict(snn_variables)
    balanced["params"] = traverse_util.unflatten_dict(params)
    return balanced


def spiking_activation(
    v0: float = 0.5, per_channel: bool = False, mode: str = "layer", neuron: str = "if"
) -> Callable[..., nn.Module]:
    """Activation factory for the SNN: a spiking neuron (threshold θ from the variables, v(0)=v0·θ).

    Args:
      v0: initial membrane fraction.
      per_channel: thresholds are per channel.
      mode: ``"layer"`` (one pass per layer over the time-batched ``[T, B, ...]`` input) or ``"step"``
        (:class:`~snnjax.layers.SteppedIFActivation`, one timestep per call; IF neuron only).
      neuron: a key of :data:`snnjax.neurons.NEURONS`: ``"if"`` (reference IF),
        ``"integrate_then_fire"`` or ``"signed_if"`` (SpikeConverter).

    Raises:
      ValueError: for an unknown mode or neuron, or a neuron that step mode cannot run.
    """
    if mode not in SIMULATION_MODES:
        raise ValueError(f"simulation mode {mode!r} is unknown; allowed: {', '.join(SIMULATION_MODES)}.")
    if neuron not in NEURONS:
        raise ValueError(f"neuron {neuron!r} is unknown; allowed: {', '.join(NEURONS)}.")
    if mode == "step":
        if neuron != "if":
            raise ValueError(
                f"step mode runs the IF neuron only; neuron {neuron!r} needs mode='layer' "
                "(integrate_then_fire sees its whole window before firing)."
            )
        return functools.partial(SteppedIFActivation, v0=v0, per_channel=per_channel)
    return functools.partial(
        ThresholdActivation,
        fn=functools.partial(NEURONS[neuron], v0=v0),
        parameterization=ThresholdParameterization.IDENTITY,
        per_channel=per_channel,
    )
