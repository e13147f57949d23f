"""MNIST, small CNN, QCFS (L = 4), on a CPU.

Command::

    python train.py --config configs/mnist_cnn_qcfs.py --workdir runs/mnist --config.data_dir=../shared/data/mnist
    python convert.py --config configs/mnist_cnn_qcfs.py --workdir runs/mnist --config.data_dir=../shared/data/mnist

Runtime and expected result: measured below (2-core AVX CPU).
"""

from configs import default


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
