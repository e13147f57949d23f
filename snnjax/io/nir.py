"""Export converted SNNs to NIR (the Neuromorphic Intermediate Representation) and read them back.

Graph: Input → Conv2d (BatchNorm folded into its bias) → IF → … → AvgPool2d → Flatten → Affine → IF
→ … → Affine → Output, read from the model's structure graph (`snnjax.conversion.structure.trace_structure`)
for snnjax's models and a user's alike: a residual add is several edges into the node after it (NIR
sums the inputs of a node), a global mean an AvgPool2d over the whole map and a Flatten. Shapes follow NIR's
channels-first convention (``C, H, W``; conv weights ``O, I, kh, kw``; affine weights ``out, in``,
flatten in C-H-W order).

NIR's IF neuron differs from ours: it fires when ``v > θ`` and resets *to* ``v_reset``, while snnjax
fires when ``v ≥ θ``, resets by subtracting θ, starts at ``v0·θ``, feeds the analog input at every
step and reads out the mean of the last layer over t. An exported graph therefore does not run the
same network on a NIR backend, so `export_nir` refuses unless called with ``lossy=True``; it then
records our semantics in ``graph.metadata["snnjax"]`` (with the architecture, so `import_nir`
rebuilds the identical snnjax SNN).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax import conversion
from snnjax.conversion.frontends import FunctionModel, NNXModel, as_model, flat_parameters, model_name
from snnjax.conversion.simulation import linear_apply
from snnjax.conversion.structure import INPUT, POOLS, trace_structure
from snnjax.core.activations import qcfs
from snnjax.nn import models
from snnjax.nn.layers import Conv, ThresholdActivation

if TYPE_CHECKING:  # nir is an optional dependency, imported where it is used
    import nir

__all__ = ["NIRChain", "import_nir", "target_difference", "export_nir"]

# The node types export_nir writes, and so the only ones import_nir runs.
RUNNABLE = ("Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output")
# metadata["snnjax"] fields import_nir needs, per architecture class.
REQUIRED = {
    "chain": ("ops",),
    "ConvNet": ("layers", "hidden"),
    "ResNet": ("stage_sizes", "widths"),
}
COMMON_REQUIRED = ("class", "v0", "per_channel", "num_classes", "image_shape")

SEMANTICS = {
    "threshold_comparison": ">=",
    "reset": "subtract",
    "input_encoding": "analog input at every step",
    "readout": "mean of the last layer's output over t",
}
# What a reader runs for a graph written with target="sinabs" (sinabs 3.1.3's NIR import, the
# Speck/Xylo toolchain): snnjax's neuron "multi_spike_if" with v0 = 0 (snnjax.core.neurons).
SINABS_SEMANTICS = {
    "target": "sinabs",
    "threshold_comparison": "n = trunc(v/θ) spikes when v > 0 (inclusive: n ≥ 1 iff v/θ ≥ 1)",
    "reset": "subtract n·θ",
    "membrane_floor": "-θ (v = relu(v + θ) − θ after the reset)",
    "initial_membrane": "0",
    "spike_value": "1 (a count; each layer reading an IF node has θ folded into its weights)",
    "pooling": "SumPool2d (average pooling's 1/k² folded into the weights after it)",
    "input_encoding": "analog input at every step",
    "readout": "mean of the last layer's output over t",
    "snnjax_neuron": "multi_spike_if, v0 = 0",
}
TARGETS = ("snnjax", "sinabs")


def _import_nir():
    try:
        import nir
    except ImportError as error:
        raise ImportError("NIR export needs the `nir` package: pip install 'snnjax[nir]'.") from error
    return nir


def _describe(model) -> dict[str, Any]:
    if isinstance(model, models.ConvNet):
        return {
            "class": "ConvNet",
            "layers": [str(layer) for layer in model.layers],
            "hidden": list(model.hidden),
        }
    if isinstance(model, models.ResNet):
        return {"class": "ResNet", "stage_sizes": list(model.stage_sizes), "widths": list(model.widths)}
    return None  # any other model: rebuilt by import_nir as a NIRChain from the ops recorded


def export_nir(
    snn_model: nn.Module,
    snn_variables: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    *,
    v0: float,
    fold_thresholds: bool = False,
    lossy: bool = False,
    target: str = "snnjax",
) -> nir.NIRGraph:
    """Writes a converted SNN as a ``nir.NIRGraph``.

    Two targets: ``"snnjax"`` writes the network as snnjax runs it (``AvgPool2d``, IF nodes with θ,
    our semantics in the metadata), which `import_nir` reads back exactly but no NIR reader runs
    the same; ``"sinabs"`` writes what sinabs (and readers with its semantics) run exactly as snnjax
    runs the SNN with ``neuron="multi_spike_if"`` and ``v0=0`` (see `SINABS_SEMANTICS`):
    ``SumPool2d`` with average pooling's 1/k² folded into the next layer's weights, θ of each IF node
    folded into the weights of the layers that read its spikes (a 1×1 ``Conv2d`` scaling node where an
    IF node feeds another directly, e.g. an identity shortcut).

    Args:
      snn_model: a layer-mode SNN from `snnjax.spiking_model` (or its ANN: only the
        architecture is read) with ``avg`` pooling: a Linen model (snnjax activation layers or ReLU
        function calls) or an NNX model.
      snn_variables: SNN variables from `snnjax.convert_variables` (BatchNorm is folded here
        if it is not yet).
      image_shape: ``(H, W, C)`` of the input.
      v0: the SNN's initial membrane fraction (recorded in the metadata).
      fold_thresholds: rescale weights so every θ is 1 (`snnjax.conversion.transforms.balance_weights`;
        plain chains only) instead of keeping θ per layer.
      lossy: export although the target's semantics differ from the SNN's (always for
        ``"snnjax"``; for ``"sinabs"`` unless the SNN runs ``neuron="multi_spike_if"`` with ``v0=0``).
      target: ``"snnjax"`` or ``"sinabs"`` (recorded in ``metadata["snnjax"]["target"]``).

    Returns:
      The graph, type-checked by NIR.

    Raises:
      ValueError: unless ``lossy``; for an unsupported model or pooling.
    """
    ann = as_model(snn_model.ann if isinstance(snn_model, conversion.SpikingNetwork) else snn_model)
    if isinstance(ann, FunctionModel):
        raise ValueError(
            f"NIR export reads a model's Conv/Dense layers; {ann.name} is a plain function, whose "
            "arithmetic has no layers to export. Write it as a Linen or NNX model to export it."
        )
    if fold_thresholds and isinstance(ann, NNXModel):
        raise ValueError(
            "fold_thresholds rescales a Linen variable tree (balance_weights); export the NNX model "
            "with its thresholds (fold_thresholds=False)."
        )
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is unknown; allowed: {', '.join(TARGETS)}.")
    if target == "sinabs":
        runs = (getattr(snn_model, "neuron", None), float(v0))
        if runs != ("multi_spike_if", 0.0) and not lossy:
            raise ValueError(
                f"sinabs runs an IF with multi-spike output from v(0) = 0 (snnjax's neuron "
                f"'multi_spike_if', v0=0); this SNN runs neuron {runs[0]!r} with v0={v0}, so sinabs "
                "would compute other numbers. Build the SNN with spiking_model(ann, "
                "neuron='multi_spike_if', v0=0.0) (a QCFS ANN with shift φ = 0 converts to it), or "
                "pass lossy=True to export anyway; snnjax.io.target_difference measures what that "
                "costs on your images."
            )
    elif not lossy:
        raise ValueError(
            "NIR's IF neuron fires on v > θ and resets to v_reset, while this SNN fires on v ≥ θ, resets by "
            f"subtraction and starts at v0·θ = {v0}·θ; a NIR backend would run a different network. Pass "
            "lossy=True to export anyway (our semantics are then recorded in graph.metadata['snnjax']), "
            "or target='sinabs' for a graph sinabs runs exactly as snnjax's 'multi_spike_if' neuron."
        )
    nir = _import_nir()
    description = _describe(ann)
    if description is not None and getattr(ann, "pooling", "avg") != "avg":
        raise ValueError("NIR export supports average pooling only (replace max-pooling first).")
    nodes, edges, ops, params, exported = _export_graph(
        nir, ann, snn_variables, image_shape, fold_thresholds, snnjax_names=description is not None
    )
    num_classes = int(nodes["output"].output_type["output"][-1])
    if target == "sinabs":
        nodes, edges = _for_sinabs(nir, nodes, edges)
        description = {**(description or {"class": "chain"}), **SINABS_SEMANTICS}
        return _graph(nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, num_classes)
    if description is None:  # any other model: its ops (and fan-in) let import_nir rebuild it
        description = {"class": "chain", "ops": json.dumps([op for op, _ in ops])}
        if any(sources is not None for _, sources in ops):
            description["sources"] = json.dumps([sources for _, sources in ops])
    graph = _graph(nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, num_classes)
    if description["class"] == "chain":
        _check_chain(ann, exported, graph, image_shape)
    return graph


def target_difference(
    snn_model: conversion.SpikingNetwork,
    snn_variables: Mapping[str, Any],
    images: jax.Array,
    num_steps: int,
    *,
    labels: jax.Array | None = None,
    target: str = "sinabs",
) -> dict[str, Any]:
    """What exporting for ``target`` costs, measured on the user's images: the SNN against its semantics.

    For ``target="sinabs"`` the target runs the same network with snnjax's ``multi_spike_if`` neuron
    from ``v0=0`` (what sinabs runs for the graph ``export_nir(target="sinabs")`` writes, up to float
    rounding at thresholds: see ``benchmarks/results/README.md``).

    Args:
      snn_model: the SNN as the user runs it (any neuron and v0, layer mode).
      snn_variables: its variables.
      images: ``[B, ...]`` static images (e.g. a batch of test images).
      num_steps: T.
      labels: ``[B]`` class labels, to also report both accuracies at every t.
      target: ``"sinabs"``.

    Returns:
      ``{"target", "max_abs_difference"`` (largest per-step output difference), ``"agreement"`` (per t,
      the fraction of images whose prediction from the mean output over steps 1..t is the same),
      and with labels ``"accuracy": {"snn": [...], "target": [...]}``; lists indexed by t − 1.
    """
    if target != "sinabs":
        raise ValueError(f"target={target!r}: target_difference knows 'sinabs' only.")
    target_model = snn_model.clone(neuron="multi_spike_if", v0=0.0, neuron_options=(), surrogate=None)
    own = np.asarray(conversion.spiking_apply(snn_model, snn_variables, images, num_steps))
    theirs = np.asarray(conversion.spiking_apply(target_model, snn_variables, images, num_steps))
    steps = np.arange(1, num_steps + 1).reshape(-1, *(1,) * (own.ndim - 1))
    own_pred = np.argmax(np.cumsum(own, axis=0) / steps, axis=-1)
    their_pred = np.argmax(np.cumsum(theirs, axis=0) / steps, axis=-1)
    result = {
        "target": target,
        "max_abs_difference": float(np.max(np.abs(own - theirs))),
        "agreement": np.mean(own_pred == their_pred, axis=1).tolist(),
    }
    if labels is not None:
        labels = np.asarray(labels)[None]
        result["accuracy"] = {
            "snn": np.mean(own_pred == labels, axis=1).tolist(),
            "target": np.mean(their_pred == labels, axis=1).tolist(),
        }
    return result


def _for_sinabs(nir, nodes: dict[str, Any], edges: list[tuple[str, str]]):
    """The graph rewritten for sinabs's semantics (spike counts, ``SumPool2d``); see `export_nir`.

    Each node's output is tracked as ``gain · written value = snnjax's value``, an array of the
    output's NIR shape (``C, H, W`` or ``F``): 1 for synaptic layers, θ for IF nodes (spikes are
    counts), the input's gain / k² for a ``SumPool2d``, flattened for a ``Flatten``. A layer reading a
    node folds that node's gain into its weights (per input channel: a gain must be constant over
    a channel's positions, which it is for θ per layer or per channel).

    An IF node that sums spikes of gain g (an identity shortcut) with the outputs of layers only it
    reads runs in units of g: those layers' weights and biases are divided by g and its threshold
    becomes θ/g, so its input needs no node in between. That is the same neuron up to float rounding
    (``trunc(v/θ)`` is computed as ``trunc((v/g)/(θ/g))``; bit for bit when g is a power of two), and
    it is what sinabs 3.1.3 can run: its graph executor (nirtorch 2.0.2, the newest that allows
    ``nir<=1.0.4``) orders nodes by a depth-first walk from the input, so an add whose two branches
    both hold nodes would read one of them from the previous step. Elsewhere (an IF or the output
    reading inputs of different gains) a 1×1 ``Conv2d`` (or diagonal ``Affine``) scaling node is
    written between.
    """
    sources = {name: [a for a, b in edges if b == name] for name in nodes}
    gains: dict[str, np.ndarray] = {}
    new_nodes: dict[str, Any] = {}
    new_edges: list[tuple[str, str]] = []

    def per_channel(name) -> np.ndarray:
        gain = gains[name]
        if gain.ndim == 3:
            if not np.all(gain == gain[:, :1, :1]):
                raise ValueError(f"NIR export for sinabs: {name!r} has a gain that varies within a channel.")
            return gain[:, 0, 0]
        return gain

    def unit_input(name, target) -> str:
        """``name``, or a scaling node between it and ``target`` that makes its gain 1."""
        gain = gains[name]
        if np.all(gain == 1):
            return name
        scale = per_channel(name).astype(np.float32)
        scaler = f"{name}.scale.{target}"
        if gain.ndim == 3:
            weight = (np.eye(len(scale), dtype=np.float32) * scale)[:, :, None, None]
            new_nodes[scaler] = nir.Conv2d(
                gain.shape[1:], weight, 1, 0, dilation=1, groups=1, bias=np.zeros(len(scale), np.float32)
            )
        else:
            new_nodes[scaler] = nir.Affine(weight=np.diag(scale), bias=np.zeros(len(scale), np.float32))
        new_edges.append((name, scaler))
        gains[scaler] = np.ones_like(gain)
        return scaler

    def common_gain(reads) -> np.ndarray | None:
        """The one non-unit per-channel gain among an IF's inputs ``reads``, or None.

        None also where another input is not a Conv2d/Affine read by this IF only (it could not
        take that gain too).
        """
        scaled = {tuple(per_channel(r)) for r in reads if not np.all(gains[r] == 1)}
        movable = all(
            type(new_nodes[r]).__name__ in ("Conv2d", "Affine") and sum(a == r for a, _ in edges) == 1
            for r in reads
            if np.all(gains[r] == 1)
        )
        return np.asarray(scaled.pop(), np.float32) if len(scaled) == 1 and movable else None

    def rescale(name, gain) -> None:
        """Divides a Conv2d/Affine node's outputs by ``gain`` (per output channel)."""
        node = new_nodes[name]
        weight = np.asarray(node.weight, np.float32)
        weight = weight / gain.reshape(-1, *(1,) * (weight.ndim - 1))
        new_nodes[name] = dataclasses.replace(
            node, weight=weight, bias=np.asarray(node.bias, np.float32) / gain
        )
        gains[name] = np.broadcast_to(gain.reshape(-1, *(1,) * (gains[name].ndim - 1)), gains[name].shape)

    for name, node in nodes.items():
        kind = type(node).__name__
        reads = sources[name]
        if kind == "Input":
            gains[name] = np.ones(np.ravel(node.input_type["input"]).astype(int), np.float32)
        elif kind in ("Conv2d", "Affine"):
            (source,) = reads
            gain = per_channel(source).astype(np.float32)
            weight = np.asarray(node.weight, np.float32)
            if kind == "Conv2d":
                node = dataclasses.replace(node, weight=weight * gain[None, :, None, None])
                gains[name] = np.ones(node.output_type["output"], np.float32)
            else:
                node = dataclasses.replace(node, weight=weight * gain[None, :])
                gains[name] = np.ones(weight.shape[0], np.float32)
        elif kind == "AvgPool2d":
            (source,) = reads
            window, stride = np.asarray(node.kernel_size), np.asarray(node.stride)
            gain = per_channel(source)
            out = [len(gain), *((np.asarray(gains[source].shape[1:]) - window) // stride + 1)]
            gains[name] = np.broadcast_to(gain[:, None, None] / np.prod(window), out).astype(np.float32)
            node = nir.SumPool2d(kernel_size=window, stride=stride, padding=np.array([0, 0]))
        elif kind == "Flatten":
            (source,) = reads
            gains[name] = np.broadcast_to(per_channel(source)[:, None, None], gains[source].shape).reshape(-1)
        elif kind == "IF":
            theta = np.asarray(node.v_threshold, np.float32)
            shared = common_gain(reads)
            if shared is not None:  # e.g. an identity shortcut: the neuron works in units of its gain
                for source in reads:
                    if np.all(gains[source] == 1):
                        rescale(source, shared)
                node = dataclasses.replace(
                    node, v_threshold=theta / shared.reshape(-1, *(1,) * (theta.ndim - 1))
                )
            else:
                reads = [unit_input(source, name) for source in reads]
            gains[name] = theta
        elif kind == "Output":
            reads = [unit_input(source, name) for source in reads]
        new_nodes[name] = node
        new_edges.extend((source, name) for source in reads)
    return new_nodes, new_edges


def _graph(nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, num_classes):
    """The type-checked graph with its semantics and the architecture in ``metadata["snnjax"]``."""
    semantics = {} if description.get("target") == "sinabs" else {**SEMANTICS, "target": "snnjax"}
    metadata = {
        "snnjax": {
            **semantics,
            "v0": float(v0),
            "thresholds_folded": bool(fold_thresholds),
            "per_channel": _per_channel(params),
            "num_classes": num_classes,
            "image_shape": list(image_shape),
            **description,
        }
    }
    # Arrays taken from jax.Arrays are read-only; readers hand them to torch.tensor, which warns on
    # read-only memory (snnTorch does): every node gets writable copies.
    for node in nodes.values():
        for field, value in vars(node).items():
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                setattr(node, field, value.copy())
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    graph.infer_types()
    return graph


def _if_node(nir, theta: np.ndarray, neuron_shape) -> Any:
    """A NIR IF node with threshold θ (scalar, or one per channel: NIR puts channels first)."""
    neuron_shape = tuple(neuron_shape)
    if theta.ndim:
        theta = theta.reshape(-1, *(1,) * (len(neuron_shape) - 1))
    theta = np.broadcast_to(theta, neuron_shape)
    return nir.IF(r=np.ones(neuron_shape, np.float32), v_threshold=np.array(theta, np.float32))


def _per_channel(params) -> bool:
    return any(k[-1] == "threshold" and np.ndim(v) == 1 for k, v in params.items())


def _text(value) -> str:
    """NIR files (HDF5) hand strings back as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def import_nir(graph: nir.NIRGraph | str | os.PathLike) -> tuple[nn.Module, dict[str, Any], float]:
    """Rebuilds the snnjax SNN of a graph written by `export_nir`, after checking the graph.

    The network is rebuilt from ``metadata["snnjax"]`` and the nodes' weights, so the graph must be
    exactly the one `export_nir` writes for that network: only node types snnjax runs, the same
    nodes and edges (none added, removed or redirected), the same shapes, IF nodes with ``r = 1``,
    ``v_reset = 0`` and one θ per layer (or per channel), finite values. Anything else is refused
    rather than silently run as another network.

    Args:
      graph: a ``nir.NIRGraph`` (e.g. from ``nir.read(path)``) with ``metadata["snnjax"]``, or the
        path of a NIR file (read without NIR's type inference, so errors name the nodes as written).

    Returns:
      ``(snn_model, snn_variables, v0)``: a layer-mode SNN with folded BatchNorm and its variables;
      run it with `snnjax.spiking_apply`.

    Raises:
      FileNotFoundError: if ``graph`` is a path that does not exist.
      ValueError: for a file that is not NIR, a graph not written by snnjax, or one changed since
        (naming the node or edge, and the file).
    """
    where = ""
    if isinstance(graph, str | os.PathLike):
        where = f"{os.fspath(graph)}: "
        graph = _read(os.fspath(graph))
    meta = dict(graph.metadata or {}).get("snnjax")
    if not meta:
        raise ValueError(
            f"{where}This NIR graph was not written by snnjax.export_nir (no metadata['snnjax'])."
        )
    meta = {key: _text(value) if isinstance(value, bytes | str) else value for key, value in meta.items()}
    if meta.get("target", "snnjax") != "snnjax":
        raise ValueError(
            f"{where}This graph was written for {meta['target']} (export_nir(target={meta['target']!r}): "
            "spike counts, θ folded into the weights); run it with that reader (e.g. sinabs.from_nir). "
            "import_nir reads graphs written with target='snnjax'."
        )
    _check_graph(graph, meta, where)
    if meta["class"] == "chain":
        ann, variables = _chain_from_graph(graph, meta)
        snn = conversion.spiking_model(ann, v0=float(meta["v0"]), per_channel=bool(meta["per_channel"]))
        return snn, variables, float(meta["v0"])
    ann = _ann_from_meta(meta)
    per_channel = bool(meta["per_channel"])
    snn = conversion.spiking_model(ann, v0=float(meta["v0"]), fold_bn=True, per_channel=per_channel)
    nodes = graph.nodes
    params: dict[tuple[str, ...], np.ndarray] = {}
    for name, node in nodes.items():
        path = tuple(name.split("."))
        kind = type(node).__name__
        if kind == "Conv2d":
            params[(*path, "conv", "kernel")] = np.asarray(node.weight).transpose(2, 3, 1, 0)
            params[(*path, "bn", "bias")] = np.asarray(node.bias)
            if meta["class"] == "ConvNet":
                params[(*path, "conv", "bias")] = np.zeros_like(np.asarray(node.bias))
        elif kind == "IF":
            theta = np.asarray(node.v_threshold)
            params[(*path, "threshold")] = (
                theta.reshape(theta.shape[0], -1)[:, 0] if per_channel else theta.reshape(-1)[0]
            )
        elif kind == "Affine":
            kernel = np.asarray(node.weight).T
            params[(*path, "kernel")], params[(*path, "bias")] = kernel, np.asarray(node.bias)
    if meta["class"] == "ConvNet":
        # Undo the C-H-W flatten order of the first dense layer (or of the head without hidden layers).
        first = "fc0" if len(meta["hidden"]) else "head"
        c, h, w = (int(d) for d in nodes["flatten"].input_type["input"])
        kernel = params[(first, "kernel")]
        params[(first, "kernel")] = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    variables = {
        "params": traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in params.items()})
    }
    return snn, variables, float(meta["v0"])


def _read(path: str) -> nir.NIRGraph:
    """``nir.read`` without type inference (which would add nodes to a broken graph); errors name the file."""
    nir = _import_nir()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (export_nir's graph is written with nir.write).")
    try:
        if "type_check" in inspect.signature(nir.read).parameters:  # nir >= 1.0.5 infers types on read
            return nir.read(path, type_check=False)
        return nir.read(path)
    except Exception as error:  # h5py and NIR raise many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable NIR file ({type(error).__name__}: {error}).") from None


def _ann_from_meta(meta) -> nn.Module:
    """The ANN whose structure ``metadata["snnjax"]`` records (QCFS activations stand for the IF nodes)."""
    if meta["class"] == "chain":
        return NIRChain(ops=_chain_ops(meta), sources=_chain_sources(meta))
    activation = functools.partial(ThresholdActivation, fn=functools.partial(qcfs, levels=1))
    if meta["class"] == "ConvNet":
        layers = [
            models.POOL if _text(layer) == models.POOL else int(_text(layer)) for layer in meta["layers"]
        ]
        return models.ConvNet(layers=tuple(layers), hidden=tuple(int(h) for h in meta["hidden"]),
                              num_classes=int(meta["num_classes"]), activation=activation)  # fmt: skip
    return models.ResNet(stage_sizes=tuple(int(s) for s in meta["stage_sizes"]),
                         widths=tuple(int(w) for w in meta["widths"]),
                         num_classes=int(meta["num_classes"]), activation=activation)  # fmt: skip


def _refusal(where: str, problem: str) -> ValueError:
    return ValueError(
        f"{where}{problem}. import_nir rebuilds only the graph snnjax.io.export_nir writes for the network "
        "recorded in metadata['snnjax']; re-export the network with export_nir instead of editing the graph."
    )


def _expected_graph(meta, where: str) -> nir.NIRGraph:
    """The graph `export_nir` writes for the network in ``meta``, with zero weights (the structure)."""
    if meta.get("class") not in REQUIRED:
        raise _refusal(
            where, f"metadata['snnjax']['class'] is {meta.get('class')!r}, not one of {list(REQUIRED)}"
        )
    missing = [key for key in (*COMMON_REQUIRED, *REQUIRED[meta["class"]]) if key not in meta]
    if missing:
        raise _refusal(where, f"metadata['snnjax'] lacks {missing}")
    try:
        ann = _ann_from_meta(meta)
        image_shape = tuple(int(d) for d in np.ravel(meta["image_shape"]))
        shapes = jax.eval_shape(ann.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
        zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        return export_nir(ann, zeros, image_shape, v0=float(meta["v0"]), lossy=True)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise _refusal(
            where,
            f"metadata['snnjax'] does not describe a network snnjax can build "
            f"({type(error).__name__}: {error})",
        ) from None


def _layout(node) -> dict[str, tuple]:
    """What `export_nir` fixes in a node besides the weights' values.

    That is every float array's shape, every other field's value (strides, padding, ...), and the
    input/output types where the node records them.
    """
    layout, types = {}, {}  # types last: a wrong weight shape is named before the shapes it implies
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if field.name == "metadata" or value is None:
            continue
        if isinstance(value, dict):  # input_type / output_type: None where a read graph has not inferred it
            for key, shape in value.items():
                if shape is not None:
                    types[f"{field.name}[{key!r}]"] = tuple(np.ravel(shape).tolist())
        elif np.issubdtype(np.asarray(value).dtype, np.floating):
            layout[f"{field.name} shape"] = np.shape(value)
        else:
            layout[field.name] = tuple(np.ravel(value).tolist())
    return {**layout, **types}


def _check_graph(graph, meta, where: str) -> None:
    """Refuses a graph that is not exactly what `export_nir` writes for the network in ``meta``.

    import_nir reads weights by node name and ignores edges, so a node added, removed, retyped or
    rewired, or a changed shape, would otherwise load as another network (or fail later, far away).
    """
    for name, node in graph.nodes.items():
        if type(node).__name__ not in RUNNABLE:
            raise _refusal(
                where,
                f"node {name!r} is a nir.{type(node).__name__}, which snnjax cannot run; it runs only "
                f"{', '.join(RUNNABLE)} (IF with the semantics in metadata['snnjax'])",
            )
    expected = _expected_graph(meta, where)
    for name, node in graph.nodes.items():
        if name not in expected.nodes:
            around = [f"{a!r} → {b!r}" for a, b in graph.edges if name in (a, b)]
            raise _refusal(
                where,
                f"node {name!r} ({type(node).__name__}; edges {', '.join(around) or 'none'}) is not part of "
                "the network",
            )
    for name, node in expected.nodes.items():
        if name not in graph.nodes:
            raise _refusal(where, f"the graph lacks node {name!r} ({type(node).__name__}) of the network")
        if type(graph.nodes[name]) is not type(node):
            raise _refusal(
                where,
                f"node {name!r} is a nir.{type(graph.nodes[name]).__name__} where the network has a "
                f"nir.{type(node).__name__}",
            )
    # A multiset: a repeated edge would feed its source twice (NIR sums a node's inputs).
    have = collections.Counter(tuple(_text(end) for end in edge) for edge in graph.edges)
    want = collections.Counter(tuple(edge) for edge in expected.edges)
    for (a, b), count in (have - want).items():
        sources = sorted(s for s, d in expected.edges if d == b)
        raise _refusal(
            where,
            f"the edge {a!r} → {b!r}{f' (×{count})' if count > 1 else ''} is not in the network, where "
            f"{b!r} reads only {sources}",
        )
    for a, b in (want - have).elements():
        raise _refusal(where, f"the graph lacks the network's edge {a!r} → {b!r}")
    per_channel = bool(meta["per_channel"])
    for name, node in expected.nodes.items():
        got, kind = graph.nodes[name], type(node).__name__
        want_layout = _layout(node)
        for key, value in _layout(got).items():
            if key in want_layout and value != want_layout[key]:
                raise _refusal(
                    where,
                    f"node {name!r} ({kind}): its {key} is {value} where the network has {want_layout[key]}",
                )
        for field in dataclasses.fields(got):
            value = getattr(got, field.name)
            if (
                isinstance(value, np.ndarray)
                and np.issubdtype(value.dtype, np.floating)
                and not np.all(np.isfinite(value))
            ):
                raise _refusal(
                    where, f"node {name!r} ({kind}): its {field.name} holds NaN or infinite values"
                )
        if kind == "IF":
            _check_if(got, name, per_channel, where)


def _check_if(node, name: str, per_channel: bool, where: str) -> None:
    """Refuses IF parameters snnjax does not run.

    snnjax's IF integrates its input unscaled (r = 1), subtracts θ on a spike (export_nir writes
    v_reset = 0) and keeps one θ per layer or per channel (NIR puts channels first).
    """
    if not np.all(np.asarray(node.r) == 1):
        raise _refusal(
            where, f"node {name!r} (IF): r is not 1 everywhere; snnjax's IF integrates its input unscaled"
        )
    v_reset = getattr(node, "v_reset", None)  # a field of NIR's IF since nir 1.0.5
    if v_reset is not None and not np.all(np.asarray(v_reset) == 0):
        raise _refusal(
            where,
            f"node {name!r} (IF): v_reset is not 0; snnjax resets by subtracting θ "
            "(metadata['snnjax']['reset'])",
        )
    theta = np.asarray(node.v_threshold)
    groups = theta.reshape(theta.shape[0], -1) if per_channel else theta.reshape(1, -1)
    if not np.all(groups == groups[:, :1]):
        raise _refusal(
            where,
            f"node {name!r} (IF): v_threshold varies within a {'channel' if per_channel else 'layer'}; "
            f"snnjax runs one θ per {'channel' if per_channel else 'layer (metadata per_channel is false)'}",
        )


# Any other model (a user's own), rebuilt from its ops.


class NIRChain(nn.Module):
    """A network of layers read back from a NIR graph; layers are named after the graph's nodes.

    Attributes:
      ops: ``("conv", name, features, kernel_size, stride, padding)``, ``("dense", name, features)``,
        ``("if", name)``, ``("avgpool", name, window, stride)`` or ``("flatten", name)``, in order.
      sources: per op, the names of the ops (or ``"input"``) whose outputs it sums as its input, or
        None where it reads the op before it; empty for a plain chain.
    """

    ops: tuple
    sources: tuple = ()

    @nn.compact
    def __call__(self, x):
        """Maps ``[B, H, W, C]`` (or ``[B, F]``) through the network."""
        values, last = {"input": x}, "input"
        for index, op in enumerate(self.ops):
            kind, name = op[0], op[1]
            reads = self.sources[index] if self.sources and self.sources[index] is not None else (last,)
            x = functools.reduce(jnp.add, [values[source] for source in reads])  # NIR sums a node's inputs
            if kind == "conv":
                _, _, features, kernel_size, stride, pad = op
                x = Conv(features, kernel_size, (stride, stride), ((pad, pad), (pad, pad)), name=name)(x)
            elif kind == "dense":
                x = nn.Dense(op[2], name=name)(x)
            elif kind == "if":
                x = ThresholdActivation(fn=functools.partial(qcfs, levels=1), name=name)(x)
            elif kind == "avgpool":
                x = nn.avg_pool(x, op[2], op[3])
            else:
                x = x.reshape((x.shape[0], -1))
            values[name], last = x, name
        return x


def _symmetric_padding(module, path: str) -> int:
    """NIR's Conv2d pads symmetrically: the padding of a module, or an error naming it."""
    padding, kernel = module.padding, module.kernel_size
    kernel = tuple(kernel) if isinstance(kernel, tuple | list) else (kernel, kernel)
    strides = getattr(module, "strides", 1) or 1
    strides = tuple(strides) if isinstance(strides, tuple | list) else (strides, strides)
    if padding == "VALID":
        return 0
    if padding == "SAME" and set(strides) == {1} and all(k % 2 for k in kernel) and len(set(kernel)) == 1:
        return kernel[0] // 2
    if isinstance(padding, int):
        return padding
    if not isinstance(padding, str):
        pads = {p for pair in padding for p in (pair if isinstance(pair, tuple | list) else (pair, pair))}
        if len(pads) == 1:
            return int(pads.pop())
    raise ValueError(
        f"{path}: padding {padding!r} (strides {strides}) is not one symmetric amount; NIR's Conv2d "
        "cannot express it."
    )


def _export_graph(nir, ann, snn_variables, image_shape, fold_thresholds, *, snnjax_names):
    """``(nodes, edges, ops, params, variables)`` of any model, from its structure graph.

    Each Conv/Dense (its folded BatchNorms' biases added) becomes a ``Conv2d``/``Affine`` node, each
    activation an ``IF``, average pooling an ``AvgPool2d``, a flatten a ``Flatten`` and a global mean an
    ``AvgPool2d`` over the whole map and a ``Flatten``; a residual add becomes several edges into its
    node (NIR sums a node's inputs). ``ops`` lists, in order, each node as a `NIRChain` op with
    its sources (None: the op before it). ``variables`` are the exported ones (BatchNorm folded,
    thresholds balanced if asked). With ``snnjax_names``, a Conv and its BatchNorm in one block are
    named by the block (``"conv_bn0"``, ``"stage0_block0.shortcut"``), as snnjax's models are read.

    Raises:
      ValueError: naming the layer, for anything NIR cannot express (an operation between layers that
        is not an add, a flatten or a global mean; max or padded pooling; uneven strides or padding).
    """
    example = jnp.zeros((1, *image_shape))
    nnx_model = isinstance(ann, NNXModel)
    calls = trace_structure(ann, snn_variables, example)
    # An NNX BatchNorm keeps its variables when folded, and folding it again changes nothing (exact).
    if snn_variables.get("batch_stats") or (nnx_model and any(c.kind == "batchnorm" for c in calls)):
        snn_variables = conversion.fold_batchnorm(snn_variables, model=ann, inputs=example)
    if fold_thresholds:
        snn_variables = conversion.balance_weights(snn_variables, model=ann, inputs=example)
    params = {k: np.asarray(v, np.float32) for k, v in flat_parameters(snn_variables).items()}
    # θ of every activation site, wherever it is stored (a layer's variable, "sites", an NNX layer).
    thresholds = conversion.spiking_model(ann).thresholds(snn_variables, example[None])
    params.update({(*c.path, "threshold"): np.asarray(thresholds[c.name], np.float32)
                   for c in calls if c.kind == "activation"})  # fmt: skip
    bias_of = {}  # index of a Conv/Dense → its bias with its folded BatchNorms' biases added
    for index, call in enumerate(calls):
        if call.kind in ("conv", "dense"):
            features = params[(*call.path, "kernel")].shape[-1]
            bias_of[index] = params.get((*call.path, "bias"), np.zeros(features, np.float32))
        elif call.kind == "batchnorm":  # folded: it adds its bias to the layer that feeds it
            bias_of[call.fed_by] = bias_of[call.fed_by] + params[(*call.path, "bias")]
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(_nir_shape(image_shape))})}
    edges: list[tuple[str, str]] = []
    ops: list[tuple[tuple, list[str] | None]] = []
    node_of: dict[int | None, str] = {INPUT: "input"}  # call index → the NIR node that gives its output
    last = "input"
    convs = 0

    counts = collections.Counter(c.path for c in calls if c.kind not in POOLS)
    repeated = sorted({c.name for c in calls if counts[c.path] > 1})
    if repeated:
        raise ValueError(
            f"{repeated[0]!r} is called more than once: NIR export writes one node per layer (its weights "
            "and its neurons), so a module used twice cannot be written. Give each call its own module."
        )

    def add(name, node, op, sources):
        nonlocal last
        if name in nodes or name == "output":
            raise ValueError(
                f"NIR export: two nodes would be named {name!r} (a module's name clashes with a node "
                "the export writes: input, output, poolN, flattenN, global_pool, flatten); rename the "
                "module."
            )
        nodes[name] = node
        edges.extend((source, name) for source in sources)
        ops.append((op, None if list(sources) == [last] else list(sources)))
        last = name
        return name

    def refuse(call, why):
        return ValueError(
            f"{model_name(ann)} computes something between its layers that NIR export cannot see: "
            f"{call.name} {why} (NIR has nodes for residual adds, flattening, average pooling and a "
            "global mean). Export refused."
        )

    for index, call in enumerate(calls):
        sources = [node_of[s] for s in call.sources]
        if call.kind == "batchnorm":
            node_of[index] = node_of[call.fed_by]
            continue
        if call.kind in POOLS:
            details = call.module
            if call.kind != "avg_pool" or details["padding"] != "VALID" or call.ops or len(sources) != 1:
                after = repr(sources[0]) if sources else "a constant"
                raise ValueError(
                    f"a {call.kind} with padding {details['padding']!r} after {after}: NIR export "
                    "takes average pooling without padding."
                )
            name = f"pool{convs}" if snnjax_names else f"pool{len(ops)}"
            window, strides = details["window"], details["strides"]
            node = _avg_pool_node(nir, window, strides)
            node_of[index] = add(name, node, ("avgpool", name, window, strides), sources)
            continue
        if call.kind == "activation":
            if set(call.ops) - {"add"} or (len(sources) > 1) != bool(call.ops):
                raise refuse(call, f"reads {sources} through {list(call.ops)}")
            name = _node_name(call.path)
            node = _if_node(nir, params[(*call.path, "threshold")], _nir_shape(call.output_shape[1:]))
            node_of[index] = add(name, node, ("if", name), sources)
            continue
        # A Conv/Dense: what lies between it and its source may be a flatten or a global mean.
        kernel = params[(*call.path, "kernel")]
        if len(sources) != 1:
            raise refuse(call, f"reads {sources} through {list(call.ops)}")
        source = call.sources[0]
        source_shape = tuple(image_shape if source is INPUT else calls[source].output_shape[1:])
        flattened = None
        if call.ops and call.kind == "dense" and len(source_shape) == 3:
            if call.ops[:2] == ("reduce_sum", "div") and set(call.ops[2:]) <= {"reshape"}:  # a global mean
                name = "global_pool" if snnjax_names else f"pool{len(ops)}"
                window = tuple(source_shape[:2])
                node = _avg_pool_node(nir, window, window)
                sources = [add(name, node, ("avgpool", name, window, window), sources)]
                source_shape = (1, 1, source_shape[2])
            elif set(call.ops) != {"reshape"}:
                raise refuse(call, f"reads {sources[0]!r} through {list(call.ops)}")
            name = "flatten" if snnjax_names else f"flatten{len(ops)}"
            node = nir.Flatten(input_type={"input": np.array(_nir_shape(source_shape))}, start_dim=0)
            sources = [add(name, node, ("flatten", name), sources)]
            flattened, source_shape = source_shape, (int(np.prod(source_shape)),)
        if tuple(call.input_shape[1:]) != source_shape:
            raise ValueError(
                f"{call.name}: its input {call.input_shape[1:]} is not what the previous layer gives "
                f"{source_shape} through average pooling or flattening: NIR export cannot express the "
                f"operation between them ({list(call.ops)})."
            )
        if call.ops and flattened is None:
            raise refuse(call, f"reads {sources[0]!r} through {list(call.ops)}")
        bias = np.asarray(bias_of[index], np.float32)
        if call.kind == "conv":
            in_block = snnjax_names and call.path[-1] == "conv" and len(call.path) > 1
            name = _node_name(call.path[:-1] if in_block else call.path)
            pad, stride = _symmetric_padding(call.module, call.name), _stride(call.module, call.name)
            weight = kernel.transpose(3, 2, 0, 1)
            node = nir.Conv2d(source_shape[:2], weight, stride, pad, dilation=1, groups=1, bias=bias)
            op = ("conv", name, int(kernel.shape[-1]), tuple(kernel.shape[:2]), stride, pad)
            convs += 1
        else:
            name = _node_name(call.path)
            if flattened is not None:  # our flatten is H-W-C, NIR's (like PyTorch's) C-H-W
                h, w, c = flattened
                kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
            node = nir.Affine(weight=kernel.T.copy(), bias=bias)
            op = ("dense", name, int(kernel.shape[-1]))
        node_of[index] = add(name, node, op, sources)
    nodes["output"] = nir.Output(output_type={"output": np.array(_nir_shape(calls[-1].output_shape[1:]))})
    edges.append((last, "output"))
    return nodes, edges, ops, params, snn_variables


