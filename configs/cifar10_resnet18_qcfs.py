"""CIFAR-10 ResNet-18, QCFS (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar10_resnet18_qcfs.py --workdir runs/cifar10_resnet18_qcfs
    python convert.py --config configs/cifar10_resnet18_qcfs.py --workdir runs/cifar10_resnet18_qcfs

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: QCFS paper (Bu et al., ICLR 2022, L = 4), test accuracy % — ANN / SNN T=2 / 4 / 8 / 16 / 32:
96.04 / 75.44 / 90.43 / 94.82 / 95.92 / 96.08.
Augmentation as the reference: random crop (pad 4), flip, AutoAugment (CIFAR10Policy), Cutout 16.
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "resnet18"
    config.method = "qcfs"
    config.levels = 4
    config.learning_rate = 0.1
    config.augment = "crop,flip,autoaugment,cutout"
    return config
