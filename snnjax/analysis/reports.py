"""Checking the SNN against the ANN: layer-wise conversion error, firing statistics, operations, energy.

Every function here runs the ANN and the layer-mode SNN on the same images and compares them per
activation layer (the layers are found by intercepting the modules' calls, so any snnjax model works).
Definitions, for one activation layer after ``t`` steps, with ``a`` the ANN activation, ``z`` the SNN
layer's input current, ``y`` its output (spikes·θ) and ``r = mean(y[:t])`` its rate·θ:

- ``mae = mean|r − a|``, ``relative_l2 = ‖r − a‖/‖a‖``, ``cosine = ⟨r, a⟩/(‖r‖‖a‖)``.
- A local split of the SNN's own error against ``relu(z̄)``, ``z̄ = mean(z[:t])`` (errors carried in
  from earlier layers are not part of it; the three parts add up to ``r − relu(z̄)``):
  ``clipping = relu(z̄) − clip(z̄, 0, θ)``, ``quantization = clip(z̄, 0, θ) − q`` with
  ``q = θ/t·clip(floor(t·z̄/θ + v0), 0, t)`` (what an ideal t-step neuron outputs), and
  ``unevenness = r − q`` (spikes arriving unevenly in time; 0 for ``integrate_then_fire``). Each is
  reported as a mean absolute value.
- ``negative_residual``: fraction of neurons whose membrane after t steps,
  ``v0·θ + Σ z[:t] − Σ y[:t]``, is negative.

Operations (per image): the ANN does ``Σ MACs`` of its conv/dense layers. The SNN's first layer gets
analog input, constant over time, so it is counted once as MACs; every other layer is driven by
spikes and costs one accumulate (synaptic operation, SOP) per spike and target:
``SOPs = spikes of the feeding layer × MACs/inputs`` (the layer's mean fan-out; exact for dense
layers, a slight over-count at padded conv borders). Energy = MACs·E_MAC + SOPs·E_AC.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from snnjax.conversion.frontends import as_model, as_variables
from snnjax.conversion.recording import record_activations
from snnjax.conversion.simulation import SpikingNetwork, inference_kwargs
from snnjax.conversion.structure import trace_structure
from snnjax.core import parallel

__all__ = [
    "energy_report",
    "linear_layer_costs",
    "method_spikes_per_image",
    "spiking_layer_report",
]


def linear_layer_costs(
    model: nn.Module, variables: Mapping[str, Any], image_shape: Sequence[int]
) -> list[dict[str, Any]]:
    """MACs per image of every conv/dense layer and the activation layer that feeds it.

    Args:
      model: the ANN (or layer-mode SNN: same layers).
      variables: its variables.
      image_shape: ``(H, W, C)``.

    Returns:
      One dict per linear layer in call order: ``name``, ``macs``, ``inputs`` (input values per
      image) and ``fed_by`` (the activation layer's name, or ``None`` for the analog input).
    """
    ann = model.ann if isinstance(model, SpikingNetwork) else model
    variables, ann = as_variables(ann, variables), as_model(ann)
    calls = trace_structure(ann, variables, jnp.zeros((1, *image_shape)))
    layers: list[dict[str, Any]] = []
    last_activation: str | None = None
    for call in calls:
        if call.kind == "activation":
            last_activation = call.name
            continue
        if call.kind not in ("conv", "dense"):
            continue
        source = calls[call.fed_by] if call.fed_by is not None else None
        # The activation whose output this layer reads as is (e.g. a projection shortcut reads its
        # block's input); after pooling or flattening, the last activation before it.
        fed_by = source.name if source is not None and source.kind == "activation" else last_activation
        kernel_size = getattr(call.module, "kernel_size", ())
        kernel_size = tuple(kernel_size) if isinstance(kernel_size, tuple | list) else (kernel_size,)
        per_output = call.input_shape[-1] * (int(np.prod(kernel_size)) if call.kind == "conv" else 1)
        layers.append(
            {
                "name": call.name,
                "fed_by": fed_by,
                "inputs": int(np.prod(call.input_shape[1:])),
                "macs": int(np.prod(call.output_shape[1:])) * per_output,
            }
        )
    return layers


def _broadcast_mask(mask: jax.Array, shape: tuple[int, ...], batch_axis: int) -> jax.Array:
    """``mask: [B]`` as a float array of ``shape`` (B on ``batch_axis``)."""
    expand = [1] * len(shape)
    expand[batch_axis] = mask.shape[0]
    return jnp.broadcast_to(mask.astype(jnp.float32).reshape(expand), shape)


@functools.partial(jax.jit, static_argnames=("ann_model", "snn_model", "num_steps", "report_steps", "v0"))
def _batch_sums(
    ann_model, ann_variables, snn_model, snn_variables, images, mask, num_steps, report_steps, v0
):
    """Per-layer sums over the valid images of one batch (see `spiking_layer_report`)."""
    ann = record_activations(ann_model, ann_variables, images)
    inputs = jnp.broadcast_to(images, (num_steps, *images.shape))
    snn = record_activations(snn_model, snn_variables, inputs)
    thresholds = snn_model.thresholds(snn_variables, inputs, **inference_kwargs(snn_model.ann))
    sums = {}
    for name, (z, y) in snn.items():
        z, y = z.astype(jnp.float32), y.astype(jnp.float32)
        ann_out = ann[name][1].astype(jnp.float32)
        theta = jnp.broadcast_to(thresholds[name].astype(jnp.float32), ann_out.shape)
        valid = _broadcast_mask(mask, ann_out.shape, 0)
        spikes = jnp.abs(y) > 0
        layer = {
            "spikes": jnp.sum(jnp.sum(spikes, axis=0) * valid),
            "silent": jnp.sum(jnp.all(~spikes, axis=0) * valid),
            "neurons": jnp.sum(valid),
            "errors": {},
        }
        for t in report_steps:
            rate = jnp.mean(y[:t], axis=0)
            mean_input = jnp.mean(z[:t], axis=0)
            clipped = jnp.clip(mean_input, 0.0, theta)
            quantized = theta / t * jnp.clip(jnp.floor(t * mean_input / theta + v0), 0, t)
            membrane = v0 * theta + jnp.sum(z[:t], axis=0) - jnp.sum(y[:t], axis=0)
            error = rate - ann_out
            layer["errors"][str(t)] = {
                "abs_error": jnp.sum(jnp.abs(error) * valid),
                "squared_error": jnp.sum(error**2 * valid),
                "ann_squared": jnp.sum(ann_out**2 * valid),
                "snn_squared": jnp.sum(rate**2 * valid),
                "dot": jnp.sum(rate * ann_out * valid),
                "clipping": jnp.sum(jnp.abs(jnp.maximum(mean_input, 0.0) - clipped) * valid),
                "quantization": jnp.sum(jnp.abs(clipped - quantized) * valid),
                "unevenness": jnp.sum(jnp.abs(rate - quantized) * valid),
                "negative_residual": jnp.sum((membrane < 0) * valid),
            }
        sums[name] = layer
    return sums


def spiking_layer_report(
    ann_model: nn.Module,
    ann_variables: Mapping[str, Any],
    snn_model: nn.Module,
    snn_variables: Mapping[str, Any],
    batches: Iterable,
    report_steps: Sequence[int],
    v0: float,
    windowed: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Layer-wise ANN-vs-SNN error and firing statistics over a few test batches.

    Args:
      ann_model: the ANN (for a plain-ReLU ANN: its ReLU activations are compared).
      ann_variables: its variables.
      snn_model: the layer-mode SNN (threshold form: outputs are spikes·θ).
      snn_variables: its variables, with a ``threshold`` leaf per activation layer.
      batches: ``(images [B, H, W, C], labels [B], mask [B])`` tuples.
      report_steps: the t at which errors are reported; firing statistics are taken at the largest.
      v0: the SNN's initial membrane fraction (for the ideal-neuron split).
      windowed: the neuron gives its result only at the end of a window
        (``integrate_then_fire``): each t is then a separate t-step simulation.
      mesh: data mesh (default: all devices).

    Returns:
      ``{"images", "firing_steps": t, "spikes_per_image", "layers": [{"name", "neurons",
      "spikes_per_image", "spikes_per_neuron", "mean_rate" (spikes per neuron per step),
      "fraction_silent" (no spike in t steps), "errors": {"t": {"mae", "relative_l2", "cosine",
      "clipping", "quantization", "unevenness", "negative_residual"}}}, ...]}``, layers in call order.
    """
    mesh = mesh if mesh is not None else parallel.data_mesh()
    ann_variables, ann_model = as_variables(ann_model, ann_variables), as_model(ann_model)
    report_steps = tuple(sorted(set(int(t) for t in report_steps)))
    if not report_steps or report_steps[0] < 1:
        raise ValueError(f"report_steps must be positive ints, got {report_steps}.")
    call_order: list[str] = []
    ann_variables = parallel.replicate(mesh, ann_variables)
    snn_variables = parallel.replicate(mesh, snn_variables)
    simulations = [(t, (t,)) for t in report_steps] if windowed else [(report_steps[-1], report_steps)]
    totals: dict = {}
    num_images = 0
    for batch in batches:
        if not call_order:  # jit returns dicts with sorted keys; keep the layers in network order

            def names(x):
                call_order.extend(record_activations(ann_model, ann_variables, x))
                return x

            jax.eval_shape(names, batch[0])
        num_images += int(np.sum(batch[2]))
        images, _, mask = parallel.shard_batch(mesh, *batch)
        for num_steps, steps in simulations:
            sums = _batch_sums(
                ann_model, ann_variables, snn_model, snn_variables, images, mask, num_steps, steps, v0
            )
            for name, layer in jax.device_get(sums).items():
                entry = totals.setdefault(name, {"errors": {}})
                for t, values in layer.pop("errors").items():
                    errors = entry["errors"].setdefault(t, {})
                    for key, value in values.items():
                        errors[key] = errors.get(key, 0.0) + float(value)
                if num_steps == report_steps[-1]:  # firing statistics: the longest simulation
                    for key, value in layer.items():
                        entry[key] = entry.get(key, 0.0) + float(value)
    firing_steps = report_steps[-1]
    layers = []
    for name in call_order:
        entry = totals[name]
        neurons = entry["neurons"]  # neurons × images
        errors = {}
        for t, s in sorted(entry["errors"].items(), key=lambda item: int(item[0])):
            errors[t] = {
                "mae": s["abs_error"] / neurons,
                "relative_l2": float(np.sqrt(s["squared_error"] / max(s["ann_squared"], 1e-30))),
                "cosine": float(s["dot"] / max(np.sqrt(s["ann_squared"] * s["snn_squared"]), 1e-30)),
                "clipping": s["clipping"] / neurons,
                "quantization": s["quantization"] / neurons,
                "unevenness": s["unevenness"] / neurons,
                "negative_residual": s["negative_residual"] / neurons,
            }
        layers.append(
            {
                "name": name,
                "neurons": int(round(neurons / num_images)),
                "spikes_per_image": entry["spikes"] / num_images,
                "spikes_per_neuron": entry["spikes"] / neurons,
                "mean_rate": entry["spikes"] / (neurons * firing_steps),
                "fraction_silent": entry["silent"] / neurons,
                "errors": errors,
            }
        )
    return {
        "images": num_images,
        "firing_steps": firing_steps,
        "spikes_per_image": sum(layer["spikes_per_image"] for layer in layers),
        "layers": layers,
    }


@functools.partial(jax.jit, static_argnames=("snn_model", "num_steps"))
def _spike_sums(snn_model, snn_variables, images, mask, num_steps):
    steps = snn_model.simulated_steps(num_steps)
    inputs = jnp.broadcast_to(images, (steps, *images.shape))
    record = record_activations(snn_model, snn_variables, inputs)
    thresholds = snn_model.thresholds(snn_variables, inputs, **inference_kwargs(snn_model.ann))
    sums = {}
    for name, (_, y) in record.items():
        y = jnp.abs(y.astype(jnp.float32))
        theta = jnp.broadcast_to(thresholds[name].astype(jnp.float32), y.shape[1:])
        quantum = snn_model.spec.spike_quantum  # one spike's value: θ·quantum, or θ / an option (group: m)
        theta = theta / snn_model.neuron_option(quantum) if isinstance(quantum, str) else theta * quantum
        spikes = jnp.round(y / theta[None])  # a multi-spike output counts as its number of spikes
        if (
            snn_model.spec.prerun == "layer"
        ):  # the next layer pre-runs on the first ρ outputs, then replays them
            spikes = jnp.concatenate([spikes, spikes[: snn_model.neuron_option("prerun")]], axis=0)
        valid = _broadcast_mask(mask, y.shape[1:], 0)
        sums[name] = jnp.sum(jnp.sum(spikes, axis=0) * valid)
    return sums


def method_spikes_per_image(
    snn_model: SpikingNetwork,
    snn_variables: Mapping[str, Any],
    batches: Iterable,
    num_steps: int,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, float]:
    """Spikes per image of each spiking layer over every step simulated for a readout of ``num_steps``.

    Counts what a layer sends, as the operation counts of `energy_report` need: pre-run steps
    included; an output of ``k`` spikes in one step (burst, group neurons) counts ``k``; with the
    reference COS schedule a layer's first ρ outputs count twice (the next layer pre-runs on them
    and then replays them).

    Args:
      snn_model: the layer-mode SNN (any neuron).
      snn_variables: its variables (calibration corrections included).
      batches: ``(images [B, H, W, C], labels [B], mask [B])`` tuples.
      num_steps: the readout length t (`SpikingNetwork.simulated_steps` gives what is run).
      mesh: data mesh (default: all devices).

    Returns:
      ``{layer name: spikes per image}``.
    """
    mesh = mesh if mesh is not None else parallel.data_mesh()
    snn_variables = parallel.replicate(mesh, snn_variables)
    totals: dict[str, float] = {}
    num_images = 0
    for batch in batches:
        num_images += int(np.sum(batch[2]))
        images, _, mask = parallel.shard_batch(mesh, *batch)
        for name, value in jax.device_get(
            _spike_sums(snn_model, snn_variables, images, mask, num_steps)
        ).items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return {name: value / max(num_images, 1) for name, value in totals.items()}


def energy_report(
    layer_costs: Sequence[Mapping[str, Any]],
    spikes_per_image: Mapping[str, float],
    pj_per_mac: float = 4.6,
    pj_per_ac: float = 0.9,
) -> dict[str, Any]:
    """ANN MACs vs SNN MACs + SOPs per image, and the energy estimate (see the module docstring).

    Args:
      layer_costs: from `linear_layer_costs`.
      spikes_per_image: spikes per image of each activation layer over the simulated steps.
      pj_per_mac: energy of one multiply-accumulate in picojoules (default: 45 nm, 4.6 pJ).
      pj_per_ac: energy of one accumulate (0.9 pJ).

    Returns:
      ``{"layers": [{"name", "macs", "snn_macs", "sops"}], "ann_macs", "snn_macs", "snn_sops",
      "ann_energy_uj", "snn_energy_uj", "pj_per_mac", "pj_per_ac"}`` (energies in microjoules per image).
    """
    rows = []
    for layer in layer_costs:
        fed_by = layer["fed_by"]
        if fed_by is None:
            snn_macs, sops = layer["macs"], 0.0
        else:
            snn_macs, sops = 0, spikes_per_image[fed_by] * layer["macs"] / layer["inputs"]
        rows.append({"name": layer["name"], "macs": layer["macs"], "snn_macs": snn_macs, "sops": sops})
    ann_macs = sum(r["macs"] for r in rows)
    snn_macs = sum(r["snn_macs"] for r in rows)
    sops = sum(r["sops"] for r in rows)
    return {
        "layers": rows,
        "ann_macs": ann_macs,
        "snn_macs": snn_macs,
        "snn_sops": sops,
        "pj_per_mac": pj_per_mac,
        "pj_per_ac": pj_per_ac,
        "ann_energy_uj": ann_macs * pj_per_mac * 1e-6,
        "snn_energy_uj": (snn_macs * pj_per_mac + sops * pj_per_ac) * 1e-6,
    }
