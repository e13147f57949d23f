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

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from snnjax import conversion, models
from snnjax.activations import qcfs
from snnjax.layers import ThresholdActivation

__all__ = ["from_nir", "to_nir"]

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
    raise ValueError(
        f"NIR export supports ConvNet (VGG-16, SmallCNN) and ResNet models, not {type(model).__name__}."
    )


def to_nir(
    snn_model,
    snn_variables: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    *,
    v0: float,
    fold_thresholds: bool = False,
    lossy: bool = False,
):
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
    if not lossy:
        raise ValueError(
            "NIR's IF neuron fires on v > θ and resets to v_reset, while this SNN fires on v ≥ θ, resets by "
            f"subtraction and starts at v0·θ = {v0}·θ; a NIR backend would run a different network. Pass "
            "lossy=True to export anyway (our semantics are then recorded in graph.metadata['snnjax'])."
        )
    nir = _import_nir()
    ann = snn_model.ann if isinstance(snn_model, conversion.SpikingNetwork) else snn_model
    description = _describe(ann)
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
        theta = params[(*path, "threshold")]
        if theta.ndim:  # one θ per channel; NIR puts channels first
            theta = theta.reshape(-1, *(1,) * (len(neuron_shape) - 1))
        theta = np.broadcast_to(theta, neuron_shape)
        nodes[name] = nir.IF(r=np.ones(neuron_shape, np.float32), v_threshold=np.array(theta, np.float32))
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
    metadata = {
        "snnjax": {
            **SEMANTICS,
            "v0": float(v0),
            "thresholds_folded": bool(fold_thresholds),
            "per_channel": _per_channel(params),
            "num_classes": int(head.shape[1]),
            "image_shape": list(image_shape),
            **description,
        }
    }
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    graph.infer_types()
    return graph


def _per_channel(params) -> bool:
    return any(k[-1] == "threshold" and np.ndim(v) == 1 for k, v in params.items())


def _text(value) -> str:
    """NIR files (HDF5) hand strings back as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def from_nir(graph):
    """Rebuilds the snnjax SNN of a graph written by :func:`to_nir`.

    Args:
      graph: a ``nir.NIRGraph`` (e.g. from ``nir.read(path)``) with ``metadata["snnjax"]``.

    Returns:
      ``(snn_model, snn_variables, v0)``: a layer-mode SNN with folded BatchNorm and its variables;
      run it with :func:`snnjax.spiking_apply`.

    Raises:
      ValueError: for graphs not written by snnjax.
    """
    meta = dict(graph.metadata or {}).get("snnjax")
    if not meta:
        raise ValueError("This NIR graph was not written by snnjax.to_nir (no metadata['snnjax']).")
    activation = functools.partial(ThresholdActivation, fn=functools.partial(qcfs, levels=1))
    meta = {key: _text(value) if isinstance(value, bytes | str) else value for key, value in meta.items()}
    if meta["class"] == "ConvNet":
        layers = [
            models.POOL if _text(layer) == models.POOL else int(_text(layer)) for layer in meta["layers"]
        ]
        ann = models.ConvNet(layers=tuple(layers), hidden=tuple(int(h) for h in meta["hidden"]),
                             num_classes=int(meta["num_classes"]), activation=activation)  # fmt: skip
    else:
        ann = models.ResNet(stage_sizes=tuple(int(s) for s in meta["stage_sizes"]),
                            widths=tuple(int(w) for w in meta["widths"]),
                            num_classes=int(meta["num_classes"]), activation=activation)  # fmt: skip
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
