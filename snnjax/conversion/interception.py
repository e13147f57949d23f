"""Activation sites found by interception: ReLU *function* calls and NNX module calls, in any JAX model.

A model may write its ReLUs as functions (``nn.relu(x)``, ``jax.nn.relu(x)``, ``nnx.relu(x)``: one
``jax.custom_jvp`` object under three names) rather than as snnjax layers. For the duration of one call
of the model, `relu_sites` routes every call of that object through a handler (the converter's
spiking neuron, or the calibration's recorder), the way Google's Qwix intercepts ``jax.nn`` functions:
``custom_jvp.__call__`` is patched, the patch is thread-local in effect (another thread's calls pass
through untouched) and non-recursive (a handler's own ``relu`` calls run as ReLUs).

Each call is a *site*, keyed by the module it is made in and its order there: ``("block1",
"relu_0")`` is the first ReLU call made inside module ``block1`` (a Linen module path, or an NNX
attribute path while `nnx_module_paths` is active), ``("relu_2",)`` the third made outside any
module. A module called twice makes two sites, each its own population of neurons. The key is a
function of the model's code, so the same sites come back on every call: per-site state (a threshold θ)
is kept in the `SITES` collection of the model's variables, nested by that key.

A ReLU called inside a snnjax activation layer is not a site of its own (the layer is the site).

``jax.jit``-decorated functions inside the model are inlined while `relu_sites` is active
(``jax.disable_jit``; handlers run with jit enabled again): a jit cache would otherwise serve a trace
made without the patch (an analog ReLU left in the SNN) or keep the intercepted trace for the user's
next ANN call (spikes in the ANN). A model's own ``lax.scan`` runs unrolled while inlined. A ReLU the
patch cannot see (e.g. in a custom derivative rule) is caught afterwards by
`snnjax.conversion.simulation.analog_calls` and refused, never run analog silently; a snnjax NNX layer reached
through an NNX transform (a copy of the module) is refused too. Sites are batch-major activations:
inside ``jax.vmap`` over examples (or another transform that hides the batch axis) a site is refused,
by the SNN (its input's leading axis is not the batch) and by calibration (its values are not concrete).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

__all__ = [
    "SITES",
    "SiteKey",
    "call_input",
    "function_sites",
    "nnx_module_paths",
    "relu_sites",
    "site_name",
    "watching_nnx_calls",
]

# The variable collection of per-site thresholds: {"block1": {"relu_0": θ}} (θ: [] or [C]).
SITES = "sites"

SiteKey = tuple[Any, ...]  # path parts: str, or int for an NNX list entry
_RELU = jax.nn.relu
_CUSTOM_JVP = type(jax.nn.relu)


def call_input(call: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> tuple[Callable, Any]:
    """``(run, x)`` of a module call: its first input ``x`` and ``run(v)``, the call with ``v`` instead.

    The first input is the first positional argument, else the first keyword argument (a layer
    called as ``Dense(3)(inputs=x)``); the call's other arguments are unchanged in ``run``.
    """
    if args:
        return (lambda v: call(v, *args[1:], **kwargs)), args[0]
    name = next(iter(kwargs))
    return (lambda v: call(**{**kwargs, name: v})), kwargs[name]


def site_name(key: SiteKey) -> str:
    """``("block1", "relu_0")`` → ``"block1/relu_0"``, the name reports and errors use."""
    return "/".join(str(part) for part in key)


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.handlers: list[tuple[Callable[..., Any], dict[SiteKey, int]]] = []
        self.nnx_maps: list[dict[int, SiteKey]] = []  # id(module) → its path, per active model
        self.nnx_stack: list[tuple[SiteKey, Any]] = []  # NNX modules being called, innermost last
        self.layer_handlers: list[Callable[..., Any]] = []
        self.wrappers: list[Callable[..., Any] | None] = []
        self.call_watchers: list[Callable[..., Any]] = []
        self.function_handlers: list[tuple[Callable[..., Any], dict[tuple, int]]] = []
        self.busy = False  # inside a handler: calls pass through


_state = _ThreadState()
_lock = threading.Lock()
_relu_installs = 0
_original_call = _CUSTOM_JVP.__call__  # replaced at each install by what is there then (another patch)
_patched_classes: dict[type, tuple[Any, int]] = {}


def _activation_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(Linen, NNX) snnjax activation layer classes; imported late (they import this module's users)."""
    from snnjax.nn import nnx_layers as snnjax_nnx
    from snnjax.nn.layers import Activation, ThresholdActivation

    return (Activation, ThresholdActivation), snnjax_nnx.ACTIVATION_LAYERS


