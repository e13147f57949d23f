"""One walk over a model's structure: the layers it calls, in call order, and which feeds which.

:func:`trace_structure` runs the model abstractly (``jax.eval_shape``, nothing computed) and records
every call of a synaptic layer (``nn.Conv``, snnjax ``Conv``, ``nn.Dense``; ``nnx.Conv``,
``nnx.Linear``), a BatchNorm (``nn.BatchNorm``, ``nnx.BatchNorm``), a snnjax activation layer (Linen
or NNX) and a ReLU function call (:mod:`snnjax.interception`), with its module path and which earlier
recorded call produced its input (when the input is that call's output unchanged). Linen calls are
seen through ``flax.linen.intercept_methods``, NNX calls through
:func:`snnjax.interception.nnx_module_paths`. Layers are recognised by their class, never by their
name. Pooling is a function, not a module: calls of ``flax.linen.avg_pool`` / ``max_pool`` are recorded
too (the two names are wrapped for the duration of the walk), with their window, strides and padding.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from snnjax import interception, nnx as snnjax_nnx
from snnjax.frontends import NNXModel, as_model
from snnjax.layers import Conv
from snnjax.simulation import CONVERTIBLE_ACTIVATIONS, apply_folded

__all__ = ["POOLS", "LayerCall", "linear_chain", "trace_structure"]

POOLS = ("avg_pool", "max_pool")  # functions of flax.linen recorded as calls of these kinds

KINDS = {
    "conv": (nn.Conv, Conv, nnx.Conv),
    "dense": (nn.Dense, nnx.Linear),
    "batchnorm": (nn.BatchNorm, nnx.BatchNorm),
    "activation": (*CONVERTIBLE_ACTIVATIONS, *snnjax_nnx.ACTIVATION_LAYERS),
}


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One recorded layer call.

    Attributes:
      path: the module path, ``("block", "c1")``.
      kind: ``"conv"``, ``"dense"``, ``"batchnorm"``, ``"activation"``, or a pooling function of
        :data:`POOLS`.
      module: the bound module (its fields, e.g. a BatchNorm's ``epsilon``, can be read); for a
        pooling call, ``{"window", "strides", "padding"}``; None for a ReLU function call.
      input_shape: the shape of its input (batch axis first).
      output_shape: the shape of its output.
      fed_by: index of the recorded call whose output is this call's input unchanged, or None.
    """

    path: tuple[str, ...]
    kind: str
    module: Any
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    fed_by: int | None

    @property
    def name(self) -> str:
        """The module path as ``"block/c1"``."""
        return interception.site_name(self.path)


def _kind(module: Any) -> str | None:
    for kind, classes in KINDS.items():
        if isinstance(module, classes):
            return kind
    return None


def trace_structure(model: Any, variables: Mapping[str, Any], inputs: jax.Array) -> list[LayerCall]:
    """The layer calls of ``model`` on ``inputs``, in call order (computes nothing; see module docs).

    Args:
      model: an ANN: a Flax Linen module, or the frontend of an NNX module or function
        (:func:`snnjax.frontends.as_model`).
      variables: its variables in that frontend's form (ANN or SNN; a Linen BatchNorm whose statistics
        were folded away counts as a BatchNorm that adds its bias).
      inputs: an example input ``[B, ...]`` (only its shape and dtype are used).

    Returns:
      The recorded calls.
    """
    calls: list[LayerCall] = []
    outputs: list[Any] = []

    def record(path, kind, module, x, output):
        fed_by = next((i for i, y in enumerate(outputs) if y is x), None)
        calls.append(LayerCall(path, kind, module, tuple(x.shape), tuple(output.shape), fed_by))
        outputs.append(output)

    def interceptor(next_fun, args, kwargs, context):
        kind = _kind(context.module) if context.method_name == "__call__" else None
        if kind is None:
            return next_fun(*args, **kwargs)
        output = next_fun(*args, **kwargs)
        record(tuple(context.module.path), kind, context.module, args[0], output)
        return output

    def function_site(key, x):
        y = jax.nn.relu(x)
        record(key, "activation", None, x, y)
        return y

    def observer(module, path, x, y):
        kind = _kind(module)
        if kind is not None:
            record(path, kind, module, x, y)

    model = as_model(model)

    def run(v, x):
        if isinstance(model, NNXModel):
            return model.apply(v, x, observer=observer)
        return apply_folded(model, v, x)

    with (
        nn.intercept_methods(interceptor),
        _recording_pools(record),
        interception.relu_sites(function_site),
    ):
        jax.eval_shape(run, variables, inputs)
    outputs.clear()  # abstract values of a finished trace
    return calls


