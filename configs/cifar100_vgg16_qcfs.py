"""CIFAR-100 VGG-16, QCFS (L = 4): the paper setting.

Command (needs the dataset: tensorflow-datasets, or --config.data_dir with the published archive)::

    python train.py --config configs/cifar100_vgg16_qcfs.py --workdir runs/cifar100_vgg16_qcfs
    python convert.py --config configs/cifar100_vgg16_qcfs.py --workdir runs/cifar100_vgg16_qcfs

Runtime: 300 epochs × 50,000 images; see benchmarks/results for measured training images/s per
model and machine (divide 1.5e7 images by it for the estimate).
Expected result: QCFS paper (Bu et al., ICLR 2022, L = 4), test accuracy % — ANN / SNN T=2 / 4 / 8 / 16 / 32:
76.28 / 63.79 / 69.62 / 73.96 / 76.24 / 77.01.
Augmentation: random crop (pad 4), flip, Cutout 16 (the reference uses AutoAugment on CIFAR-10 only;
add it with --config.augment=crop,flip,autoaugment,cutout).
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar100"
    config.model = "vgg16"
    config.method = "qcfs"
    config.levels = 4
    config.learning_rate = 0.02
    config.augment = "crop,flip,cutout"
    return config
