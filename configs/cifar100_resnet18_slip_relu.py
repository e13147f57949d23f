"""CIFAR-100 ResNet-18, SlipReLU (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar100_resnet18_slip_relu.py --workdir runs/cifar100_resnet18_slip_relu
    python convert.py --config configs/cifar100_resnet18_slip_relu.py --workdir runs/cifar100_resnet18_slip_relu

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: SlipReLU paper (Jiang et al., ICML 2023) reports this setting for c in {0.1, ..., 0.9};
its numbers are not reproduced here yet, so none is quoted. For comparison, QCFS on the same
setting (ANN / T=2 / 4 / 8 / 16 / 32): 78.80 / 70.79 / 75.67 / 78.48 / 79.48 / 79.62.
Augmentation: random crop (pad 4), flip, Cutout 16 (the reference uses AutoAugment on CIFAR-10 only;
add it with --config.augment=crop,flip,autoaugment,cutout).
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar100"
    config.model = "resnet18"
    config.method = "slip_relu"
    config.slip_c = 0.5  # sweep 0.1..0.9 with --config.slip_c
    config.levels = 4
    config.learning_rate = 0.02
    config.augment = "crop,flip,cutout"
    return config
