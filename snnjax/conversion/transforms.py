"""ANN→SNN conversion as transforms of the Flax variable tree.

The SNN's variables are the ANN's passed through `convert_variables` (each layer's λ becomes
that layer's IF threshold θ; optional BN folding); `snnjax.conversion.simulation` runs the ANN module
with its activation sites intercepted (`snnjax.spiking_model`, `snnjax.spiking_apply`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from snnjax.conversion import interception
from snnjax.conversion.frontends import NNX, FunctionModel, NNXModel, as_model, as_variables, model_name
from snnjax.conversion.interception import SITES
from snnjax.conversion.simulation import (
    inference_kwargs as _inference_kwargs,
    linear_apply,
)
from snnjax.conversion.structure import linear_chain, trace_structure
from snnjax.nn import nnx_layers as snnjax_nnx
from snnjax.nn.layers import (
    Activation,
    ThresholdParameterization,
    threshold_from_param,
)

__all__ = [
    "BALANCING_FORMS",
    "convert_variables",
    "balance_weights",
    "calibrate_thresholds",
    "fold_batchnorm",
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
    (`snnjax.conversion.simulation`) and by `snnjax.nn.layers.FoldedBatchNorm`.

    Which layer feeds which: with ``model`` and ``inputs``, the structure graph
    (`snnjax.conversion.structure.trace_structure`) finds every Conv/Dense whose output goes straight into
    a BatchNorm, whatever the names; a layer whose output is also read elsewhere (e.g. by a residual
    add) or that is called more than once is refused, and the folded ANN is checked against the
    unfolded one with every activation the identity, on a random input of ``inputs``' shape. Without
    ``model`` (an older form, kept for variables of snnjax's own models), ``ConvBN`` blocks are
    found by their children's names ``conv`` and ``bn``; snnjax's conversion run passes ``model``.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}``.
      epsilon: the BatchNorm epsilon, for ``ConvBN`` blocks (with ``model``, each BatchNorm's own).
      model: the ANN, for any model's structure.
      inputs: an example input ``[B, ...]`` for the walk and the check (training images are best).

    Returns:
      New variables with no ``batch_stats`` for folded layers.

    Raises:
      ValueError: if a BatchNorm cannot be folded (named: it does not directly follow a Conv/Dense,
        that layer's output is also read elsewhere, a layer is called twice, or statistics are left
        over), if no BatchNorm was found to fold, or if folding changed the ANN's outputs.
    """
    if model is not None:
        return _fold_by_structure(variables, model, inputs)
    if "params" not in variables:
        raise ValueError("fold_batchnorm of an NNX or function model needs model= and inputs=.")
    params = _flat(variables["params"])
    stats = _flat(variables.get("batch_stats", {}))
    pairs = [(k[:-2] + ("conv",), k[:-2] + ("bn",), epsilon) for k in params if k[-2:] == ("conv", "kernel")]
    pairs = [(layer, bn, eps) for layer, bn, eps in pairs if bn + ("scale",) in params]
    left = sorted({"/".join(k[:-1]) for k in stats if k[:-1] not in {bn for _, bn, _ in pairs}})
    if left or not pairs:
        raise ValueError(
            f"fold_batchnorm found {'no ConvBN block' if not pairs else 'BatchNorm outside ConvBN blocks'}"
            f"{f' ({left[:5]})' if left else ''}: pass model= and inputs= to find the Conv/Dense that "
            "feeds each BatchNorm from the model's structure."
        )
    return _fold_pairs(variables, params, stats, pairs)


def _fold_into(params, layer, bn, mean, var, gamma, beta, epsilon) -> None:
    """``W' = W·γ/√(var+ε)`` into ``params[layer]``, ``b' = β + γ(b − μ)/√(var+ε)`` into ``params[bn]``.

    ``params`` is flat (path tuples); the layer's own bias, if any, is zeroed (the tree keeps its shape).
    """
    gain = gamma / jnp.sqrt(var + epsilon)
    kernel = params[layer + ("kernel",)]
    # Broadcast the per-output-channel gain over the kernel's input axes explicitly.
    params[layer + ("kernel",)] = kernel * gain.reshape((1,) * (kernel.ndim - 1) + (-1,))
    layer_bias = params.get(layer + ("bias",), jnp.zeros_like(beta))
    params[bn + ("bias",)] = beta + (layer_bias - mean) * gain
    if layer + ("bias",) in params:
        params[layer + ("bias",)] = jnp.zeros_like(layer_bias)


