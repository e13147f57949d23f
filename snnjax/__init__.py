"""snnjax: train ANNs for spiking conversion and convert them into integrate-and-fire SNNs."""

from snnjax.activations import (
    QCFSOrder as QCFSOrder,
)
from snnjax.activations import (
    clip_inclusive as clip_inclusive,
)
from snnjax.activations import (
    floor_ste as floor_ste,
)
from snnjax.activations import (
    qcfs as qcfs,
)
from snnjax.activations import (
    relu as relu,
)
from snnjax.activations import (
    slip_relu as slip_relu,
)
from snnjax.activations import (
    threshold_relu as threshold_relu,
)
from snnjax.conversion import (
    ann_to_snn_variables as ann_to_snn_variables,
)
from snnjax.conversion import (
    balance_weights as balance_weights,
)
from snnjax.conversion import (
    calibrate_thresholds as calibrate_thresholds,
)
from snnjax.conversion import (
    cumulative_mean_logits as cumulative_mean_logits,
)
from snnjax.conversion import (
    fold_batchnorm as fold_batchnorm,
)
from snnjax.conversion import (
    spiking_activation as spiking_activation,
)
from snnjax.conversion import (
    spiking_apply as spiking_apply,
)
from snnjax.conversion import (
    spiking_model as spiking_model,
)
from snnjax.interop import (
    from_torch_state_dict as from_torch_state_dict,
)
from snnjax.interop import (
    read_torch_checkpoint as read_torch_checkpoint,
)
from snnjax.layers import (
    Activation as Activation,
)
from snnjax.layers import (
    BatchNorm as BatchNorm,
)
from snnjax.layers import (
    ConvBN as ConvBN,
)
from snnjax.layers import (
    FoldedBatchNorm as FoldedBatchNorm,
)
from snnjax.layers import (
    ThresholdActivation as ThresholdActivation,
)
from snnjax.layers import (
    ThresholdParameterization as ThresholdParameterization,
)
from snnjax.models import (
    VGG16 as VGG16,
)
from snnjax.models import (
    ConvNet as ConvNet,
)
from snnjax.models import (
    ResNet as ResNet,
)
from snnjax.models import (
    ResNet18 as ResNet18,
)
from snnjax.models import (
    ResNet20 as ResNet20,
)
from snnjax.models import (
    ResNet34 as ResNet34,
)
from snnjax.models import (
    SmallCNN as SmallCNN,
)
from snnjax.models import (
    TinyCNN as TinyCNN,
)
from snnjax.models import (
    create_model as create_model,
)
from snnjax.neurons import (
    if_neuron as if_neuron,
)
from snnjax.neurons import (
    if_neuron_with_state as if_neuron_with_state,
)
from snnjax.neurons import (
    if_step as if_step,
)
from snnjax.neurons import (
    integrate_then_fire as integrate_then_fire,
)
from snnjax.neurons import (
    signed_if_neuron as signed_if_neuron,
)
from snnjax.reports import (
    energy_report as energy_report,
)
from snnjax.reports import (
    linear_layer_costs as linear_layer_costs,
)
from snnjax.reports import (
    record_activations as record_activations,
)
from snnjax.reports import (
    spiking_layer_report as spiking_layer_report,
)

__version__ = "0.1.0"
