"""snnjax: train ANNs for spiking conversion and convert them into integrate-and-fire SNNs, in JAX/Flax.

Where to start:

* Convert a model: `snnjax.spiking_model(ann)` runs your Linen, NNX or plain-function model with its
  activations swapped for IF neurons; `snnjax.convert_variables(variables)` turns the ANN's λ into
  θ (and folds BatchNorm); `snnjax.spiking_apply(snn, snn_variables, images, num_steps)` returns
  time-major logits `[T, B, classes]`.
* Train for conversion: build the ANN with `snnjax.ThresholdActivation(fn=snnjax.qcfs)` (or
  `snnjax.nnx.ThresholdActivation`), or run a config: `snnjax-train --config quickstart --workdir W`,
  then `snnjax-convert --workdir W`.
* The pure functions: `snnjax.qcfs`, `snnjax.if_neuron` (`lax.scan` over `[T, B, ...]`).
* Transformers: `snnjax.ViT` quantizes with `snnjax.SignedQCFS`; `snnjax.spiking_transformer(ann)`
  and `snnjax.transformer_apply` run it as an SNN whose accumulated output equals the ANN's.

The namespaces, from the bottom up (each imports only the ones before it): `snnjax.core` (activations,
neurons, surrogates), `snnjax.nn` (layers, models; `snnjax.nnx` for Flax NNX), `snnjax.conversion`
(structure, transforms, simulation, calibration), `snnjax.analysis` (reports, NeuroBench metrics) and
`snnjax.io` (PyTorch checkpoints, NIR, `jax.export`, data), `snnjax.experiment` (configs, training,
the conversion run). Documentation: the README and the docs site (`bash scripts/docs.sh serve`).
"""

from snnjax import nnx as nnx
from snnjax.analysis.reports import (
    energy_report as energy_report,
    linear_layer_costs as linear_layer_costs,
    spiking_layer_report as spiking_layer_report,
)
from snnjax.conversion.calibration import calibrate_snn as calibrate_snn
from snnjax.conversion.recording import record_activations as record_activations
from snnjax.conversion.simulation import (
    SpikingNetwork as SpikingNetwork,
    cumulative_mean_logits as cumulative_mean_logits,
    spiking_apply as spiking_apply,
    spiking_apply_sequence as spiking_apply_sequence,
    spiking_model as spiking_model,
)
from snnjax.conversion.transformer import (
    spiking_transformer as spiking_transformer,
    transformer_apply as transformer_apply,
)
from snnjax.conversion.transforms import (
    balance_weights as balance_weights,
    calibrate_thresholds as calibrate_thresholds,
    convert_variables as convert_variables,
    fold_batchnorm as fold_batchnorm,
)
from snnjax.core import deprecation, surrogates as surrogates
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
    if_neuron as if_neuron,
    if_neuron_with_state as if_neuron_with_state,
    if_step as if_step,
    integrate_then_fire as integrate_then_fire,
    signed_if_neuron as signed_if_neuron,
)
from snnjax.io.export import export_snn as export_snn, import_snn as import_snn
from snnjax.io.nir import export_nir as export_nir, import_nir as import_nir
from snnjax.io.torch_checkpoints import (
    import_torch_state_dict as import_torch_state_dict,
    read_torch_checkpoint as read_torch_checkpoint,
)
from snnjax.nn.layers import (
    Activation as Activation,
    BatchNorm as BatchNorm,
    ConvBN as ConvBN,
    FoldedBatchNorm as FoldedBatchNorm,
    SignedQCFS as SignedQCFS,
    ThresholdActivation as ThresholdActivation,
    ThresholdParameterization as ThresholdParameterization,
)
from snnjax.nn.models import (
    VGG16 as VGG16,
    ConvNet as ConvNet,
    ResNet as ResNet,
    ResNet18 as ResNet18,
    ResNet20 as ResNet20,
    ResNet34 as ResNet34,
    SmallCNN as SmallCNN,
    create_model as create_model,
)
from snnjax.nn.vit import ViT as ViT

__all__ = [
    "Activation",
    "balance_weights",
    "BatchNorm",
    "calibrate_snn",
    "calibrate_thresholds",
    "clip_inclusive",
    "ConvBN",
    "convert_variables",
    "ConvNet",
    "create_model",
    "cumulative_mean_logits",
    "energy_report",
    "export_nir",
    "export_snn",
    "floor_ste",
    "fold_batchnorm",
    "FoldedBatchNorm",
    "if_neuron",
    "if_neuron_with_state",
    "if_step",
    "import_nir",
    "import_snn",
    "import_torch_state_dict",
    "integrate_then_fire",
    "linear_layer_costs",
    "nnx",
    "qcfs",
    "QCFSOrder",
    "read_torch_checkpoint",
    "record_activations",
    "relu",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNet34",
    "signed_if_neuron",
    "slip_relu",
    "SignedQCFS",
    "SmallCNN",
    "spiking_apply",
    "spiking_apply_sequence",
    "spiking_layer_report",
    "spiking_model",
    "SpikingNetwork",
    "spiking_transformer",
    "surrogates",
    "threshold_relu",
    "ThresholdActivation",
    "ThresholdParameterization",
    "transformer_apply",
    "VGG16",
    "ViT",
]

__version__ = "0.1.0"

# Renamed for one grammar (verbs; IO pairs export_X / import_X); the old names warn.
__getattr__ = deprecation.renamed(
    "snnjax",
    {
        "ann_to_snn_variables": "convert_variables",
        "load_exported": "import_snn",
        "from_torch_state_dict": "import_torch_state_dict",
    },
    globals(),
)