def _fold_pairs(variables, params, stats, pairs) -> dict[str, Any]:
    """Folds each ``(layer path, BatchNorm path, epsilon)``; see `fold_batchnorm`."""
    for layer, bn, epsilon in pairs:
        mean = stats.pop(bn + ("mean",))
        var = stats.pop(bn + ("var",))
        gamma = params.pop(bn + ("scale",), jnp.ones_like(mean))
        beta = params.pop(bn + ("bias",), jnp.zeros_like(mean))
        _fold_into(params, layer, bn, mean, var, gamma, beta, epsilon)
    folded = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    folded["params"] = traverse_util.unflatten_dict(params)
    if stats:
        folded["batch_stats"] = traverse_util.unflatten_dict(stats)
    return folded


def _unit_variance(epsilon: float) -> np.float32:
    """A float32 ``v`` with ``v + ε == 1`` exactly in float32, so ``rsqrt(v + ε) == 1``."""
    epsilon = np.float32(epsilon)
    v = np.float32(1) - epsilon
    for _ in range(8):  # within a few ulps of 1 − ε
        total = v + epsilon
        if total == np.float32(1):
            return v
        v = np.nextafter(v, np.float32(2) if total < 1 else np.float32(0))
    raise ValueError(f"no float32 variance makes var + epsilon exactly 1 for epsilon={float(epsilon)}.")


def _fold_pairs_nnx(variables: Variables, pairs) -> dict[str, Any]:
    """Folds ``nnx.BatchNorm`` layers in an NNX state, keeping the graph (and so the model) unchanged.

    The folded BatchNorm keeps its four variables with ``scale = 1``, ``mean = 0``, ``var = 1 − ε``
    (rounded so that ``var + ε`` is exactly 1 in float32) and the folded bias: NNX's
    ``(x − mean)·rsqrt(var + ε)·scale + bias`` is then exactly ``x + bias``, the Linen
    `snnjax.nn.layers.FoldedBatchNorm`.
    """
    pure = nnx.to_pure_dict(variables[NNX])
    params = traverse_util.flatten_dict(pure)
    for layer, bn, epsilon in pairs:
        mean, var = params[bn + ("mean",)], params[bn + ("var",)]
        gamma = params.get(bn + ("scale",), jnp.ones_like(mean))
        beta = params.get(bn + ("bias",), jnp.zeros_like(mean))
        if bn + ("bias",) not in params:
            raise ValueError(
                f"cannot fold BatchNorm {interception.site_name(bn)!r}: an nnx.BatchNorm without a bias "
                "(use_bias=False) has no slot for the folded bias; keep fold_bn=False."
            )
        _fold_into(params, layer, bn, mean, var, gamma, beta, epsilon)
        if bn + ("scale",) in params:
            params[bn + ("scale",)] = jnp.ones_like(gamma)
        params[bn + ("mean",)] = jnp.zeros_like(mean)
        params[bn + ("var",)] = jnp.full_like(var, _unit_variance(epsilon))
    state = jax.tree.map(lambda x: x, variables[NNX])  # a copy: the caller's state is not changed
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(params))
    return {**variables, NNX: state}


