"""Export converted SNNs to NIR (the Neuromorphic Intermediate Representation) and read them back.

Graph: Input → Conv2d (BatchNorm folded into its bias) → IF → … → AvgPool2d → Flatten → Affine → IF
→ … → Affine → Output; a ResNet block's add is two edges into the block's output IF (NIR sums the
inputs of a node), its global mean pool an AvgPool2d over the whole map. Shapes follow NIR's
channels-first convention (``C, H, W``; conv weights ``O, I, kh, kw``; affine weights ``out, in``,
flatten in C-H-W order).

NIR's IF neuron differs from ours: it fires when ``v > θ`` and resets *to* ``v_reset``, while snnjax
fires when ``v ≥ θ``, resets by subtracting θ, starts at ``v0·θ``, feeds the analog input at every
step and reads out the mean of the last layer over t. An exported graph therefore does not run the
same network on a NIR backend, so :func:`to_nir` refuses unless called with ``lossy=True``; it then
records our semantics in ``graph.metadata["snnjax"]`` (with the architecture, so :func:`from_nir`
rebuilds the identical snnjax SNN).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from snnjax import conversion, models
from snnjax.activations import qcfs
from snnjax.layers import Conv, ThresholdActivation
from snnjax.simulation import inference_kwargs, swapping_interceptor
from snnjax.structure import POOLS, linear_chain, trace_structure

if TYPE_CHECKING:  # nir is an optional dependency, imported where it is used
    import nir

__all__ = ["NIRChain", "from_nir", "to_nir"]

# The node types to_nir writes, and so the only ones from_nir runs.
RUNNABLE = ("Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output")
# metadata["snnjax"] fields from_nir needs, per architecture class.
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
    return None  # any other model: exported as a plain chain found by the structure walk


def to_nir(
    snn_model: nn.Module,
    snn_variables: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    *,
    v0: float,
    fold_thresholds: bool = False,
    lossy: bool = False,
) -> nir.NIRGraph:
    """Writes a converted SNN as a ``nir.NIRGraph``.

    Args:
      snn_model: a layer-mode SNN from :func:`snnjax.spiking_model` (or its ANN: only the
        architecture is read) with ``avg`` pooling.
      snn_variables: SNN variables from :func:`snnjax.ann_to_snn_variables` (BatchNorm is folded here
        if it is not yet).
      image_shape: ``(H, W, C)`` of the input.
      v0: the SNN's initial membrane fraction (recorded in the metadata).
      fold_thresholds: rescale weights so every θ is 1 (:func:`snnjax.conversion.balance_weights`;
        ConvNets only) instead of keeping θ per layer.
      lossy: export although NIR's IF semantics differ from ours (see the module docstring).

    Returns:
      The graph, type-checked by NIR.

    Raises:
      ValueError: unless ``lossy``; for an unsupported model or pooling.
    """
    ann = snn_model.ann if hasattr(snn_model, "ann") else snn_model
    if not isinstance(ann, nn.Module) or "params" not in snn_variables or snn_variables.get("sites"):
        raise ValueError(
            "NIR export reads Linen models whose activations are snnjax layers; this one is an NNX or "
            "function model or has ReLU function sites. Write the model in Linen with snnjax layers to "
            "export it (NNX and function-site export is not implemented yet)."
        )
    if not lossy:
        raise ValueError(
            "NIR's IF neuron fires on v > θ and resets to v_reset, while this SNN fires on v ≥ θ, resets by "
            f"subtraction and starts at v0·θ = {v0}·θ; a NIR backend would run a different network. Pass "
            "lossy=True to export anyway (our semantics are then recorded in graph.metadata['snnjax'])."
        )
    nir = _import_nir()
    ann = snn_model.ann if isinstance(snn_model, conversion.SpikingNetwork) else snn_model
    description = _describe(ann)
    if description is None:
        nodes, edges, description, params, exported = _chain_graph(
            nir, ann, snn_variables, image_shape, fold_thresholds
        )
        num_classes = int(nodes["output"].output_type["output"][-1])
        graph = _graph(nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, num_classes)
        _check_chain(ann, exported, graph, image_shape)
        return graph
    if description["class"] == "ConvNet" and getattr(ann, "pooling", "avg") != "avg":
        raise ValueError("NIR export supports average pooling only (replace max-pooling first).")
    params = traverse_util.flatten_dict(dict(snn_variables["params"]))
    if any(k[-2:] == ("bn", "scale") for k in params):
        snn_variables = conversion.fold_batchnorm(snn_variables)
    if fold_thresholds:
        snn_variables = conversion.balance_weights(snn_variables)
    params = {
        k: np.asarray(v, np.float32)
        for k, v in traverse_util.flatten_dict(dict(snn_variables["params"])).items()
    }
    height, width, channels = image_shape
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([channels, height, width])})}
    edges: list[tuple[str, str]] = []
    shape = [channels, height, width]  # current C, H, W

    def conv(name, prefix, sources, strides=1):
        """A Conv2d node reading ``sources`` on the current ``shape``; returns its output shape."""
        kernel = params[(*prefix, "conv", "kernel")]
        bias = params[(*prefix, "bn", "bias")] + params.get((*prefix, "conv", "bias"), 0.0)
        k = kernel.shape[0]
        node = nir.Conv2d(
            input_shape=(shape[1], shape[2]),
            weight=kernel.transpose(3, 2, 0, 1),
            stride=strides,
            padding=k // 2,
            dilation=1,
            groups=1,
            bias=np.asarray(bias, np.float32),
        )
        nodes[name] = node
        edges.extend((source, name) for source in sources)
        return node.output_type["output"].tolist()

    def neuron(name, path, sources, neuron_shape):
        nodes[name] = _if_node(nir, params[(*path, "threshold")], neuron_shape)
        edges.extend((source, name) for source in sources)

    last = "input"
    if description["class"] == "ConvNet":
        conv_index = 0
        for layer in description["layers"]:
            if layer == models.POOL:
                name = f"pool{conv_index}"
                nodes[name] = nir.AvgPool2d(
                    kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
                )
                edges.append((last, name))
                shape = [shape[0], shape[1] // 2, shape[2] // 2]
                last = name
                continue
            shape = conv(f"conv_bn{conv_index}", (f"conv_bn{conv_index}",), [last])
            neuron(f"act{conv_index}", (f"act{conv_index}",), [f"conv_bn{conv_index}"], tuple(shape))
            last = f"act{conv_index}"
            conv_index += 1
        nodes["flatten"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
        edges.append((last, "flatten"))
        last, features = "flatten", int(np.prod(shape))
        c, h, w = shape
        for i in range(len(description["hidden"])):
            kernel = params[(f"fc{i}", "kernel")]
            if i == 0:  # our flatten is H-W-C, NIR's (like PyTorch's) C-H-W
                kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(features, -1)
            nodes[f"fc{i}"] = nir.Affine(weight=kernel.T.copy(), bias=params[(f"fc{i}", "bias")])
            edges.append((last, f"fc{i}"))
            neuron(f"fc_act{i}", (f"fc_act{i}",), [f"fc{i}"], (kernel.shape[1],))
            last, features = f"fc_act{i}", kernel.shape[1]
        head = params[("head", "kernel")]
        if not description["hidden"]:
            head = head.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(features, -1)
    else:
        shape = conv("stem", ("stem",), [last])
        neuron("stem_act", ("stem_act",), ["stem"], tuple(shape))
        last = "stem_act"
        for stage, blocks in enumerate(description["stage_sizes"]):
            for block in range(blocks):
                prefix = f"stage{stage}_block{block}"
                strides = 2 if stage > 0 and block == 0 else 1
                block_input_shape = shape
                shape = conv(f"{prefix}.conv_bn1", (prefix, "conv_bn1"), [last], strides)
                neuron(f"{prefix}.act1", (prefix, "act1"), [f"{prefix}.conv_bn1"], tuple(shape))
                shape = conv(f"{prefix}.conv_bn2", (prefix, "conv_bn2"), [f"{prefix}.act1"])
                shortcut = last
                if (prefix, "shortcut", "conv", "kernel") in params:
                    saved, shape = shape, block_input_shape
                    conv(f"{prefix}.shortcut", (prefix, "shortcut"), [last], strides)
                    shape, shortcut = saved, f"{prefix}.shortcut"
                neuron(f"{prefix}.act2", (prefix, "act2"), [f"{prefix}.conv_bn2", shortcut], tuple(shape))
                last = f"{prefix}.act2"
        nodes["global_pool"] = nir.AvgPool2d(
            kernel_size=np.array(shape[1:]), stride=np.array(shape[1:]), padding=np.array([0, 0])
        )
        nodes["flatten"] = nir.Flatten(input_type={"input": np.array([shape[0], 1, 1])}, start_dim=0)
        edges += [(last, "global_pool"), ("global_pool", "flatten")]
        last = "flatten"
        head = params[("head", "kernel")]
    nodes["head"] = nir.Affine(weight=head.T.copy(), bias=params[("head", "bias")])
    nodes["output"] = nir.Output(output_type={"output": np.array([head.shape[1]])})
    edges += [(last, "head"), ("head", "output")]
    return _graph(
        nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, int(head.shape[1])
    )


def _graph(nir, nodes, edges, description, params, v0, fold_thresholds, image_shape, num_classes):
    """The type-checked graph with our semantics and the architecture in ``metadata["snnjax"]``."""
    metadata = {
        "snnjax": {
            **SEMANTICS,
            "v0": float(v0),
            "thresholds_folded": bool(fold_thresholds),
            "per_channel": _per_channel(params),
            "num_classes": num_classes,
            "image_shape": list(image_shape),
            **description,
        }
    }
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


def from_nir(graph: nir.NIRGraph | str | os.PathLike) -> tuple[nn.Module, dict[str, Any], float]:
    """Rebuilds the snnjax SNN of a graph written by :func:`to_nir`, after checking the graph.

    The network is rebuilt from ``metadata["snnjax"]`` and the nodes' weights, so the graph must be
    exactly the one :func:`to_nir` writes for that network: only node types snnjax runs, the same
    nodes and edges (none added, removed or redirected), the same shapes, IF nodes with ``r = 1``,
    ``v_reset = 0`` and one θ per layer (or per channel), finite values. Anything else is refused
    rather than silently run as another network.

    Args:
      graph: a ``nir.NIRGraph`` (e.g. from ``nir.read(path)``) with ``metadata["snnjax"]``, or the
        path of a NIR file (read without NIR's type inference, so errors name the nodes as written).

    Returns:
      ``(snn_model, snn_variables, v0)``: a layer-mode SNN with folded BatchNorm and its variables;
      run it with :func:`snnjax.spiking_apply`.

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
        raise ValueError(f"{where}This NIR graph was not written by snnjax.to_nir (no metadata['snnjax']).")
    meta = {key: _text(value) if isinstance(value, bytes | str) else value for key, value in meta.items()}
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
        raise FileNotFoundError(f"{path} does not exist (to_nir's graph is written with nir.write).")
    try:
        return nir.read(path, type_check=False)
    except Exception as error:  # h5py and NIR raise many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable NIR file ({type(error).__name__}: {error}).") from None


def _ann_from_meta(meta) -> nn.Module:
    """The ANN whose structure ``metadata["snnjax"]`` records (QCFS activations stand for the IF nodes)."""
    if meta["class"] == "chain":
        return NIRChain(ops=_chain_ops(meta))
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
        f"{where}{problem}. from_nir rebuilds only the graph snnjax.interop.to_nir writes for the network "
        "recorded in metadata['snnjax']; re-export the network with to_nir instead of editing the graph."
    )


