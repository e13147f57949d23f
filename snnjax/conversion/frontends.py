"""Every model frontend as one thing: ``apply(variables, x, *args, **kwargs)``.

The converter runs a model by calling it once, with its activation sites intercepted. A Flax Linen
module already has that form (``module.apply``). This module gives it to the other two frontends:

* **Flax NNX**: `NNXModel` holds the graph definition of an NNX module in inference mode (its
  BatchNorm layers use their running statistics, dropout is off); its variables are
  ``{"nnx": nnx.State}`` (plus ``"sites"``, the calibrated thresholds). Applying merges the state into
  a fresh module and calls it with `snnjax.conversion.interception.nnx_module_paths` active, so sites are
  keyed by NNX attribute paths and snnjax NNX activation layers can be swapped.
* **A plain JAX function** ``fn(params, x)`` (hand-written, Equinox-style): `FunctionModel`;
  its variables are ``{"params": params}`` (plus ``"sites"``).

`as_model` picks the frontend of a model, `as_variables` puts its variables in that form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
from flax import nnx, traverse_util

from snnjax.conversion.interception import SITES, nnx_module_paths

__all__ = [
    "NNX",
    "FunctionModel",
    "NNXModel",
    "as_model",
    "as_variables",
    "flat_parameters",
    "model_name",
    "sites_of",
]

NNX = "nnx"  # the variables key of an NNX model's state


@dataclasses.dataclass(frozen=True, eq=False)
class NNXModel:
    """An NNX module as ``apply(variables, x)``; build it with `as_model`.

    Compared and hashed by identity (a module's graph may hold unhashable static attributes), so it
    can be a static ``jit`` argument: keep one instance to reuse compilations.

    Attributes:
      graphdef: ``nnx.split`` of the module in inference mode.
      name: the module's class name, for messages.
    """

    graphdef: Any
    name: str

    def module(self, variables: Mapping[str, Any]) -> nnx.Module:
        """A module with ``variables["nnx"]`` as its state (a new object; ``variables`` is not changed)."""
        return nnx.merge(self.graphdef, variables[NNX])

    def apply(
        self,
        variables: Mapping[str, Any],
        x: Any,
        *args: Any,
        layer_handler: Callable[..., Any] | None = None,
        wrapper: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Calls the module on ``x`` (any pytree the module takes) with sites keyed by NNX paths.

        Args:
          variables: ``{"nnx": state, ...}``.
          x: the module's input.
          *args: passed to the module's ``__call__``.
          layer_handler: replaces each snnjax NNX activation layer call (see
            `snnjax.conversion.interception.nnx_module_paths`).
          wrapper: runs around every module call (same).
          **kwargs: passed to the module's ``__call__``.
        """
        module = self.module(variables)
        with nnx_module_paths(module, layer_handler, wrapper):
            return module(x, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class FunctionModel:
    """A plain JAX function ``fn(params, x, *args, **kwargs)`` as ``apply({"params": params}, x)``.

    Attributes:
      fn: the model function (pure; its ReLU function calls are its activation sites).
    """

    fn: Callable[..., Any]

    @property
    def name(self) -> str:
        """The function's name, for messages."""
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def apply(self, variables: Mapping[str, Any], x: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(variables["params"], x, *args, **kwargs)``."""
        return self.fn(variables["params"], x, *args, **kwargs)


Model = nn.Module | NNXModel | FunctionModel


def _inference_view(module: nnx.Module) -> nnx.Module:
    """A twin of ``module`` in inference mode, sharing its arrays; ``module`` itself is not changed."""
    graphdef, state = nnx.split(module)
    twin = nnx.merge(graphdef, state)
    twin.eval()
    return twin


def as_model(model: Any) -> Model:
    """The frontend of ``model``: a Linen module as it is, an NNX module or a function wrapped.

    Raises:
      TypeError: for anything else (naming what was given).
    """
    if isinstance(model, nn.Module | NNXModel | FunctionModel):
        return model
    if isinstance(model, nnx.Module):
        return NNXModel(nnx.split(_inference_view(model))[0], type(model).__name__)
    if isinstance(model, type):
        raise TypeError(
            f"{model.__name__} is a class: pass a model instance ({model.__name__}(...)), not the class."
        )
    if callable(model):
        return FunctionModel(model)
    raise TypeError(
        f"cannot convert a {type(model).__name__}: pass a Flax Linen module, a Flax NNX module, or a "
        "function apply(params, x)."
    )


def as_variables(model: Any, variables: Any) -> dict[str, Any]:
    """``variables`` in the form ``as_model(model).apply`` reads.

    Args:
      model: the model (any frontend).
      variables: Linen variables; for NNX, None (the module's own state), an ``nnx.State`` or the
        ``{"nnx": ...}`` dict; for a function, its params (any pytree) or the ``{"params": ...,
        "sites": ...}`` dict (params that are a dict with exactly a ``"params"`` key, such as Linen
        variables, are read as that form: pass ``{"params": variables}``).

    Raises:
      ValueError: for NNX variables that are neither.
    """
    if isinstance(model, nnx.Module) or isinstance(model, NNXModel):
        if variables is None and isinstance(model, nnx.Module):
            return {NNX: nnx.state(_inference_view(model))}
        if variables is None:
            raise ValueError("an NNXModel has no state of its own: pass its variables {'nnx': state}.")
        if isinstance(variables, nnx.State):
            return {NNX: variables}
        if isinstance(variables, Mapping) and NNX in variables:
            return dict(variables)
        raise ValueError(
            f"variables of an NNX model are None (the module's own state), an nnx.State or a "
            f"{{'nnx': state, 'sites': ...}} dict; got a {type(variables).__name__}."
        )
    if isinstance(model, FunctionModel) or (callable(model) and not isinstance(model, nn.Module)):
        # Already in this form: {"params": ...} (and "sites"). Params that are themselves such a dict
        # (e.g. a function over Linen variables {"params": ...}) must be passed wrapped once more.
        if isinstance(variables, Mapping) and "params" in variables and set(variables) <= {"params", SITES}:
            return dict(variables)
        return {"params": variables}
    return dict(variables)


def model_name(model: Any) -> str:
    """The class (or function) name of any frontend's model, for messages."""
    if isinstance(model, NNXModel | FunctionModel):
        return model.name
    return type(model).__name__


def flat_parameters(variables: Mapping[str, Any]) -> dict[tuple, Any]:
    """A Linen model's ``params`` or an NNX model's state as ``{path tuple: array}``.

    Layer weights are then found by module path, e.g. ``(*call.path, "kernel")``, whatever the frontend.
    """
    tree = nnx.to_pure_dict(variables[NNX]) if NNX in variables else variables["params"]
    return traverse_util.flatten_dict(dict(tree))


def sites_of(variables: Mapping[str, Any]) -> Mapping[str, Any]:
    """The calibrated per-site thresholds of ``variables`` (``{}`` if none)."""
    return variables.get(SITES, {}) or {}
