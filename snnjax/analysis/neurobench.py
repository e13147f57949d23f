"""NeuroBench's metrics of a converted SNN, computed as NeuroBench defines them.

NeuroBench (Yik et al., Nature Communications 2025; code ``NeuroBench/neurobench``) is the field's
benchmark harness; its tables name their metrics ``Footprint``, ``ConnectionSparsity``,
``ActivationSparsity`` and ``SynapticOperations`` (``Effective_MACs``, ``Effective_ACs``, ``Dense``).
Our reconstruction of its code (``metrics/static/footprint.py``, ``connection_sparsity.py``,
``metrics/workload/activation_sparsity.py``, ``synaptic_operations.py``), for a model run for T steps:

- ``Footprint``: bytes of the model's parameters and buffers. Here: every array of the SNN's
  variables (weights, biases, thresholds, folded BatchNorm biases). snnjax keeps membranes in a scan
  carry, not in the variables, so they are not counted (snnTorch's ``mem`` buffer is, once run).
- ``ConnectionSparsity``: zero weights / all weights over the Conv/Dense kernels (biases excluded),
  rounded to 4 decimals.
- ``ActivationSparsity``: 1 − (nonzero outputs / all outputs) of the spiking layers, pooled over
  layers, time steps and samples (NeuroBench averages per-batch values weighted by batch size, which
  is the same when every sample has as many neurons).
- ``SynapticOperations``: for each Conv/Dense call at each step (the whole batch at once), its input
  is *spiking* if every value is in {−1, 0, 1}; then the call's operations are ACs, else MACs. The
  count is the layer rerun with its input and its weights binarized (nonzero → 1) and the bias
  dropped, summed: every nonzero input times the nonzero weights it drives, padding never counted
  (computed here as each input's fan-out, precomputed per layer, summed over the nonzero inputs).
  ``Dense`` is the same count with every input and weight set to 1. Each is summed over steps and
  layers and divided by the number of samples. The first layer's analog input counts (as MACs, at
  every step).

snnjax's spikes carry the value θ (a count n·θ for ``multi_spike_if``); NeuroBench's spikes are 0/1.
The spiking test is therefore applied to the input divided by the θ of the spiking layer it comes
from (through pooling and flattening: the count network `snnjax.io.export_nir` writes for
sinabs), which is NeuroBench's test on that network: spikes straight from an IF layer (or max-pooled)
are ACs, average-pooled spikes are MACs unless every window holds all spikes or none.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.conversion import interception
from snnjax.conversion.frontends import flat_parameters
from snnjax.conversion.simulation import SpikingNetwork, inference_kwargs
from snnjax.conversion.structure import INPUT, KINDS, POOLS, LayerCall, trace_structure

__all__ = ["neurobench_metrics"]

SYNAPTIC = ("conv", "dense")


def neurobench_metrics(
    snn: SpikingNetwork, snn_variables: Mapping[str, Any], batches: Iterable, num_steps: int
) -> dict[str, Any]:
    """NeuroBench's Footprint, ConnectionSparsity, ActivationSparsity and SynapticOperations.

    Args:
      snn: the SNN (run in layer mode; any neuron).
      snn_variables: its variables.
      batches: ``(images [B, H, W, C], labels [B], mask [B])`` tuples; masked-out examples are left
        out.
      num_steps: T, the steps each sample is run for.

    Returns:
      ``{"Footprint": bytes, "ConnectionSparsity", "ActivationSparsity", "SynapticOperations":
      {"Effective_MACs", "Effective_ACs", "Dense"}, "num_samples", "num_steps"}`` with NeuroBench's
      key names; operations per sample over the T steps.
    """
    leaves = jax.tree.leaves(snn_variables)
    footprint = int(sum(np.asarray(leaf).nbytes for leaf in leaves))
    # One device: the counts are small computations, and variables replicated over a mesh would make
    # them SPMD programs for nothing.
    snn_variables = jax.device_put(snn_variables, jax.local_devices()[0])
    batches = [(np.asarray(images)[np.asarray(mask, bool)]) for images, _, mask in batches]
    batches = [images for images in batches if len(images)]
    if not batches:
        raise ValueError("neurobench_metrics needs at least one unmasked example.")
    calls = trace_structure(snn.ann, snn_variables, jnp.asarray(batches[0][:1]))
    layers = [call for call in calls if call.kind in SYNAPTIC]
    flat = flat_parameters(snn_variables)
    kernels = {call.name: flat[(*call.path, "kernel")] for call in layers}
    zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels.values())
    weights = sum(int(np.size(k)) for k in kernels.values())
    thresholds = snn.thresholds(snn_variables, jnp.zeros((1, *batches[0][:1].shape)))
    scales = {call.name: _spike_scale(calls, call, thresholds) for call in layers}
    specs = tuple((call.name, call.path, tuple(call.input_shape[1:])) for call in layers)
    fanouts = {
        call.name: _fanout(_conv_spec(call), kernels[call.name], tuple(call.input_shape[1:]))
        for call in layers
    }
    # Dense: every input and weight set to 1, the same count whatever the input: per sample and step.
    dense_per_step = sum(
        int(
            _fanout(
                _conv_spec(call), np.ones(np.shape(kernels[call.name])), tuple(call.input_shape[1:])
            ).sum()
        )
        for call in layers
    )
    macs = acs = 0
    nonzero = neurons = 0
    samples = 0
    for images in batches:
        counts = _counts(snn, specs, snn_variables, jnp.asarray(images), num_steps, scales, fanouts)
        counts = jax.device_get(counts)
        for name in counts["ops"]:
            spiking, effective = (np.asarray(a) for a in counts["ops"][name])
            per_step = effective.astype(np.int64).sum(axis=1)  # [T]: over the batch, exactly
            acs += int(np.sum(per_step[spiking]))
            macs += int(np.sum(per_step[~spiking]))
        nonzero += int(counts["nonzero"])
        neurons += int(counts["neurons"])
        samples += len(images)
    dense = float(dense_per_step * num_steps)
    return {
        "Footprint": footprint,
        "ConnectionSparsity": round(zeros / weights, 4) if weights else 0.0,
        "ActivationSparsity": (neurons - nonzero) / neurons if neurons else 0.0,
        "SynapticOperations": {
            "Effective_MACs": macs / samples,
            "Effective_ACs": acs / samples,
            "Dense": dense,
        },
        "num_samples": samples,
        "num_steps": num_steps,
    }


def _spike_scale(calls: list[LayerCall], call: LayerCall, thresholds: Mapping[str, Any]) -> Any:
    """θ of the spiking layer a Conv/Dense reads (through pooling and flattening), or None.

    None: it reads the model's input or something else (its values are tested as they are).
    θ per channel after a flatten repeats over the positions (channels fastest).
    """
    node, flattened = call, False
    while len(node.sources) == 1 and set(node.ops) <= {"reshape"} and node.sources[0] is not INPUT:
        flattened = flattened or bool(node.ops)
        node_before = calls[node.sources[0]]
        if node_before.kind == "activation":
            theta = jnp.asarray(thresholds[node_before.name])
            if theta.ndim and flattened:
                return jnp.tile(theta, call.input_shape[-1] // theta.shape[0])
            return theta
        if node_before.kind not in POOLS:
            return None
        node = node_before
    return None


def _pairs(value: Any) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _conv_spec(call: LayerCall) -> tuple | None:
    """``(strides, padding, dilation, groups)`` of a 2-D convolution call, hashable; None for Dense."""
    if call.kind == "dense":
        return None
    module = call.module
    padding = getattr(module, "padding", "SAME")
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    elif isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(
                f"{call.name}: padding {padding!r} is not counted (SAME, VALID or explicit only)."
            )
    else:
        padding = tuple(_pairs(p) for p in padding)
    if len(call.input_shape) != 4:
        raise ValueError(f"{call.name}: NeuroBench counts here are for 2-D convolutions [B, H, W, C].")
    return (
        _pairs(getattr(module, "strides", None) or 1),
        padding,
        _pairs(getattr(module, "kernel_dilation", None) or 1),
        int(getattr(module, "feature_group_count", 1) or 1),
    )


def _fanout(spec: tuple | None, kernel: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """How many (output, nonzero weight) pairs each input value drives: ``[H, W, C_in]`` or ``[F]``.

    A nonzero input at a position drives, for every tap of the kernel that reads it for some output
    inside the map (padding excluded), the nonzero weights of that tap from its channel. Summing the
    fan-out over the nonzero inputs is NeuroBench's count (the layer rerun on binarized input and
    weights, bias dropped), computed without running a convolution.
    """
    nonzero = (np.asarray(kernel) != 0).astype(np.int64)
    if spec is None:
        return nonzero.sum(axis=-1)
    strides, padding, dilation, groups = spec
    if groups != 1:
        raise ValueError("NeuroBench counts here are for convolutions without feature groups.")
    height, width, _ = input_shape
    kh, kw = nonzero.shape[:2]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(
            (height, width), ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), strides, padding
        )
    (top, bottom), (left, right) = padding
    out_h = (height + top + bottom - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width + left + right - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    fanout = np.zeros(input_shape, np.int64)
    per_tap = nonzero.sum(axis=-1)  # [kh, kw, C_in]: nonzero weights from each tap and input channel
    for i in range(kh):
        rows = np.arange(out_h) * strides[0] + i * dilation[0] - top
        rows = rows[(rows >= 0) & (rows < height)]
        for j in range(kw):
            cols = np.arange(out_w) * strides[1] + j * dilation[1] - left
            cols = cols[(cols >= 0) & (cols < width)]
            np.add.at(fanout, np.ix_(rows, cols), per_tap[i, j])
    return fanout


@functools.partial(jax.jit, static_argnames=("snn", "layers", "num_steps"))
def _counts(snn, layers, variables, images, num_steps, scales, fanouts):
    """Per layer and step ``(spiking?, effective ops)``; the spiking layers' nonzero outputs.

    ``layers``: ``(name, path, input shape without the batch axis)`` per Conv/Dense call;
    ``fanouts``: `_fanout` of each.
    """
    inputs, record = _run_recording(snn, layers, variables, images, num_steps)
    ops = {}
    for name, _, shape in layers:
        x = inputs[name].reshape(num_steps, images.shape[0], *shape)
        theta = scales[name]
        normalized = x if theta is None else x / theta
        spiking = jnp.all((normalized == 0) | (jnp.abs(normalized) == 1), axis=tuple(range(1, x.ndim)))
        # Per step and example in int32 (exact; a VGG-16 layer is < 10⁹ per image), summed on the host.
        drives = jnp.where(x != 0, jnp.asarray(fanouts[name], jnp.int32), 0)
        ops[name] = (spiking, jnp.sum(drives, axis=tuple(range(2, x.ndim))))
    nonzero = sum(jnp.sum(y != 0) for _, y in record.values())
    count = sum(y.size for _, y in record.values())
    return {"ops": ops, "nonzero": nonzero, "neurons": count}


def _run_recording(snn, layers, variables, images, num_steps):
    """The layer-mode SNN on static ``images``: Conv/Dense inputs and spiking layers' ``(z, y)``.

    A Conv/Dense input has time folded into the batch axis (``[T·B, ...]``).
    """
    names = {path: name for name, path, _ in layers}
    recorded: dict[str, jax.Array] = {}

    def linen(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, KINDS["conv"] + KINDS["dense"]):
            path = tuple(module.path)
            if path in names and (args or kwargs):
                recorded.setdefault(names[path], interception.call_input(next_fun, args, kwargs)[1])
        return next_fun(*args, **kwargs)

    def nnx_call(module, path, *args):
        if tuple(path) in names and args:
            recorded.setdefault(names[tuple(path)], args[0])

    sequence = jnp.broadcast_to(images, (num_steps, *images.shape))
    with nn.intercept_methods(linen), interception.watching_nnx_calls(nnx_call):
        _, record = snn.apply_recorded(variables, sequence, **inference_kwargs(snn.ann))
    return recorded, record
