"""One structure graph of a model: its layers, pooling and the operations between them, from one jaxpr.

`trace_structure` traces the model once abstractly (``jax.make_jaxpr``: nothing is computed)
and reads the result as a graph. The layers are found by their class, never by their name: every
call of a synaptic layer (``nn.Conv``, snnjax ``Conv``, ``nn.Dense``; ``nnx.Conv``, ``nnx.Linear``), a
BatchNorm (``nn.BatchNorm``, ``nnx.BatchNorm``), a snnjax activation layer (Linen or NNX) and a ReLU
function call (`snnjax.conversion.interception`) is seen through interception
(``flax.linen.intercept_methods``, `snnjax.conversion.interception.nnx_module_paths`,
`snnjax.conversion.interception.relu_sites`), and its input and output are marked in the jaxpr by an
identity primitive. Everything between two marks is read from
the jaxpr itself, whatever function wrote it: residual adds, reshapes, concatenations and pooling of
any kind (``lax.reduce_window`` sums and maxima: ``nn.avg_pool``, ``nnx.max_pool``, a hand-written
``lax.reduce_window``). Pooling becomes a node of its own (`POOLS`); every other operation is
listed on the edge it sits on (`LayerCall.ops`). One graph serves every frontend (Linen, NNX, a
plain function) and every consumer: BatchNorm folding, weight balancing, operation counts, NIR export.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from flax import nnx
from jax.extend import core as jax_core
from jax.interpreters import batching

from snnjax.conversion import interception
from snnjax.conversion.frontends import NNXModel, as_model
from snnjax.conversion.simulation import CONVERTIBLE_ACTIVATIONS, apply_folded
from snnjax.nn import nnx_layers as snnjax_nnx
from snnjax.nn.layers import Conv

__all__ = ["INPUT", "POOLS", "LayerCall", "linear_chain", "trace_structure"]

# Pooling nodes, by the jaxpr operation they are read from: avg_pool is a window sum divided by the
# window's size (flax's avg_pool), sum_pool a window sum alone, max_pool a window maximum.
POOLS = ("avg_pool", "max_pool", "sum_pool")
INPUT = None  # LayerCall.sources entry for the model's input

KINDS = {
    "conv": (nn.Conv, Conv, nnx.Conv),
    "dense": (nn.Dense, nnx.Linear),
    "batchnorm": (nn.BatchNorm, nnx.BatchNorm),
    "activation": (*CONVERTIBLE_ACTIVATIONS, *snnjax_nnx.ACTIVATION_LAYERS),
}

# Operations that only call a sub-jaxpr: the graph reads through them (a model's own jit, remat and
# custom-derivative functions are transparent).
_CALLS = ("pjit", "jit", "closed_call", "core_call", "remat2", "checkpoint", "custom_jvp_call",
          "custom_vjp_call")  # fmt: skip

# An identity that marks a recorded layer's input (role "in") and output (role "out") in the jaxpr.
_mark_p = jax_core.Primitive("snnjax_structure_mark")
_mark_p.def_impl(lambda x, **_: x)
_mark_p.def_abstract_eval(lambda aval, **_: aval)
batching.primitive_batchers[_mark_p] = lambda args, dims, **params: (_mark_p.bind(args[0], **params), dims[0])


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One node of the structure graph: a layer call or a pooling operation.

    Attributes:
      path: the module path, ``("block", "c1")``; for pooling ``(kind,)``.
      kind: ``"conv"``, ``"dense"``, ``"batchnorm"``, ``"activation"``, or a pooling kind of
        `POOLS`.
      module: the bound module (its fields, e.g. a BatchNorm's ``epsilon``, can be read); for
        pooling ``{"window", "strides", "padding"}`` over the spatial axes (padding ``"VALID"``
        or ``((low, high), ...)`` pairs); None for a ReLU function call.
      input_shape: the shape of its input (batch axis first).
      output_shape: the shape of its output.
      fed_by: index of the node whose output is this node's input unchanged, or None.
      sources: the nodes its input is computed from (indices; `INPUT` for the model's input),
        in the order its operations read them (``y + x``: y's node first); ``(fed_by,)`` when fed
        directly.
      ops: the jaxpr operations between those sources and its input, in program order (e.g.
        ``("add",)`` for a residual add, ``("reshape",)`` for a flatten, ``("reduce_sum", "div")``
        for a global mean); empty when fed directly.
      readers: how many operations read its output, counting those whose results reach the model's
        outputs (a value computed and dropped is no reader); 1 when only the next layer does.
    """

    path: tuple[str, ...]
    kind: str
    module: Any
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    fed_by: int | None
    sources: tuple[int | None, ...] = ()
    ops: tuple[str, ...] = ()
    readers: int = 1

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
    """The structure graph of ``model`` on ``inputs``: its nodes in program order (see module docs).

    Args:
      model: an ANN: a Flax Linen module, or the frontend of an NNX module or function
        (`snnjax.conversion.frontends.as_model`).
      variables: its variables in that frontend's form (ANN or SNN; a Linen BatchNorm whose statistics
        were folded away counts as a BatchNorm that adds its bias).
      inputs: an example input ``[B, ...]`` (only its shape and dtype are used).

    Returns:
      The layer calls and pooling operations, each with the nodes it reads and the operations on the
      way (`LayerCall`).
    """
    recorded: list[tuple[tuple, str, Any, tuple, tuple]] = []  # (path, kind, module, in, out shapes)
    active: list[Any] = []  # modules being recorded (a subclass's super().__call__ is the same call)

    def mark(x, index, role):
        return _mark_p.bind(x, index=index, role=role) if isinstance(x, jax.Array) else x

    def around(path, kind, module, run, x):
        """Runs one layer call with its input and output marked; returns its output."""
        if kind is None or any(m is module for m in active) or not isinstance(x, jax.Array):
            return run(x)
        index = len(recorded)
        recorded.append(None)
        active.append(module)
        try:
            y = run(mark(x, index, "in"))
        finally:
            active.pop()
        recorded[index] = (tuple(path), kind, module, tuple(x.shape), tuple(getattr(y, "shape", ())))
        return mark(y, index, "out")

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        kind = _kind(module) if context.method_name == "__call__" else None
        if kind is None or not (args or kwargs):
            return next_fun(*args, **kwargs)
        return around(module.path, kind, module, *interception.call_input(next_fun, args, kwargs))

    def function_site(key, x):
        return around(key, "activation", None, jax.nn.relu, x)

    def wrapper(module, path, run, x):
        return around(path, _kind(module), module, run, x)

    model = as_model(model)

    def run(v, x):
        if isinstance(model, NNXModel):
            return model.apply(v, x, wrapper=wrapper)
        return apply_folded(model, v, x)

    with nn.intercept_methods(interceptor), interception.relu_sites(function_site):
        closed = jax.make_jaxpr(run)(variables, inputs)
    return _graph(closed, len(jax.tree.leaves(inputs)), recorded)


