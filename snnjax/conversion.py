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
    apply_folded,
    cumulative_mean_logits,
    inference_kwargs as _inference_kwargs,
    spiking_apply,
    spiking_apply_sequence,
    spiking_model,
)
from snnjax.structure import linear_chain, trace_structure

__all__ = [
    "BALANCING_FORMS",
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

# Threshold balancing forms: keep θ = λ per layer, or rescale weights so every θ = 1.
BALANCING_FORMS = ("threshold", "weights")


def _flat(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(dict(tree)) if tree else {}


def fold_batchnorm(
    variables: Variables,
    epsilon: float = 1e-5,
    *,
    model: nn.Module | None = None,
    inputs: jax.Array | None = None,
) -> dict[str, Any]:
    """Folds BatchNorm (running statistics) into the Conv/Dense layer that feeds it.

    ``W' = W·γ/√(var+ε)`` per output channel; the BatchNorm's slot keeps only a bias
    ``b' = β + γ(b − μ)/√(var+ε)`` and the layer's own bias, if any, is zeroed so the tree keeps its
    structure. A BatchNorm without statistics is then read as "add this bias" by the SNN
    (:mod:`snnjax.simulation`) and by :class:`~snnjax.layers.FoldedBatchNorm`.

    Which layer feeds which: with ``model`` and ``inputs``, one structure walk
    (:func:`snnjax.structure.trace_structure`) finds every Conv/Dense whose output goes straight into
    a BatchNorm, whatever the names, and the folded ANN is checked against the unfolded one on
    ``inputs`` (a layer output that also feeds something else cannot be folded). Without ``model``,
    snnjax's own ``ConvBN`` blocks are folded (children named ``conv`` and ``bn``).

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``.
      epsilon: the BatchNorm epsilon, for ``ConvBN`` blocks (with ``model``, each BatchNorm's own).
      model: the ANN, for any model's structure.
      inputs: an example input ``[B, ...]`` for the walk and the check (training images are best).

    Returns:
      New variables with no ``batch_stats`` for folded layers.

    Raises:
      ValueError: if a BatchNorm cannot be folded (named: it does not directly follow a Conv/Dense, or
        its statistics are left over), if no BatchNorm was found to fold, or if folding changed the
        ANN's outputs.
    """
    if model is not None:
        return _fold_by_structure(variables, model, inputs)
    params = _flat(variables["params"])
    stats = _flat(variables.get("batch_stats", {}))
    pairs = [(k[:-2] + ("conv",), k[:-2] + ("bn",), epsilon) for k in params if k[-2:] == ("conv", "kernel")]
    pairs = [(layer, bn, eps) for layer, bn, eps in pairs if bn + ("scale",) in params]
    left = sorted("/".join(k[:-1]) for k in stats if k[:-1] not in {bn for _, bn, _ in pairs})
    if left or not pairs:
        raise ValueError(
            f"fold_batchnorm found {'no ConvBN block' if not pairs else 'BatchNorm outside ConvBN blocks'}"
            f"{f' ({left[:5]})' if left else ''}: pass model= and inputs= to find the Conv/Dense that "
            "feeds each BatchNorm from the model's structure."
        )
    return _fold_pairs(variables, params, stats, pairs)


def _fold_pairs(variables, params, stats, pairs) -> dict[str, Any]:
    """Folds each ``(layer path, BatchNorm path, epsilon)``; see :func:`fold_batchnorm`."""
    for layer, bn, epsilon in pairs:
        mean = stats.pop(bn + ("mean",))
        var = stats.pop(bn + ("var",))
        gamma = params.pop(bn + ("scale",), jnp.ones_like(mean))
        beta = params.pop(bn + ("bias",), jnp.zeros_like(mean))
        gain = gamma / jnp.sqrt(var + epsilon)
        kernel = params[layer + ("kernel",)]
        # Broadcast the per-output-channel gain over the kernel's input axes explicitly.
        params[layer + ("kernel",)] = kernel * gain.reshape((1,) * (kernel.ndim - 1) + (-1,))
        layer_bias = params.get(layer + ("bias",), jnp.zeros_like(beta))
        params[bn + ("bias",)] = beta + (layer_bias - mean) * gain
        if layer + ("bias",) in params:
            params[layer + ("bias",)] = jnp.zeros_like(layer_bias)
    folded = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    folded["params"] = traverse_util.unflatten_dict(params)
    if stats:
        folded["batch_stats"] = traverse_util.unflatten_dict(stats)
    return folded


def _fold_by_structure(variables: Variables, model: nn.Module, inputs: jax.Array | None) -> dict[str, Any]:
    if inputs is None:
        raise ValueError("fold_batchnorm(model=...) needs inputs=: an example batch [B, ...] for the walk.")
    calls = trace_structure(model, variables, inputs)
    pairs, refused, seen = [], [], set()
    for call in calls:
        if call.kind != "batchnorm":
            continue
        source = calls[call.fed_by] if call.fed_by is not None else None
        axis = call.module.axis
        if (
            source is None
            or source.kind not in ("conv", "dense")
            or source.path in seen
            or call.path in {bn for _, bn, _ in pairs}
            or axis not in (-1, len(call.input_shape) - 1)
        ):
            refused.append(call.name)
            continue
        seen.add(source.path)
        pairs.append((source.path, call.path, call.module.epsilon))
    if refused:
        raise ValueError(
            f"cannot fold BatchNorm {refused[:5]}: each must directly follow its own Conv/Dense (same "
            "array, feature axis last); fold only models where that holds, or keep fold_bn=False."
        )
    if not pairs:
        raise ValueError(
            f"fold_bn was requested but {type(model).__name__} has no Conv/Dense → BatchNorm pair."
        )
    folded = _fold_pairs(
        variables, _flat(variables["params"]), _flat(variables.get("batch_stats", {})), pairs
    )
    expected = jax.tree.leaves(model.apply(variables, inputs, **_inference_kwargs(model)))
    got = jax.tree.leaves(apply_folded(model, folded, inputs))
    for want, have in zip(expected, got, strict=True):
        scale = float(jnp.max(jnp.abs(want))) or 1.0
        if not np.allclose(np.asarray(have), np.asarray(want), rtol=1e-4, atol=1e-4 * scale):
            raise ValueError(
                "folding BatchNorm changed the ANN's outputs: a folded Conv/Dense output is also used "
                f"outside its BatchNorm (pairs {['/'.join(bn) for _, bn, _ in pairs][:5]}); keep "
                "fold_bn=False."
            )
    return folded


def ann_to_snn_variables(
    ann_variables: Variables,
    *,
    threshold_parameterization: str = ThresholdParameterization.IDENTITY,
    fold_bn: bool = False,
    bn_epsilon: float = 1e-5,
    model: nn.Module | None = None,
    inputs: jax.Array | None = None,
) -> dict[str, Any]:
    """Turns trained ANN variables into SNN variables.

    Every ``threshold`` leaf (the stored λ parameter of an activation layer) becomes the IF threshold
    θ = λ, stored directly (the SNN uses the identity parameterization); all weights and BN statistics
    are carried over unchanged unless ``fold_bn``.

    Args:
      ann_variables: ``{"params": ..., "batch_stats": ...}`` of the trained ANN.
      threshold_parameterization: how the ANN stored λ (see ``ThresholdParameterization``).
      fold_bn: fold BatchNorm into the preceding convs (then build the SNN with ``fold_bn=True``).
      bn_epsilon: BatchNorm epsilon, used when folding snnjax's ``ConvBN`` blocks.
      model: the ANN, to fold by its structure (any model; see :func:`fold_batchnorm`).
      inputs: an example input ``[B, ...]``, with ``model``.

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
    if not fold_bn:
        return variables
    return fold_batchnorm(variables, bn_epsilon, model=model, inputs=inputs)


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

    Raises:
      ValueError: for a percentile outside ``(0, 100]``, or a model that calls no ``Activation``.
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}.")
    _, state = model.apply(
        variables,
        images,
        **_inference_kwargs(model),
        capture_intermediates=lambda mdl, method: isinstance(mdl, Activation) and method == "__call__",
        mutable=["intermediates"],
    )
    if "intermediates" not in state:
        raise ValueError(
            f"{type(model).__name__} calls no snnjax.Activation layer: calibrate_thresholds sets θ of those "
            "layers. Write the model's ReLUs as snnjax.Activation(snnjax.relu) (a ReLU written as a "
            "function, nn.relu(x), has no layer to hold its θ)."
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


def _chain_layers(params: Mapping[tuple[str, ...], Any]) -> list[tuple[tuple, list[tuple], tuple | None]]:
    """``[(linear layer path, bias paths, activation path)]`` of a :class:`~snnjax.models.ConvNet` chain.

    Found by snnjax's layer names; :func:`snnjax.structure.linear_chain` finds it in any model.
    """
    names = {k[0] for k in params}
    if any(name.startswith(("stem", "stage")) for name in names):
        raise ValueError(
            "Weight rescaling needs a plain chain of layers (ConvNet: VGG-16, SmallCNN); a ResNet's "
            "identity shortcuts carry no weights to rescale, so keep the thresholds (threshold form)."
        )
    convs = sorted((n for n in names if n.startswith("conv_bn")), key=lambda n: int(n[len("conv_bn") :]))
    dense = sorted((n for n in names if n.startswith("fc") and not n.startswith("fc_act")),
                   key=lambda n: int(n[len("fc") :]))  # fmt: skip
    chain = [
        ((n, "conv"), [(n, "conv", "bias"), (n, "bn", "bias")], (f"act{n[len('conv_bn') :]}",)) for n in convs
    ]
    chain += [((n,), [(n, "bias")], (f"fc_act{n[len('fc') :]}",)) for n in dense]
    return [*chain, (("head",), [], None)]


def _structure_chain(snn_variables: Variables, model: nn.Module, inputs: jax.Array):
    chain = linear_chain(trace_structure(model, snn_variables, inputs))
    return [
        (linear.path, [linear.path + ("bias",)] + [norm.path + ("bias",) for norm in norms],
         None if activation is None else activation.path)
        for linear, norms, activation in chain
    ]  # fmt: skip


def balance_weights(
    snn_variables: Variables, *, model: nn.Module | None = None, inputs: jax.Array | None = None
) -> dict[str, Any]:
    """The weight form of threshold balancing: rescale weights so every threshold becomes 1.

    For each linear layer ``l`` of the chain, ``W ← W·λ_{l−1}/λ_l`` and ``b ← b/λ_l`` (per channel
    when the thresholds are: ``λ_{l−1}`` scales the input channels, ``λ_l`` the output channels); the
    head gets ``W ← W·λ_last`` and keeps its bias. Every membrane is then the original one divided by
    its θ, so the SNN fires exactly the same spikes and computes the same logits (up to float
    rounding); a test checks it.

    Args:
      snn_variables: SNN variables from :func:`ann_to_snn_variables` with ``fold_bn=True`` (a
        BatchNorm after the conv would undo the rescaling).
      model: the ANN, to find the chain by one structure walk (any plain-chain model); without it,
        a :class:`~snnjax.models.ConvNet`'s layers are found by their names.
      inputs: an example input ``[B, ...]``, with ``model``.

    Returns:
      New variables with every ``threshold`` leaf equal to 1.

    Raises:
      ValueError: for unfolded BatchNorm or a model that is not a plain chain.
    """
    params = _flat(snn_variables["params"])
    if any(k[-2:] == ("bn", "scale") for k in params) or snn_variables.get("batch_stats"):
        raise ValueError("balance_weights needs folded BatchNorm: convert with fold_bn=True first.")
    if model is not None:
        if inputs is None:
            raise ValueError(
                "balance_weights(model=...) needs inputs=: an example batch [B, ...] for the walk."
            )
        chain = _structure_chain(snn_variables, model, inputs)
    else:
        chain = _chain_layers(params)
    input_scale = jnp.ones(())
    for path, bias_paths, activation in chain:
        kernel = params[path + ("kernel",)]
        in_features = kernel.shape[-2]
        # After a flatten (NHWC, channels fastest) a per-channel scale repeats over the positions.
        scale_in = jnp.tile(input_scale, in_features // input_scale.size) if input_scale.ndim else input_scale
        kernel = kernel * jnp.broadcast_to(scale_in.reshape(-1, 1), kernel.shape)
        if activation is None:
            params[path + ("kernel",)] = kernel
            break
        threshold = params[activation + ("threshold",)]
        out_scale = jnp.broadcast_to(threshold, (kernel.shape[-1],))
        params[path + ("kernel",)] = kernel / jnp.broadcast_to(out_scale, kernel.shape)
        for bias_path in bias_paths:
            if bias_path in params:
                params[bias_path] = params[bias_path] / out_scale
        params[activation + ("threshold",)] = jnp.ones_like(threshold)
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
