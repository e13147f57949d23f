"""Each activation site's input and output, recorded while a model runs (ANN or SNN).

The recorder intercepts the same calls the conversion swaps (snnjax activation layers in Linen and
NNX, ReLU function calls) and keeps what flows through them; calibration and the layer reports read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from snnjax.conversion import interception
from snnjax.conversion.frontends import NNXModel, as_model, as_variables
from snnjax.conversion.simulation import CONVERTIBLE_ACTIVATIONS, SpikingNetwork, inference_kwargs

__all__ = ["activation_shapes", "record_activations"]


def record_activations(
    model: Any, variables: Any, inputs: jax.Array
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Applies ``model`` (inference mode) and returns each activation site's input and output.

    Args:
      model: an ANN (a Flax Linen or NNX module, or a function ``apply(params, x)``) or an SNN
        (`snnjax.SpikingNetwork`, run in layer mode).
      variables: its variables (for an NNX module, None: its own state).
      inputs: ``[B, H, W, C]`` for the ANN, time-major ``[T, B, H, W, C]`` for the SNN.

    Returns:
      ``{"stage0_block1/act2": (input, output), ...}`` in call order, keyed by site name (a layer's
      module path; ``"block/relu_0"`` for a ReLU function call); arrays have the site's shape, e.g.
      ``[T, B, H, W, C]`` in the SNN.
    """
    if isinstance(model, SpikingNetwork):
        return model.apply_recorded(variables, inputs, **inference_kwargs(model.ann))[1]
    variables, model = as_variables(model, variables), as_model(model)
    recorded: dict[str, tuple[jax.Array, jax.Array]] = {}

    def linen_layer(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        if isinstance(context.module, CONVERTIBLE_ACTIVATIONS) and context.method_name == "__call__":
            recorded["/".join(context.module.path)] = (args[0], output)
        return output

    def function_site(key, x):
        output = jax.nn.relu(x)
        recorded[interception.site_name(key)] = (x, output)
        return output

    def nnx_layer(layer, path, x):
        output = layer(x)
        recorded[interception.site_name(path)] = (x, output)
        return output

    with nn.intercept_methods(linen_layer), interception.relu_sites(function_site):
        if isinstance(model, NNXModel):
            model.apply(variables, inputs, layer_handler=nnx_layer)
        else:
            model.apply(variables, inputs, **inference_kwargs(model))
    return recorded


def activation_shapes(
    model: nn.Module, variables: Mapping[str, Any], inputs: jax.Array
) -> dict[str, tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]]:
    """`record_activations` traced abstractly: each activation layer's input and output shape.

    Returns:
      ``{module path: (input, output)}`` as ``jax.ShapeDtypeStruct``, in call order; nothing is computed.
    """
    return jax.eval_shape(lambda x: record_activations(model, variables, x), inputs)
