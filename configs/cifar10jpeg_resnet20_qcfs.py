"""CIFAR-10 (JPEG), ResNet-20, QCFS (L = 4), a short schedule (GPU recommended).

Data: ``../shared/data/cifar10-jpeg`` (all 60,000 CIFAR-10 images re-encoded as JPEG q≈75, so results
are "CIFAR-10 (JPEG)", not comparable digit for digit with CIFAR-10).

Command::

    python train.py --config configs/cifar10jpeg_resnet20_qcfs.py --workdir runs/c10jpeg_r20 --config.data_dir=../shared/data/cifar10-jpeg
    python convert.py --config configs/cifar10jpeg_resnet20_qcfs.py --workdir runs/c10jpeg_r20 --config.data_dir=../shared/data/cifar10-jpeg

Runtime and expected result: RESULT_TBD
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "resnet20"
    config.method = "qcfs"
    config.levels = 4
    config.num_epochs = 60
    config.batch_size = 128
    config.learning_rate = 0.1
    config.augment = "crop,flip,cutout"
    config.snn_num_steps = 32
    return config
