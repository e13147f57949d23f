"""Flax layers and models for conversion: the activation layers that own λ, BatchNorm, the model zoo.

* `snnjax.nn.layers`: Linen activation layers (`ThresholdActivation` with a trainable λ, parameter-free
  `Activation`), BatchNorm and its folded form, the convolution implementations.
* `snnjax.nn.models`: VGG-16, ResNet-18/20/34 and the small CNNs, built from those layers.
* `snnjax.nn.vit`: a small vision transformer quantized for exact conversion (`SignedQCFS`, `Product`).
* `snnjax.nn.nnx_layers`: the Flax NNX twins of the activation layers (public as `snnjax.nnx`).
"""

from snnjax.nn import nnx_layers as nnx_layers
from snnjax.nn.layers import (
    Activation as Activation,
    BatchNorm as BatchNorm,
    Conv as Conv,
    ConvBN as ConvBN,
    FoldedBatchNorm as FoldedBatchNorm,
    Product as Product,
    SignedQCFS as SignedQCFS,
    ThresholdActivation as ThresholdActivation,
    ThresholdParameterization as ThresholdParameterization,
)
from snnjax.nn.models import (
    MODELS as MODELS,
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
    "BatchNorm",
    "Conv",
    "ConvBN",
    "ConvNet",
    "create_model",
    "FoldedBatchNorm",
    "MODELS",
    "nnx_layers",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNet34",
    "Product",
    "SignedQCFS",
    "SmallCNN",
    "ThresholdActivation",
    "ThresholdParameterization",
    "VGG16",
    "ViT",
]