@contextlib.contextmanager
def _recording_pools(record):
    """Wraps ``avg_pool``/``max_pool`` of ``flax.linen`` and ``flax.nnx`` so their calls are recorded.

    Restored after; process-wide while it lasts (the walk is abstract and short).
    """
    originals = {name: getattr(nn, name) for name in POOLS}
    nnx_originals = {name: getattr(nnx, name) for name in POOLS}  # the same functions, NNX's names

    def recording(name):
        def pool(x, window_shape, strides=None, padding="VALID", **kwargs):
            y = originals[name](x, window_shape, strides, padding, **kwargs)
            details = {
                "window": tuple(window_shape),
                "strides": tuple(strides or window_shape),
                "padding": padding,
            }
            record((name,), name, details, x, y)
            return y

        return pool

    try:
        for name in POOLS:
            setattr(nn, name, recording(name))
            setattr(nnx, name, recording(name))
        yield
    finally:
        for name, fn in originals.items():
            setattr(nn, name, fn)
        for name, fn in nnx_originals.items():
            setattr(nnx, name, fn)


def linear_chain(calls: list[LayerCall]) -> list[tuple[LayerCall, list[LayerCall], LayerCall | None]]:
    """A plain chain's ``[(Conv/Dense, its BatchNorms, the activation after them)]``, head last.

    A plain chain alternates: a Conv/Dense, optionally a BatchNorm fed by it, an activation fed by
    that, ... and a final Conv/Dense (the head, activation None). Pooling and flattening between them
    are not layers and may appear anywhere.

    Raises:
      ValueError: naming the first layer that breaks the pattern (e.g. an activation after a residual
        add, a shortcut convolution that reads an earlier activation).
    """
    chain: list[tuple[LayerCall, list[LayerCall], LayerCall | None]] = []
    linear: LayerCall | None = None
    norms: list[LayerCall] = []
    last, last_activation = None, None  # indices: last call of the pending group, last activation

    def broken(call: LayerCall, why: str) -> ValueError:
        return ValueError(f"not a plain chain of layers at {call.name!r}: {why}.")

    for index, call in enumerate(calls):
        if call.kind in POOLS:
            continue
        if call.kind in ("conv", "dense"):
            if linear is not None:
                raise broken(call, "two Conv/Dense layers without an activation between them")
            source = calls[call.fed_by] if call.fed_by is not None else None
            if source is not None and source.kind == "activation" and call.fed_by != last_activation:
                raise broken(call, f"it reads {source.name!r}, not the activation just before it")
            linear, norms, last = call, [], index
        elif call.kind == "batchnorm":
            if linear is None or call.fed_by != last:
                raise broken(call, "a BatchNorm that does not directly follow a Conv/Dense")
            norms.append(call)
            last = index
        else:
            if linear is None or call.fed_by != last:
                raise broken(
                    call, "an activation that does not directly follow a Conv/Dense (or its BatchNorm)"
                )
            chain.append((linear, norms, call))
            linear, last_activation = None, index
    if linear is None:
        raise ValueError("not a plain chain of layers: no Conv/Dense after the last activation (the head).")
    chain.append((linear, norms, None))
    return chain
