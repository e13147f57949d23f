"""The pure functions everything else builds on: activations, spiking neurons, surrogate gradients.

* `snnjax.core.activations`: the ANN activations trained for conversion (QCFS, SlipReLU, threshold
  ReLU), elementwise on any shape.
* `snnjax.core.neurons`: integrate-and-fire neurons on time-major arrays `[T, B, ...]` (a `lax.scan`
  over the first axis, the membrane potential an explicit carry).
* `snnjax.core.surrogates`: surrogate gradients for training through spikes.
* `snnjax.core.transformer_ops`: the spiking-transformer primitives (signed count-bounded IF,
  temporal difference, product of two spike trains).
* `snnjax.core.parallel`: the 1-D data mesh and batch sharding every runner uses.

Nothing in `snnjax.core` imports the rest of snnjax.
"""

from snnjax.core import parallel as parallel, surrogates as surrogates
from snnjax.core.activations import (
    QCFSOrder as QCFSOrder,
    clip_inclusive as clip_inclusive,
    floor_ste as floor_ste,
    qcfs as qcfs,
    relu as relu,
    slip_relu as slip_relu,
    threshold_relu as threshold_relu,
)
from snnjax.core.neurons import (
    fixed_point_if_neuron as fixed_point_if_neuron,
    if_neuron as if_neuron,
    if_neuron_with_state as if_neuron_with_state,
    if_step as if_step,
    initial_membrane as initial_membrane,
    integrate_then_fire as integrate_then_fire,
    multi_spike_if_neuron as multi_spike_if_neuron,
    signed_if_neuron as signed_if_neuron,
)
from snnjax.core.transformer_ops import (
    signed_quantizer as signed_quantizer,
    spike_train_product as spike_train_product,
    st_bif_neuron as st_bif_neuron,
    temporal_difference as temporal_difference,
)

__all__ = [
    "fixed_point_if_neuron",
    "clip_inclusive",
    "floor_ste",
    "if_neuron",
    "if_neuron_with_state",
    "if_step",
    "initial_membrane",
    "integrate_then_fire",
    "multi_spike_if_neuron",
    "parallel",
    "qcfs",
    "QCFSOrder",
    "relu",
    "signed_if_neuron",
    "signed_quantizer",
    "slip_relu",
    "spike_train_product",
    "st_bif_neuron",
    "surrogates",
    "temporal_difference",
    "threshold_relu",
]
