"""Flax NNX forms of snnjax's activation layers (the implementation: `snnjax.nn.nnx_layers`).

`snnjax.nnx.ThresholdActivation` and `snnjax.nnx.Activation` are the NNX twins of
`snnjax.ThresholdActivation` and `snnjax.Activation`; an NNX model built from them converts like a
Linen one.
"""

from snnjax.nn.nnx_layers import (
    ACTIVATION_LAYERS as ACTIVATION_LAYERS,
    Activation as Activation,
    ThresholdActivation as ThresholdActivation,
)

__all__ = ["ACTIVATION_LAYERS", "Activation", "ThresholdActivation"]
