"""CIFAR-10 ResNet-20, SlipReLU (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar10_resnet20_slip_relu.py --workdir runs/cifar10_resnet20_slip_relu
    python convert.py --config configs/cifar10_resnet20_slip_relu.py --workdir runs/cifar10_resnet20_slip_relu

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: SlipReLU paper (Jiang et al., ICML 2023) reports this setting for c in {0.1, ..., 0.9};
its numbers are not reproduced here yet, so none is quoted. For comparison, QCFS on the same
setting (ANN / T=2 / 4 / 8 / 16 / 32): 91.77 / 73.20 / 83.75 / 89.55 / 91.62 / 92.24.
Augmentation as the reference: random crop (pad 4), flip, AutoAugment (CIFAR10Policy), Cutout 16.
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "resnet20"
    config.method = "slip_relu"
    config.slip_c = 0.5  # sweep 0.1..0.9 with --config.slip_c
    config.levels = 4
    config.learning_rate = 0.1
    config.augment = "crop,flip,autoaugment,cutout"
    return config
