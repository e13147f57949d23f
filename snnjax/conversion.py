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
from snnjax.models import spiking_max_pool_gate
from snnjax.neurons import NEURONS

__all__ = [
    "CONVERTIBLE_ACTIVATIONS",
    "ann_to_snn_variables",
    "balance_weights",
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


SIMULATION_MODES = ("layer", "step")


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


# The ANN activation layers the converter knows how to turn into spiking neurons.
CONVERTIBLE_ACTIVATIONS = (ThresholdActivation, Activation)


def _check_convertible(ann_model: nn.Module) -> None:
    activation = getattr(ann_model, "activation", None)
    if activation is None:
        raise ValueError(
            f"{type(ann_model).__name__} has no 'activation' attribute: the converter swaps that factory "
            "for the spiking neuron, so build the model with one (see snnjax.models)."
        )
    layer = getattr(activation, "func", activation)
    if layer not in CONVERTIBLE_ACTIVATIONS:
        known = ", ".join(cls.__name__ for cls in CONVERTIBLE_ACTIVATIONS)
        raise ValueError(
            f"The model's activation {activation!r} is not one the converter knows ({known}, or a "
            "functools.partial of one); refusing to convert rather than skipping it."
        )


def spiking_model(
    ann_model: nn.Module,
    *,
    v0: float = 0.5,
    fold_bn: bool = False,
    per_channel: bool = False,
    mode: str = "layer",
    neuron: str = "if",
) -> nn.Module:
    """The SNN: the same model with its activation swapped for the spiking neuron.

    Args:
      ann_model: an unbound model with ``activation`` (and ``norm``) attributes.
      v0: initial membrane fraction (½ for QCFS, ``shift2`` for SlipReLU).
      fold_bn: use :class:`FoldedBatchNorm` (pair with ``ann_to_snn_variables(..., fold_bn=True)``).
      per_channel: thresholds are per channel.
      mode: ``"layer"`` or ``"step"`` simulation (see :func:`spiking_apply`); same outputs.
      neuron: see :func:`spiking_activation`.

    Returns:
      A clone of ``ann_model`` to be applied with :func:`spiking_apply`.

    Raises:
      ValueError: if the model's activation is not a :data:`CONVERTIBLE_ACTIVATIONS` layer.
    """
    _check_convertible(ann_model)
    updates: dict[str, Any] = {"activation": spiking_activation(v0, per_channel, mode, neuron)}
    if fold_bn:
        updates["norm"] = FoldedBatchNorm
    return ann_model.clone(**updates)


def _is_step_mode(snn_model: nn.Module) -> bool:
    return getattr(snn_model.activation, "func", None) is SteppedIFActivation


def _fold_time(snn_model: nn.Module, num_steps: int) -> nn.Module:
    """The layer-mode SNN run on a ``[T·B, ...]`` batch: only the neurons see ``[T, B, ...]``.

    Every synaptic layer then has exactly the ANN's layout on a T·B batch (XLA:CPU ran the same
    network ~3× slower with a second leading batch axis); each spiking layer reshapes its input to
    time-major for its scan and back, which moves no data.
    """

    def unfold(fn):
        def folded(x, *args):
            y = fn(x.reshape(num_steps, -1, *x.shape[1:]), *args)
            return y.reshape(y.shape[0] * y.shape[1], *y.shape[2:])

        return folded

    activation = snn_model.activation
    keywords = {**activation.keywords, "fn": unfold(activation.keywords["fn"])}
    updates: dict[str, Any] = {"activation": functools.partial(activation.func, *activation.args, **keywords)}
    if getattr(snn_model, "pooling", None) == "max_gate":
        updates["pooling"] = unfold(spiking_max_pool_gate)
    return snn_model.clone(**updates)


def spiking_apply(
    snn_model: nn.Module, snn_variables: Variables, images: jax.Array, num_steps: int
) -> jax.Array:
    """Runs the SNN for ``num_steps`` steps and returns the logits of every step.

    The image is the analog input of the first layer at every step; the last layer stays analog.
    Layer mode (``spiking_model(..., mode="layer")``): each synaptic layer runs once on the
    time-batched ``T·B`` batch and each spiking layer is one ``lax.scan`` over time (the model class
    also accepts time-major ``[T, B, ...]`` input directly, which gives the same outputs). Step mode
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
        batch = images.shape[0]
        inputs = jnp.broadcast_to(images, (num_steps, *images.shape)).reshape(-1, *images.shape[1:])
        logits = _fold_time(snn_model, num_steps).apply(snn_variables, inputs, train=False)
        return logits.reshape(num_steps, batch, *logits.shape[1:])

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