def _scope() -> SiteKey | None:
    """The innermost module's path; None inside a snnjax activation layer (the layer is the site)."""
    linen_layers, nnx_layers = _activation_classes()
    module = nn.module._context.module_stack[-1]
    if module is not None:
        return None if isinstance(module, linen_layers) else tuple(module.path)
    if _state.nnx_stack:
        path, module = _state.nnx_stack[-1]
        return None if isinstance(module, nnx_layers) else path
    return ()


def _patched_call(self, *args, **kwargs):
    if self is _RELU and _state.handlers and not _state.busy:
        scope = _scope()
        if scope is not None:
            handler, counts = _state.handlers[-1]
            index = counts.get(scope, 0)
            counts[scope] = index + 1
            _state.busy = True
            try:
                with jax.disable_jit(False):
                    return handler((*scope, f"relu_{index}"), *args, **kwargs)
            finally:
                _state.busy = False
    return _original_call(self, *args, **kwargs)


@contextlib.contextmanager
def relu_sites(handler: Callable[[SiteKey, jax.Array], jax.Array]) -> Iterator[None]:
    """Within the block, each ReLU function call ``relu(x)`` of this thread returns ``handler(key, x)``.

    Inner ``jax.jit`` functions are inlined within the block (see the module docstring).

    Args:
      handler: ``(site key, x) -> y``; ``x`` is the ReLU's input, any shape, and ``y`` replaces the
        ReLU's output. Inside the handler ``relu`` is the plain ReLU again.

    Yields:
      Nothing; sites are numbered from 0 on every entry.
    """
    global _relu_installs, _original_call
    with _lock:
        if _relu_installs == 0:
            _original_call = _CUSTOM_JVP.__call__  # another library's patch, if any, stays in the chain
            _CUSTOM_JVP.__call__ = _patched_call
        _relu_installs += 1
    _state.handlers.append((handler, {}))
    try:
        with jax.disable_jit():
            yield
    finally:
        _state.handlers.pop()
        with _lock:
            _relu_installs -= 1
            if _relu_installs == 0:
                _CUSTOM_JVP.__call__ = _original_call


def _wrapped_call(original):
    def call(self, *args, **kwargs):
        path = _state.nnx_maps[-1].get(id(self)) if _state.nnx_maps else None
        _, nnx_layers = _activation_classes()
        if path is None:  # a module of another model or thread, or a copy made by an NNX transform
            if _state.nnx_maps and isinstance(self, nnx_layers) and not _state.busy:
                raise ValueError(
                    f"a snnjax NNX activation layer ({type(self).__name__}) is called on a copy of the "
                    "model's module (an NNX transform: nnx.remat, nnx.jit, nnx.scan, nnx.vmap, or "
                    "nnx.merge inside the model): the converter cannot tell which layer it is and would "
                    "leave it analog. Call the layer directly in the model's __call__."
                )
            return original(self, *args, **kwargs)
        if _state.layer_handlers and not _state.busy and isinstance(self, nnx_layers):
            x = call_input(original, args, kwargs)[1]  # the layer's one input
            _state.busy = True
            try:
                with jax.disable_jit(False):
                    return _state.layer_handlers[-1](self, path, x)
            finally:
                _state.busy = False
        for watcher in _state.call_watchers:
            watcher(self, path, *args)
        wrapper = _state.wrappers[-1] if _state.wrappers else None
        _state.nnx_stack.append((path, self))
        try:
            # The path also names the module's operations in jaxprs and profiles (Linen does this).
            with jax.named_scope(site_name(path) or type(self).__name__):
                if wrapper is None or not (args or kwargs):
                    return original(self, *args, **kwargs)
                return wrapper(self, path, *call_input(functools.partial(original, self), args, kwargs))
        finally:
            _state.nnx_stack.pop()

    call.__wrapped__ = original
    return call


@contextlib.contextmanager
def watching_nnx_calls(watcher: Callable[..., None]) -> Iterator[None]:
    """Within the block, ``watcher(module, path, *args)`` is told of NNX module calls before they run.

    Calls of this thread made under `nnx_module_paths`; told before the module runs, so a call
    that then fails (e.g. on its input's shape) is seen too.
    """
    _state.call_watchers.append(watcher)
    try:
        yield
    finally:
        _state.call_watchers.remove(watcher)