def _expected_graph(meta, where: str) -> nir.NIRGraph:
    """The graph :func:`to_nir` writes for the network in ``meta``, with zero weights (the structure)."""
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
        return to_nir(ann, zeros, image_shape, v0=float(meta["v0"]), lossy=True)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise _refusal(
            where,
            f"metadata['snnjax'] does not describe a network snnjax can build "
            f"({type(error).__name__}: {error})",
        ) from None


def _layout(node) -> dict[str, tuple]:
    """What :func:`to_nir` fixes in a node besides the weights' values.

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
    """Refuses a graph that is not exactly what :func:`to_nir` writes for the network in ``meta``.

    from_nir reads weights by node name and ignores edges, so a node added, removed, retyped or
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
        sources = [s for s, d in expected.edges if d == b]
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

    snnjax's IF integrates its input unscaled (r = 1), subtracts θ on a spike (to_nir writes
    v_reset = 0) and keeps one θ per layer or per channel (NIR puts channels first).
    """
    if not np.all(np.asarray(node.r) == 1):
        raise _refusal(
            where, f"node {name!r} (IF): r is not 1 everywhere; snnjax's IF integrates its input unscaled"
        )
    if node.v_reset is not None and not np.all(np.asarray(node.v_reset) == 0):
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


# Any plain chain of layers (a user's own model), found by one structure walk.


class NIRChain(nn.Module):
    """A plain chain of layers read back from a NIR graph; layers are named after the graph's nodes.

    Attributes:
      ops: ``("conv", name, features, kernel_size, stride, padding)``, ``("dense", name, features)``,
        ``("if", name)``, ``("avgpool", name, window, stride)`` or ``("flatten", name)``, in order.
    """

    ops: tuple

    @nn.compact
    def __call__(self, x):
        """Maps ``[B, H, W, C]`` (or ``[B, F]``) through the chain."""
        for op in self.ops:
            kind, name = op[0], op[1]
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


def _chain_graph(nir, ann, snn_variables, image_shape, fold_thresholds):
    """``(nodes, edges, description, params, variables)`` of a plain chain found by the structure walk.

    ``variables`` are the exported ones (BatchNorm folded, thresholds balanced if asked).
    """
    example = jnp.zeros((1, *image_shape))
    if snn_variables.get("batch_stats"):
        snn_variables = conversion.fold_batchnorm(snn_variables, model=ann, inputs=example)
    if fold_thresholds:
        snn_variables = conversion.balance_weights(snn_variables, model=ann, inputs=example)
    calls = trace_structure(ann, snn_variables, example)
    norms = {linear.path: group for linear, group, _ in linear_chain(calls)}  # refuses non-chains
    flat = traverse_util.flatten_dict(dict(snn_variables["params"]))
    params = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(_nir_shape(image_shape))})}
    edges: list[tuple[str, str]] = []
    ops: list[tuple] = []
    last, shape = "input", tuple(image_shape)  # NHWC (or feature) shape without the batch axis

    def add(name, node, op):
        nonlocal last
        nodes[name] = node
        edges.append((last, name))
        ops.append(op)
        last = name

    for call in calls:
        name = ".".join(call.path) if call.kind not in POOLS else f"pool{len(ops)}"
        if call.kind in POOLS:
            details = call.module
            if call.kind == "max_pool" or details["padding"] not in ("VALID", ((0, 0), (0, 0))):
                raise ValueError(
                    f"a {call.kind} with padding {details['padding']!r} after {last!r}: NIR export takes "
                    "average pooling without padding."
                )
            window, strides = details["window"], details["strides"]
            node = nir.AvgPool2d(
                kernel_size=np.array(window), stride=np.array(strides), padding=np.array([0, 0])
            )
            add(name, node, ("avgpool", name, window, strides))
            shape = tuple(call.output_shape[1:])
        elif call.kind in ("conv", "dense"):
            flattened = None
            if call.kind == "dense" and len(shape) == 3 and call.input_shape[1:] == (int(np.prod(shape)),):
                flatten = f"flatten{len(ops)}"
                node = nir.Flatten(input_type={"input": np.array(_nir_shape(shape))}, start_dim=0)
                add(flatten, node, ("flatten", flatten))
                flattened, shape = shape, (int(np.prod(shape)),)
            if tuple(call.input_shape[1:]) != shape:
                raise ValueError(
                    f"{call.name}: its input {call.input_shape[1:]} is not what the previous layer gives "
                    f"{shape} through average pooling or flattening: NIR export cannot express the "
                    "operation between them."
                )
            kernel = params[(*call.path, "kernel")]
            bias = params.get((*call.path, "bias"), np.zeros(kernel.shape[-1], np.float32))
            for norm in norms.get(call.path, []):  # folded BatchNorm: its bias joins the layer's
                bias = bias + params[(*norm.path, "bias")]
            if call.kind == "conv":
                pad = _symmetric_padding(call.module, call.name)
                stride = _stride(call.module)
                weight, bias = kernel.transpose(3, 2, 0, 1), np.asarray(bias, np.float32)
                node = nir.Conv2d(shape[:2], weight, stride, pad, dilation=1, groups=1, bias=bias)
                add(name, node, ("conv", name, int(kernel.shape[-1]), tuple(kernel.shape[:2]), stride, pad))
            else:
                if flattened is not None:  # our flatten is H-W-C, NIR's (like PyTorch's) C-H-W
                    h, w, c = flattened
                    kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
                node = nir.Affine(weight=kernel.T.copy(), bias=np.asarray(bias, np.float32))
                add(name, node, ("dense", name, int(kernel.shape[-1])))
            shape = tuple(call.output_shape[1:])
        elif call.kind == "activation":
            add(name, _if_node(nir, params[(*call.path, "threshold")], _nir_shape(shape)), ("if", name))
    nodes["output"] = nir.Output(output_type={"output": np.array(_nir_shape(shape))})
    edges.append((last, "output"))
    return nodes, edges, {"class": "chain", "ops": json.dumps(ops)}, params, snn_variables


def _check_chain(ann, variables, graph, image_shape) -> None:
    """Refuses an export whose graph does not compute what the model computes between its layers.

    The walk sees layers, pooling and flattening; an operation it cannot see that keeps shapes (a
    scaling, an add, ...) would silently change the network. Both are run with every activation as
    the identity (so no spike can flip) on a random input, and must agree.
    """
    chain, chain_variables = _chain_from_graph(graph, graph.metadata["snnjax"])
    x = jax.random.normal(jax.random.key(0), (2, *image_shape))
    with nn.intercept_methods(swapping_interceptor(lambda module, y: y)):
        want = ann.apply(variables, x, **inference_kwargs(ann))
        got = chain.apply(chain_variables, x)
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    close = want.shape == got.shape and np.allclose(
        np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4 * scale
    )
    if not close:
        raise ValueError(
            f"{type(ann).__name__} computes something between its layers that NIR export cannot see (a "
            "scaling, an add, ...): the exported graph would be another network. Export refused."
        )


def _stride(module) -> int:
    strides = getattr(module, "strides", 1) or 1
    strides = tuple(strides) if isinstance(strides, tuple | list) else (strides, strides)
    if len(set(strides)) != 1:
        raise ValueError(f"{'/'.join(module.path)}: strides {strides} differ per axis; NIR export needs one.")
    return int(strides[0])


def _nir_shape(shape) -> list[int]:
    """NHWC (no batch) → NIR's C-H-W; vectors unchanged."""
    shape = list(shape)
    return [shape[-1], *shape[:-1]] if len(shape) == 3 else shape


def _chain_from_graph(graph, meta):
    """The :class:`NIRChain` and its variables from a chain graph written by :func:`to_nir`."""
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
    return NIRChain(ops=ops), variables


def _chain_ops(meta) -> tuple:
    """:attr:`NIRChain.ops` from ``metadata["snnjax"]["ops"]`` (JSON: lists back to tuples)."""
    ops = [tuple(op) for op in json.loads(_text(meta["ops"]))]
    return tuple(tuple(tuple(v) if isinstance(v, list) else v for v in op) for op in ops)
