"""ANN → SNN: find a model's structure, transform its variables, run it with spiking neurons.

* `snnjax.conversion.interception` / `frontends`: how a Linen, NNX or plain-function model's layer and
  activation calls are intercepted and named (module path + call order).
* `snnjax.conversion.structure`: one structure graph of any model, read from its jaxpr.
* `snnjax.conversion.transforms`: parameter-tree transforms (λ → θ, BatchNorm folding, weight
  balancing, data-based thresholds).
* `snnjax.conversion.simulation`: the same model with its activations swapped for IF neurons, run over
  time (layer mode: one `lax.scan` per layer; step mode: one scan over the network).
* `snnjax.conversion.recording`: each activation site's input and output while a model runs.
* `snnjax.conversion.calibration`, `low_latency`: training-free low-latency neurons and calibration.
* `snnjax.conversion.transformer`: a quantized transformer run as an SNN of increments (ST-BIF
  neurons, spike-train products, analog softmax / LayerNorm), exact once settled.
"""

from snnjax.conversion.calibration import calibrate_snn as calibrate_snn
from snnjax.conversion.recording import record_activations as record_activations
from snnjax.conversion.simulation import (
    SpikingNetwork as SpikingNetwork,
    cumulative_mean_logits as cumulative_mean_logits,
    spiking_apply as spiking_apply,
    spiking_apply_sequence as spiking_apply_sequence,
    spiking_model as spiking_model,
)
from snnjax.conversion.structure import LayerCall as LayerCall, trace_structure as trace_structure
from snnjax.conversion.transformer import (
    SpikingTransformer as SpikingTransformer,
    accumulated_outputs as accumulated_outputs,
    spiking_transformer as spiking_transformer,
    transformer_apply as transformer_apply,
)
from snnjax.conversion.transforms import (
    balance_weights as balance_weights,
    calibrate_thresholds as calibrate_thresholds,
    convert_variables as convert_variables,
    fold_batchnorm as fold_batchnorm,
)
from snnjax.core import deprecation

__all__ = [
    "accumulated_outputs",
    "balance_weights",
    "calibrate_snn",
    "calibrate_thresholds",
    "convert_variables",
    "cumulative_mean_logits",
    "fold_batchnorm",
    "LayerCall",
    "record_activations",
    "spiking_apply",
    "spiking_apply_sequence",
    "spiking_model",
    "SpikingNetwork",
    "SpikingTransformer",
    "spiking_transformer",
    "trace_structure",
    "transformer_apply",
]

# Renamed for one grammar (verbs); the old name warns.
__getattr__ = deprecation.renamed(
    "snnjax.conversion", {"ann_to_snn_variables": "convert_variables"}, globals()
)
