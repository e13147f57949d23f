"""CIFAR-10 ResNet-20, QCFS (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar10_resnet20_qcfs.py --workdir runs/cifar10_resnet20_qcfs
    python convert.py --config configs/cifar10_resnet20_qcfs.py --workdir runs/cifar10_resnet20_qcfs

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: QCFS paper (Bu et al., ICLR 2022, L = 4), test accuracy % — ANN / SNN T=2 / 4 / 8 / 16 / 32:
91.77 / 73.20 / 83.75 / 89.55 / 91.62 / 92.24.
Measured here (shortened): on CIFAR-10 (JPEG) with --config.num_epochs=100, one H100, ~6.5 min
(2026-11-22): ANN 86.21 %; SNN T=1 66.96, T=2 74.02, T=4 80.92, T=8 85.38, T=16 86.98, T=32 87.30.
Augmentation as the reference: random crop (pad 4), flip, AutoAugment (CIFAR10Policy), Cutout 16.
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "resnet20"
    config.method = "qcfs"
    config.levels = 4
    config.learning_rate = 0.1
    config.augment = "crop,flip,autoaugment,cutout"
    return config