@contextlib.contextmanager
def nnx_module_paths(
    model: nnx.Module,
    layer_handler: Callable[..., jax.Array] | None = None,
    wrapper: Callable[..., Any] | None = None,
) -> Iterator[None]:
    """Within the block, every ``__call__`` of a module of ``model`` (this thread) is known by its path.

    The ``__call__`` of each class in the model's graph is wrapped for the duration: ReLU function
    sites are then keyed by the NNX module they are called in, and with ``layer_handler`` every call of
    a snnjax NNX activation layer (`snnjax.nnx.ACTIVATION_LAYERS`) returns
    ``layer_handler(layer, path, x)`` instead of running the layer.

    Args:
      model: an NNX module (the model being called).
      layer_handler: ``(layer, path, x) -> y`` for snnjax NNX activation layers, or None.
      wrapper: ``(module, path, run, x) -> y`` around every module call: ``x`` is the call's first
        argument (positional, else keyword) and ``run(x)`` makes the call (its other arguments
        unchanged); or None.

    Yields:
      Nothing.
    """
    paths: dict[int, SiteKey] = {}
    classes: set[type] = set()
    for path, module in nnx.iter_modules(model):
        paths.setdefault(id(module), tuple(path))
        classes.update(c for c in type(module).__mro__ if "__call__" in vars(c) and issubclass(c, nnx.Module))
    with _lock:
        for cls in classes:
            original, count = _patched_classes.get(cls, (vars(cls)["__call__"], 0))
            if count == 0:
                cls.__call__ = _wrapped_call(original)
            _patched_classes[cls] = (original, count + 1)
    _state.nnx_maps.append(paths)
    _state.wrappers.append(wrapper)
    if layer_handler is not None:
        _state.layer_handlers.append(layer_handler)
    try:
        yield
    finally:
        if layer_handler is not None:
            _state.layer_handlers.pop()
        _state.nnx_maps.pop()
        _state.wrappers.pop()
        with _lock:
            for cls in classes:
                original, count = _patched_classes.pop(cls)
                if count == 1:
                    cls.__call__ = original
                else:
                    _patched_classes[cls] = (original, count - 1)


# Functions `function_sites` intercepts, by name, and the modules whose attribute of that name a model
# calls (``jax.nn.softmax``, ``nn.softmax``, ``nnx.softmax``: one function object under three names).
SITE_FUNCTIONS = ("softmax", "gelu")
_FUNCTION_NAMESPACES = (jax.nn, nn, nnx)
_function_installs: dict[str, tuple[Callable[..., Any], int]] = {}


def _function_site(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(*args, **kwargs):
        if _state.function_handlers and not _state.busy:
            scope = _scope()
            if scope is not None:
                handler, counts = _state.function_handlers[-1]
                index = counts.get((scope, name), 0)
                counts[(scope, name)] = index + 1
                _state.busy = True
                try:
                    with jax.disable_jit(False):
                        return handler((*scope, f"{name}_{index}"), original, *args, **kwargs)
                finally:
                    _state.busy = False
        return original(*args, **kwargs)

    return call


@contextlib.contextmanager
def function_sites(handler: Callable[..., Any]) -> Iterator[None]:
    """Within the block, each `SITE_FUNCTIONS` call ``f(x, ...)`` returns ``handler(key, f, x, ...)``.

    The functions are found as the attributes ``jax.nn.NAME``, ``flax.linen.NAME`` and
    ``flax.nnx.NAME`` (how models call them; a name imported into a model's own module before the block
    is not seen). Keys are as `relu_sites`' (``("block0", "attention", "softmax_0")``); the patch acts
    on this thread's calls only, and inside ``handler`` the functions are the originals. Inner
    ``jax.jit`` functions are inlined within the block, as in `relu_sites`.

    Args:
      handler: ``(site key, original function, *args, **kwargs) -> output``.

    Yields:
      Nothing; sites are numbered from 0 on every entry.
    """
    with _lock:
        for name in SITE_FUNCTIONS:
            original, count = _function_installs.get(name, (getattr(jax.nn, name), 0))
            if count == 0:
                patched = _function_site(name, original)
                for namespace in _FUNCTION_NAMESPACES:
                    if getattr(namespace, name, None) is original:
                        setattr(namespace, name, patched)
            _function_installs[name] = (original, count + 1)
    _state.function_handlers.append((handler, {}))
    try:
        with jax.disable_jit():  # a jit cache would serve a trace made without the patch (see relu_sites)
            yield
    finally:
        _state.function_handlers.pop()
        with _lock:
            for name in SITE_FUNCTIONS:
                original, count = _function_installs.pop(name)
                if count == 1:
                    for namespace in _FUNCTION_NAMESPACES:
                        if getattr(getattr(namespace, name, None), "__wrapped__", None) is original:
                            setattr(namespace, name, original)
                else:
                    _function_installs[name] = (original, count - 1)
