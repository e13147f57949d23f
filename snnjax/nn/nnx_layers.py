"""Flax NNX forms of snnjax's activation layers.

The NNX twins of `snnjax.nn.layers.ThresholdActivation` and `snnjax.nn.layers.Activation`: an
NNX model built from them converts like a Linen one (`snnjax.spiking_model` on the module, its
variables from `snnjax.convert_variables`). The ANN runs the layer's pure function; the SNN
runs the spiking neuron in its place, with θ read from the layer's ``threshold`` parameter (or, for a
parameter-free `Activation`, from the calibrated thresholds in the variables' ``"sites"``).

Example (QCFS, L = 4):

```python
import functools
from flax import nnx
import snnjax, snnjax.nnx

class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.act = snnjax.nnx.ThresholdActivation(functools.partial(snnjax.qcfs, levels=4))
        self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(self.act(self.conv(x)).mean(axis=(1, 2)))
```
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from snnjax.nn.layers import ThresholdParameterization, threshold_from_param, threshold_to_param

__all__ = ["ACTIVATION_LAYERS", "Activation", "ThresholdActivation"]


class ThresholdActivation(nnx.Module):
    """An activation layer that owns a trainable threshold λ (an ``nnx.Param`` named ``threshold``).

    Args:
      fn: pure function ``fn(x, threshold) -> y`` with ``y.shape == x.shape``, e.g.
        ``functools.partial(snnjax.qcfs, levels=4)``, ``snnjax.threshold_relu`` or
        ``functools.partial(snnjax.slip_relu, levels=4, slope=0.5)``.
      threshold_init: initial λ.
      parameterization: how λ is stored (`snnjax.nn.layers.ThresholdParameterization`).
      num_features: one λ per channel (the last axis, of this size); None: one scalar λ.
    """

    def __init__(
        self,
        fn: Callable[[jax.Array, jax.Array], jax.Array],
        threshold_init: float = 8.0,
        parameterization: str = ThresholdParameterization.IDENTITY,
        num_features: int | None = None,
    ) -> None:
        self.fn = fn
        self.parameterization = str(ThresholdParameterization(parameterization))
        shape = () if num_features is None else (num_features,)
        init = threshold_to_param(threshold_init, self.parameterization)
        self.threshold = nnx.Param(jnp.full(shape, init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies ``fn`` with this layer's λ; ``x`` is ``[..., C]``, returned with its shape."""
        threshold = threshold_from_param(self.threshold[...], self.parameterization)
        return self.fn(x, threshold.astype(x.dtype))


class Activation(nnx.Module):
    """A parameter-free activation layer (a plain ReLU): its θ comes from calibration.

    `snnjax.calibrate_thresholds` stores θ in the variables' ``"sites"`` collection, under this
    layer's path; the layer itself stays parameter-free.

    Args:
      fn: the elementwise activation, e.g. ``snnjax.relu``.
    """

    def __init__(self, fn: Callable[[jax.Array], jax.Array]) -> None:
        self.fn = fn

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies ``fn`` elementwise."""
        return self.fn(x)


# The NNX layers the converter turns into spiking neurons.
ACTIVATION_LAYERS = (ThresholdActivation, Activation)
