"""snnjax: train ANNs for spiking conversion and convert them into integrate-and-fire SNNs."""

from snnjax import nnx as nnx, surrogates as surrogates
from snnjax.activations import (
    QCFSOrder as QCFSOrder,
    clip_inclusive as clip_inclusive,
    floor_ste as floor_ste,
    qcfs as qcfs,
    relu as relu,
    slip_relu as slip_relu,
    threshold_relu as threshold_relu,
)
from snnjax.conversion import (
    ann_to_snn_variables as ann_to_snn_variables,
    balance_weights as balance_weights,
    calibrate_thresholds as calibrate_thresholds,
    fold_batchnorm as fold_batchnorm,
    spiking_activation as spiking_activation,
)
from snnjax.export import (
    export_snn as export_snn,
    load_exported as load_exported,
)
from snnjax.layers import (
    Activation as Activation,
    BatchNorm as BatchNorm,
    ConvBN as ConvBN,
    FoldedBatchNorm as FoldedBatchNorm,
    ThresholdActivation as ThresholdActivation,
    ThresholdParameterization as ThresholdParameterization,
)
from snnjax.models import (
    VGG16 as VGG16,
    ConvNet as ConvNet,
    ResNet as ResNet,
    ResNet18 as ResNet18,
    ResNet20 as ResNet20,
    ResNet34 as ResNet34,
    SmallCNN as SmallCNN,
    TinyCNN as TinyCNN,
    create_model as create_model,
)
from snnjax.neurons import (
    if_neuron as if_neuron,
    if_neuron_with_state as if_neuron_with_state,
    if_step as if_step,
    integrate_then_fire as integrate_then_fire,
    signed_if_neuron as signed_if_neuron,
)
from snnjax.reports import (
    energy_report as energy_report,
    linear_layer_costs as linear_layer_costs,
    record_activations as record_activations,
    spiking_layer_report as spiking_layer_report,
)
from snnjax.simulation import (
    SpikingNetwork as SpikingNetwork,
    cumulative_mean_logits as cumulative_mean_logits,
    spiking_apply as spiking_apply,
    spiking_apply_sequence as spiking_apply_sequence,
    spiking_model as spiking_model,
)
from snnjax.torch_checkpoints import (
    from_torch_state_dict as from_torch_state_dict,
    read_torch_checkpoint as read_torch_checkpoint,
)

__version__ = "0.1.0"