def _fold_by_structure(variables: Variables, model: Any, inputs: jax.Array | None) -> dict[str, Any]:
    if inputs is None:
        raise ValueError("fold_batchnorm(model=...) needs inputs=: an example batch [B, ...] for the walk.")
    model = as_model(model)
    if isinstance(model, FunctionModel):
        raise ValueError(
            f"fold_bn: {model.name} is a plain function, whose BatchNorms (if any) are arithmetic the "
            "converter cannot see as layers; fold them in your own params, or keep fold_bn=False."
        )
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
    shared = [(calls[call.fed_by].name, call.name) for call in calls
              if call.kind == "batchnorm" and calls[call.fed_by].readers > 1]  # fmt: skip
    if shared:
        raise ValueError(
            f"cannot fold BatchNorm {[bn for _, bn in shared][:5]}: the output of "
            f"{[layer for layer, _ in shared][:5]} is also read outside its BatchNorm (e.g. by a residual "
            "add), so folding would have changed the ANN's outputs; keep fold_bn=False."
        )
    if not pairs:
        raise ValueError(f"fold_bn was requested but {model_name(model)} has no Conv/Dense → BatchNorm pair.")
    calls_of = collections.Counter(call.path for call in calls)
    twice = [interception.site_name(p) for pair in pairs for p in pair[:2] if calls_of[p] > 1]
    if twice:
        raise ValueError(
            f"cannot fold BatchNorm: {twice[:5]} is called more than once, so folding its weights would "
            "change its other calls too; keep fold_bn=False."
        )
    if isinstance(model, NNXModel):
        folded = _fold_pairs_nnx(variables, pairs)
    else:
        stats = _flat(variables.get("batch_stats", {}))
        folded = _fold_pairs(variables, _flat(variables["params"]), stats, pairs)
        left = sorted({interception.site_name(k[:-1]) for k in _flat(folded.get("batch_stats", {}))})
        if left:
            raise ValueError(
                f"cannot fold BatchNorm {left[:5]}: the model's call did not use it after a Conv/Dense "
                "(its statistics would be left over); keep fold_bn=False."
            )
    # The graph proves the data flow; a layer that computes more than x·W + b (a subclass that scales
    # its output, tied weights) is caught here, with every activation the identity (no threshold to
    # flip) on a random input of the example's shape.
    floating = jnp.issubdtype(jnp.result_type(inputs), jnp.floating)
    x = (
        jax.random.normal(jax.random.key(0), jnp.shape(inputs), jnp.result_type(inputs))
        if floating
        else inputs
    )
    for want, have in zip(
        jax.tree.leaves(linear_apply(model, variables, x)),
        jax.tree.leaves(linear_apply(model, folded, x)),
        strict=True,
    ):
        scale = float(jnp.max(jnp.abs(want))) or 1.0
        if not np.allclose(np.asarray(have), np.asarray(want), rtol=1e-4, atol=1e-4 * scale):
            raise ValueError(
                f"folding BatchNorm {[interception.site_name(bn) for _, bn, _ in pairs][:5]} changed the "
                "ANN's outputs: a folded layer computes more than x·W + b (e.g. a subclass that rescales "
                "its output) or its weights are also used elsewhere; keep fold_bn=False."
            )
    return folded


