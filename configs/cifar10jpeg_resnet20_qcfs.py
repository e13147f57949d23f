"""CIFAR-10 (JPEG), ResNet-20, QCFS (L = 4), a short schedule (GPU recommended).

Data: ``../shared/data/cifar10-jpeg`` (all 60,000 CIFAR-10 images re-encoded as JPEG q≈75, so results
are "CIFAR-10 (JPEG)", not comparable digit for digit with CIFAR-10).

Command::

    python train.py --config configs/cifar10jpeg_resnet20_qcfs.py --workdir runs/c10jpeg_r20 --config.data_dir=../shared/data/cifar10-jpeg
    python convert.py --config configs/cifar10jpeg_resnet20_qcfs.py --workdir runs/c10jpeg_r20 --config.data_dir=../shared/data/cifar10-jpeg

Runtime: ~3.5 min on one H100 (2026-11-22, 20–45k img/s, data decoding included); impractical on a
2-core CPU (~120 img/s, ~7 min per epoch).
Expected result (seed 42, measured on the H100): ANN 86.21 %; SNN T=1 53.45, T=2 62.98, T=4 (= L) 74.56,
T=8 83.33, T=16 86.09, T=32 86.95. With --config.method=slip_relu (c = 0.5): ANN 87.18 %; SNN 48.42 /
56.09 / 66.67 / 78.31 / 85.16 / 87.12. (QCFS paper, CIFAR-10 ResNet-20, 300 epochs with AutoAugment:
ANN 91.77, T=2 73.20, T=4 83.75, T=8 89.55, T=16 91.62, T=32 92.24.)
"""

from snnjax.configs import default


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