def _node_name(path) -> str:
    """A module path as a NIR node name: ``("block", "c1")`` → ``"block.c1"`` (NNX list entries too)."""
    return ".".join(str(part) for part in path)


def _avg_pool_node(nir, window, strides):
    return nir.AvgPool2d(kernel_size=np.array(window), stride=np.array(strides), padding=np.array([0, 0]))


def _check_chain(ann, variables, graph, image_shape) -> None:
    """Refuses an export whose graph does not compute what the model computes between its layers.

    The structure graph names every operation between layers, and the export refuses those NIR has
    no node for; this is a second guard (e.g. a global mean written as a sum divided by another
    number). Both are run with every activation as the identity (so no spike can flip) on a random
    input, and must agree.
    """
    chain, chain_variables = _chain_from_graph(graph, graph.metadata["snnjax"])
    x = jax.random.normal(jax.random.key(0), (2, *image_shape))
    want = linear_apply(ann, variables, x)
    got = linear_apply(chain, chain_variables, x)
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    close = want.shape == got.shape and np.allclose(
        np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4 * scale
    )
    if not close:
        raise ValueError(
            f"{model_name(ann)} computes something between its layers that NIR export cannot see (a "
            "scaling, an add, ...): the exported graph would be another network. Export refused."
        )


def _stride(module, name: str) -> int:
    strides = getattr(module, "strides", 1) or 1
    strides = tuple(strides) if isinstance(strides, tuple | list) else (strides, strides)
    if len(set(strides)) != 1:
        raise ValueError(f"{name}: strides {strides} differ per axis; NIR export needs one.")
    return int(strides[0])