def convert_variables(
    ann_variables: Any,
    *,
    threshold_parameterization: str = ThresholdParameterization.IDENTITY,
    fold_bn: bool = False,
    bn_epsilon: float = 1e-5,
    model: Any = None,
    inputs: jax.Array | None = None,
) -> dict[str, Any]:
    """Turns trained ANN variables into SNN variables.

    Every ``threshold`` leaf (the stored λ parameter of an activation layer) becomes the IF threshold
    θ = λ, stored directly (the SNN uses the identity parameterization); all weights and BN statistics
    are carried over unchanged unless ``fold_bn``. Calibrated thresholds of parameter-free sites (the
    ``"sites"`` collection) are θ already and carried over.

    Args:
      ann_variables: the trained ANN's variables: Linen ``{"params": ..., "batch_stats": ...}``; for
        an NNX model the module itself, its ``nnx.State`` or the ``{"nnx": ..., "sites": ...}`` dict
        of `calibrate_thresholds`; for a function model ``{"params": ..., "sites": ...}``.
      threshold_parameterization: how the ANN stored λ (see ``ThresholdParameterization``).
      fold_bn: fold BatchNorm into the preceding convs (then build the SNN with ``fold_bn=True``).
      bn_epsilon: BatchNorm epsilon, used when folding snnjax's ``ConvBN`` blocks.
      model: the ANN, to fold by its structure (any model; see `fold_batchnorm`); an NNX
        module given as ``ann_variables`` is its own model.
      inputs: an example input ``[B, ...]``, with ``model``.

    Returns:
      SNN variables, a new tree (the input is not modified); for an NNX model ``{"nnx": state, ...}``,
      the form `spiking_apply` reads.

    Raises:
      ValueError: if there is no threshold at all (e.g. a plain-ReLU ANN: run
        `calibrate_thresholds` first).
    """
    if isinstance(ann_variables, nnx.Module):
        model = ann_variables if model is None else model
        ann_variables = as_variables(ann_variables, None)
    elif isinstance(ann_variables, nnx.State):
        ann_variables = {NNX: ann_variables}
    variables = dict(ann_variables)
    found = bool(variables.get(SITES))
    if NNX in variables:
        # An NNX layer carries its own parameterization: the SNN maps its stored λ to θ by it.
        if ThresholdParameterization(threshold_parameterization) is not ThresholdParameterization.IDENTITY:
            raise ValueError(
                "threshold_parameterization is read from each snnjax.nnx.ThresholdActivation "
                "(its parameterization field); leave the argument at 'identity' for NNX models."
            )
        leaves = jax.tree_util.tree_leaves_with_path(variables[NNX])
        found = found or any(_is_threshold_path(path) for path, _ in leaves)
    elif isinstance(variables.get("params"), Mapping):  # a function's params may be any pytree
        params = _flat(variables["params"])
        threshold_keys = [k for k in params if k[-1] == "threshold"]
        found = found or bool(threshold_keys)
        for key in threshold_keys:
            params[key] = threshold_from_param(params[key], threshold_parameterization)
        variables["params"] = traverse_util.unflatten_dict(params)
    if not found:
        raise ValueError(
            "The ANN variables have no activation thresholds ('threshold' leaves, or calibrated "
            "'sites'). A plain-ReLU ANN (snnjax.Activation layers or ReLU function calls) needs "
            "data-based thresholds: call snnjax.calibrate_thresholds(model, variables, images) first."
        )
    if not fold_bn:
        return variables
    return fold_batchnorm(variables, bn_epsilon, model=model, inputs=inputs)


def _is_threshold_path(path: tuple) -> bool:
    """Whether a pytree path of an NNX state leads to a layer's ``threshold`` parameter."""
    return any(getattr(key, "key", None) == "threshold" for key in path)


