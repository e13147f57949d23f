"""CIFAR-100 ResNet-18, QCFS (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar100_resnet18_qcfs.py --workdir runs/cifar100_resnet18_qcfs
    python convert.py --config configs/cifar100_resnet18_qcfs.py --workdir runs/cifar100_resnet18_qcfs

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: QCFS paper (Bu et al., ICLR 2022, L = 4), test accuracy % — ANN / SNN T=2 / 4 / 8 / 16 / 32:
78.80 / 70.79 / 75.67 / 78.48 / 79.48 / 79.62.
Augmentation: random crop (pad 4), flip, Cutout 16 (the reference uses AutoAugment on CIFAR-10 only;
add it with --config.augment=crop,flip,autoaugment,cutout).
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar100"
    config.model = "resnet18"
    config.method = "qcfs"
    config.levels = 4
    config.learning_rate = 0.02
    config.augment = "crop,flip,cutout"
    return config
