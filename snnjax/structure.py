"""One walk over a model's structure: the layers it calls, in call order, and which feeds which.

:func:`trace_structure` runs the model abstractly (``jax.eval_shape``, nothing computed) under
``flax.linen.intercept_methods`` and records every call of a synaptic layer (``nn.Conv``, snnjax
``Conv``, ``nn.Dense``), a BatchNorm and a snnjax activation layer, with its module path and which
earlier recorded call produced its input (when the input is that call's output unchanged). Layers are
recognised by their class, never by their name, so the walk works on any Flax Linen model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from snnjax.layers import Conv
from snnjax.simulation import CONVERTIBLE_ACTIVATIONS, inference_kwargs

__all__ = ["LayerCall", "trace_structure"]

KINDS = {
    "conv": (nn.Conv, Conv),
    "dense": (nn.Dense,),
    "batchnorm": (nn.BatchNorm,),
    "activation": CONVERTIBLE_ACTIVATIONS,
}


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One recorded layer call.

    Attributes:
      path: the module path, ``("block", "c1")``.
      kind: ``"conv"``, ``"dense"``, ``"batchnorm"`` or ``"activation"``.
      module: the bound module (its fields, e.g. a BatchNorm's ``epsilon``, can be read).
      input_shape: the shape of its input (batch axis first).
      fed_by: index of the recorded call whose output is this call's input unchanged, or None.
    """

    path: tuple[str, ...]
    kind: str
    module: Any
    input_shape: tuple[int, ...]
    fed_by: int | None

    @property
    def name(self) -> str:
        """The module path as ``"block/c1"``."""
        return "/".join(self.path)


def _kind(module: nn.Module) -> str | None:
    for kind, classes in KINDS.items():
        if isinstance(module, classes):
            return kind
    return None


def trace_structure(model: nn.Module, variables: Mapping[str, Any], inputs: jax.Array) -> list[LayerCall]:
    """The layer calls of ``model`` on ``inputs``, in call order (computes nothing; see module docs).

    Args:
      model: an ANN (any Flax Linen module).
      variables: its variables.
      inputs: an example input ``[B, ...]`` (only its shape and dtype are used).

    Returns:
      The recorded calls.
    """
    calls: list[LayerCall] = []
    outputs: list[Any] = []

    def interceptor(next_fun, args, kwargs, context):
        kind = _kind(context.module) if context.method_name == "__call__" else None
        if kind is None:
            return next_fun(*args, **kwargs)
        x = args[0]
        fed_by = next((i for i, y in enumerate(outputs) if y is x), None)
        output = next_fun(*args, **kwargs)
        calls.append(LayerCall(tuple(context.module.path), kind, context.module, tuple(x.shape), fed_by))
        outputs.append(output)
        return output

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x, **inference_kwargs(model)), variables, inputs)
    outputs.clear()  # abstract values of a finished trace
    return calls