def _nir_shape(shape) -> list[int]:
    """NHWC (no batch) → NIR's C-H-W; vectors unchanged."""
    shape = list(shape)
    return [shape[-1], *shape[:-1]] if len(shape) == 3 else shape


def _chain_from_graph(graph, meta):
    """The `NIRChain` and its variables from a chain graph written by `export_nir`."""
    ops = _chain_ops(meta)
    params: dict[tuple[str, ...], np.ndarray] = {}
    flatten_shape = None
    for op in ops:
        kind, name = op[0], op[1]
        node = graph.nodes[name]
        if kind == "conv":
            params[(name, "kernel")] = np.asarray(node.weight).transpose(2, 3, 1, 0)
            params[(name, "bias")] = np.asarray(node.bias)
        elif kind == "dense":
            kernel = np.asarray(node.weight).T
            if flatten_shape is not None:
                c, h, w = flatten_shape
                kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
                flatten_shape = None
            params[(name, "kernel")], params[(name, "bias")] = kernel, np.asarray(node.bias)
        elif kind == "if":
            theta = np.asarray(node.v_threshold)
            per_channel = bool(meta["per_channel"])
            params[(name, "threshold")] = (
                theta.reshape(theta.shape[0], -1)[:, 0] if per_channel else theta.reshape(-1)[0]
            )
        elif kind == "flatten":
            flatten_shape = tuple(int(d) for d in node.input_type["input"])
    variables = {
        "params": traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in params.items()})
    }
    return NIRChain(ops=ops, sources=_chain_sources(meta)), variables


def _chain_sources(meta) -> tuple:
    """`NIRChain.sources` from ``metadata["snnjax"]["sources"]`` (absent for a plain chain)."""
    if "sources" not in meta:
        return ()
    return tuple(None if s is None else tuple(s) for s in json.loads(_text(meta["sources"])))


def _chain_ops(meta) -> tuple:
    """`NIRChain.ops` from ``metadata["snnjax"]["ops"]`` (JSON: lists back to tuples)."""
    ops = [tuple(op) for op in json.loads(_text(meta["ops"]))]
    return tuple(tuple(tuple(v) if isinstance(v, list) else v for v in op) for op in ops)