def calibrate_thresholds(
    model: Any,
    variables: Any,
    images: jax.Array,
    percentile: float = 99.9,
    per_channel: bool = False,
) -> dict[str, Any]:
    """Data-based threshold balancing for a plain-ReLU ANN: θ = a percentile of each site's output.

    Runs ``images`` through the ANN (inference mode) and, for every parameter-free activation site,
    sets θ to the ``percentile`` of its outputs (100 = the max, the classic rule), over everything (per
    site) or over all axes but the channel axis. The sites:

    * a Linen `snnjax.nn.layers.Activation` layer: θ becomes its ``threshold`` parameter;
    * an NNX `snnjax.nnx.Activation` layer, and every ReLU *function* call (``nn.relu``,
      ``jax.nn.relu``, ``nnx.relu``) in a Linen, NNX or plain-function model: θ goes into the
      variables' ``"sites"`` collection, nested by the site's key (module path, then ``relu_<n>`` in
      call order within that module; `snnjax.conversion.interception`).

    Args:
      model: the ANN: a Flax Linen module, a Flax NNX module or a function ``apply(params, x)``.
      variables: its variables: Linen variables; for NNX None (the module's state) or its
        ``nnx.State``; for a function its params (or ``{"params": params}``).
      images: calibration inputs ``[N, ...]`` (training data).
      percentile: in ``(0, 100]``.
      per_channel: one θ per channel (last axis) instead of one per site; build the SNN with
        ``per_channel=True``. A channel that never activates gets θ = the site's θ, not 0.

    Returns:
      The variables, in the form `spiking_model`'s model reads (for NNX ``{"nnx": state,
      "sites": ...}``, for a function ``{"params": params, "sites": ...}``), with every site's θ.

    Raises:
      ValueError: for a percentile outside ``(0, 100]``, or a model with no parameter-free site.
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}.")
    frontend = as_model(model)
    variables = as_variables(model, variables)
    layer_outputs: dict[tuple, jax.Array] = {}  # Linen Activation layers: θ in params
    site_outputs: dict[tuple, jax.Array] = {}  # function calls and NNX Activation layers: θ in "sites"

    def concrete(key, output):
        if isinstance(output, jax.core.Tracer):  # under vmap/scan/remat inside the model
            raise ValueError(
                f"activation site {interception.site_name(key)!r} runs inside a JAX transformation of the "
                "model (jax.vmap, lax.scan, jax.checkpoint, nn.scan, ...): calibration cannot read its "
                "values there. Call the ReLU outside the transformation (apply the model to the whole "
                "batch), or write it as a snnjax.Activation layer in Linen."
            )
        return output

    def function_site(key, x):
        site_outputs[key] = concrete(key, jax.nn.relu(x))
        return site_outputs[key]

    def nnx_layer(layer, path, x):
        output = layer(x)
        if isinstance(layer, snnjax_nnx.Activation):
            site_outputs.setdefault(path, concrete(path, output))  # a layer called twice: its first call
        return output

    kwargs = _inference_kwargs(frontend)
    with interception.relu_sites(function_site):
        if isinstance(frontend, NNXModel):
            frontend.apply(variables, images, layer_handler=nnx_layer)
        elif isinstance(frontend, nn.Module):
            # Linen layers by capture_intermediates, which sees through lifted transforms (nn.remat).
            _, state = frontend.apply(
                variables,
                images,
                **kwargs,
                capture_intermediates=lambda mdl, method: (
                    isinstance(mdl, Activation) and method == "__call__"
                ),
                mutable=["intermediates"],
            )
            for key, value in _flat(state.get("intermediates", {})).items():
                # Keys look like (..., "act0", "__call__"); the value is a tuple of outputs.
                layer_outputs[key[:-1]] = value[0] if isinstance(value, tuple) else value
        else:
            frontend.apply(variables, images, **kwargs)
    if not layer_outputs and not site_outputs:
        raise ValueError(
            f"{model_name(frontend)} has no parameter-free activation site: calibrate_thresholds sets θ of "
            "ReLU function calls (nn.relu, jax.nn.relu, nnx.relu), snnjax.Activation and "
            "snnjax.nnx.Activation layers. Layers with a trained threshold (QCFS, ...) need no "
            "calibration: convert them with snnjax.convert_variables."
        )

    def threshold_of(outputs):
        activations = np.asarray(outputs)
        threshold = np.percentile(activations, percentile)
        if per_channel:
            by_channel = np.percentile(activations.reshape(-1, activations.shape[-1]), percentile, axis=0)
            # θ = 0 would make a silent channel fire on any positive input; fall back to the site's θ.
            threshold = np.where(by_channel > 0, by_channel, threshold)
        return jnp.asarray(threshold, jnp.float32)

    calibrated = dict(variables)
    if layer_outputs:
        params = _flat(variables["params"])
        for path, outputs in layer_outputs.items():
            params[path + ("threshold",)] = threshold_of(outputs)
        calibrated["params"] = traverse_util.unflatten_dict(params)
    if site_outputs:
        sites = _flat(variables.get(SITES, {}))
        sites.update({key: threshold_of(outputs) for key, outputs in site_outputs.items()})
        calibrated[SITES] = traverse_util.unflatten_dict(sites)
    return calibrated


def _chain_layers(params: Mapping[tuple[str, ...], Any]) -> list[tuple[tuple, list[tuple], tuple | None]]:
    """``[(linear layer path, bias paths, activation path)]`` of a `snnjax.nn.models.ConvNet` chain.

    Found by snnjax's layer names; `snnjax.conversion.structure.linear_chain` finds it in any model.
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
      snn_variables: SNN variables from `convert_variables` with ``fold_bn=True`` (a
        BatchNorm after the conv would undo the rescaling).
      model: the ANN, to find the chain by one structure walk (any plain-chain model); without it,
        a `snnjax.nn.models.ConvNet`'s layers are found by their names.
      inputs: an example input ``[B, ...]``, with ``model``.

    Returns:
      New variables with every ``threshold`` leaf equal to 1.

    Raises:
      ValueError: for unfolded BatchNorm or a model that is not a plain chain.
    """
    if "params" not in snn_variables or snn_variables.get(SITES):
        raise ValueError(
            "balance_weights reads Linen variables with a 'threshold' per activation layer; NNX models "
            "and ReLU function sites keep θ per site (the threshold form): convert without it."
        )
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
