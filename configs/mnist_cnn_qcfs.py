"""MNIST, small CNN, QCFS (L = 4), on a CPU.

Command::

    python train.py --config configs/mnist_cnn_qcfs.py --workdir runs/mnist --config.data_dir=../shared/data/mnist
    python convert.py --config configs/mnist_cnn_qcfs.py --workdir runs/mnist --config.data_dir=../shared/data/mnist

Runtime (2-core AVX CPU, 2026-11-22): training 4 epochs ~9.5 min (~460 img/s); conversion + SNN
evaluation of the 10,000 test images for T = 1..32 ~5 min (peak memory 5.3 GB).
Expected result (seed 42): ANN 99.32 %; SNN T=1 91.39, T=2 98.45, T=4 (= L) 99.28, T=8 99.29,
T=16 99.39, T=32 99.34.
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "mnist"
    config.model = "small_cnn"
    config.method = "qcfs"
    config.levels = 4
    config.num_epochs = 4
    config.batch_size = 128
    config.learning_rate = 0.1
    config.threshold_init = 2.0  # normalized MNIST pixels lie in [-0.42, 2.8]
    config.augment = "crop"  # small shifts; no flips for digits
    config.crop_padding = 2
    config.snn_num_steps = 32
    return config