@dataclasses.dataclass(frozen=True)
class _Op:
    """One operation of the flattened jaxpr: inputs are value keys (ints) or ``_Literal``s."""

    name: str
    params: Mapping[str, Any]
    inputs: tuple[Any, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class _Literal:
    value: Any


def _sub_jaxpr(eqn) -> jax_core.Jaxpr | None:
    if eqn.primitive.name not in _CALLS:
        return None
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
        if isinstance(sub, jax_core.Jaxpr) and len(sub.invars) == len(eqn.invars):
            return sub
    return None


def _flatten(closed: jax_core.ClosedJaxpr) -> tuple[list[_Op], list[int], dict[int, tuple], list[Any]]:
    """The jaxpr's operations with call primitives inlined: ``(ops, invar keys, shapes, outputs)``."""
    ops: list[_Op] = []
    shapes: dict[int, tuple] = {}
    keys = itertools.count()

    def new(var) -> int:
        key = next(keys)
        shapes[key] = tuple(getattr(var.aval, "shape", ()))
        return key

    def read(env, atom):
        if isinstance(atom, jax_core.Literal):
            return _Literal(atom.val)
        return env.get(atom)  # None: a constant of a sub-jaxpr

    def run(jaxpr, env):
        for eqn in jaxpr.eqns:
            inputs = tuple(read(env, v) for v in eqn.invars)
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                inner = dict(zip(sub.invars, inputs, strict=True))
                run(sub, inner)
                for outer, atom in zip(eqn.outvars, sub.outvars, strict=True):
                    env[outer] = read(inner, atom)
                continue
            outputs = tuple(new(v) for v in eqn.outvars)
            env.update(zip(eqn.outvars, outputs, strict=True))
            ops.append(_Op(eqn.primitive.name, eqn.params, inputs, outputs))

    env = {var: new(var) for var in closed.jaxpr.invars}
    invars = [env[var] for var in closed.jaxpr.invars]
    run(closed.jaxpr, env)
    return ops, invars, shapes, [read(env, v) for v in closed.jaxpr.outvars]


def _pool_details(op: _Op) -> dict[str, Any] | None:
    """Window, strides and spatial padding of a reduce_window over the spatial axes of ``[B, ..., C]``."""
    window, strides = op.params["window_dimensions"], op.params["window_strides"]
    dilated = any(d != 1 for d in (*op.params["base_dilation"], *op.params["window_dilation"]))
    if len(window) < 3 or window[0] != 1 or window[-1] != 1 or strides[0] != 1 or strides[-1] != 1 or dilated:
        return None
    padding = tuple(tuple(int(p) for p in pair) for pair in op.params["padding"])
    if padding[0] != (0, 0) or padding[-1] != (0, 0):
        return None
    spatial = padding[1:-1]
    return {
        "window": tuple(window[1:-1]),
        "strides": tuple(strides[1:-1]),
        "padding": "VALID" if all(pair == (0, 0) for pair in spatial) else spatial,
    }


def _graph(closed, num_inputs: int, recorded: list) -> list[LayerCall]:
    """The `LayerCall` nodes of a traced model (see `trace_structure`)."""
    ops, invars, shapes, outputs = _flatten(closed)
    producer = {key: i for i, op in enumerate(ops) for key in op.outputs}
    # Readers are counted over the operations whose results reach the model's outputs: a value
    # computed and dropped (e.g. a statistic sown into a collection the call does not keep) is no reader.
    live = {key for key in outputs if isinstance(key, int)}
    live_ops = []
    for op in reversed(ops):
        if any(key in live for key in op.outputs):
            live_ops.append(op)
            live.update(key for key in op.inputs if isinstance(key, int))
    readers: dict[int, int] = {}
    for key in itertools.chain((k for op in live_ops for k in op.inputs), outputs):
        if isinstance(key, int):
            readers[key] = readers.get(key, 0) + 1
    input_keys = set(invars[len(invars) - num_inputs :])
    # node id → (position in program order, path, kind, module, input key, output key, shapes)
    nodes: dict[Any, dict[str, Any]] = {}
    owner: dict[int, Any] = {}  # output key → node id
    for i, op in enumerate(ops):
        if op.name == _mark_p.name and recorded[op.params["index"]] is not None:
            index = op.params["index"]
            node = nodes.setdefault(("call", index), {"record": recorded[index]})
            if op.params["role"] == "in":
                node["input"] = op.inputs[0]
            else:
                node["position"], node["output"] = i, op.outputs[0]
                owner[op.outputs[0]] = ("call", index)

    def pool_at(i: int) -> Any:
        """The pooling node whose output operation is ``ops[i]``, registered on first sight; or None."""
        op, found = ops[i], None
        if op.name == "div" and isinstance(op.inputs[0], int) and isinstance(op.inputs[1], _Literal):
            source = producer.get(op.inputs[0])
            if source is not None and ops[source].name == "reduce_window_sum":
                details = _pool_details(ops[source])
                if details is not None and float(op.inputs[1].value) == math.prod(details["window"]):
                    found = (source, "avg_pool", details)
        elif op.name in ("reduce_window_sum", "reduce_window_max"):
            details = _pool_details(op)
            if details is not None:
                found = (i, "sum_pool" if op.name == "reduce_window_sum" else "max_pool", details)
        if found is None:
            return None
        window_op, kind, details = found
        node_id = ("pool", i)
        if node_id not in nodes:
            source_key = ops[window_op].inputs[0]
            nodes[node_id] = {
                "record": ((kind,), kind, details, shapes.get(source_key, ()), shapes[op.outputs[0]]),
                "input": source_key,
                "position": i,
                "output": op.outputs[0],
            }
            owner[op.outputs[0]] = node_id
            pending.append(node_id)
        return node_id

    def walk(key) -> tuple[list[Any], list[int]]:
        """The nodes (or the model input) ``key`` is computed from, and the operations on the way."""
        sources, between, stack, seen = [], [], [key], set()
        while stack:
            key = stack.pop()
            if not isinstance(key, int) or key in seen:
                continue
            seen.add(key)
            if key in owner:
                sources.append(owner[key])
            elif key in input_keys:
                sources.append(INPUT)
            elif key in producer:  # else a parameter or constant
                i = producer[key]
                pool = pool_at(i)
                if pool is not None:
                    sources.append(pool)
                elif ops[i].name != _mark_p.name:  # the input mark of an enclosing layer: opaque
                    between.append(i)
                    stack.extend(reversed(ops[i].inputs))
        return sources, sorted(between)

    seen = {index for kind, index in nodes if kind == "call" and "output" in nodes[kind, index]}
    hidden = [r[0] for i, r in enumerate(recorded) if r is not None and i not in seen]
    if hidden:
        raise ValueError(
            f"the structure graph cannot see layer {interception.site_name(hidden[0])!r}: it is called "
            "inside an operation whose body the graph does not read (lax.cond, lax.while_loop, an "
            "nn.scan or nnx.scan over layers, a custom call, ...), or its output is not an array. Call "
            "the model's layers directly, outside such operations."
        )
    pending = list(nodes)
    for key in outputs:  # pooling after the last layer is a node too
        walk(key)
    edges: dict[Any, tuple[list[Any], list[int]]] = {}
    while pending:
        node_id = pending.pop()
        edges[node_id] = walk(nodes[node_id].get("input"))
    order = sorted(edges, key=lambda node_id: nodes[node_id]["position"])
    index_of = {node_id: i for i, node_id in enumerate(order)}
    calls = []
    for node_id in order:
        node = nodes[node_id]
        sources, between = edges[node_id]
        direct = node.get("input") in owner
        path, kind, module, input_shape, output_shape = node["record"]
        calls.append(
            LayerCall(
                path=path,
                kind=kind,
                module=module,
                input_shape=input_shape,
                output_shape=output_shape,
                fed_by=index_of[owner[node["input"]]] if direct else None,
                sources=tuple(INPUT if s is INPUT else index_of[s] for s in sources),
                ops=tuple(ops[i].name for i in between),
                readers=readers.get(node["output"], 0),
            )
        )
    return calls


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
