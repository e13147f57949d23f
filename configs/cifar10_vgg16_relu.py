"""CIFAR-10 VGG-16, plain ReLU ANN + data-based threshold balancing (the classic baseline).

Command::

    python train.py --config configs/cifar10_vgg16_relu.py --workdir runs/cifar10_vgg16_relu
    python convert.py --config configs/cifar10_vgg16_relu.py --workdir runs/cifar10_vgg16_relu

Conversion sets each layer's threshold to the 99.9th percentile of its activations on 1,024 training
images, v(0) = θ/2. Runtime: as configs/cifar10_vgg16_qcfs.py. Expected result: plain conversion needs
long simulations: ANN accuracy is reached only at T in the hundreds (run with
--config.snn_num_steps=256); no paper number is quoted.
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "vgg16"
    config.method = "relu"
    config.learning_rate = 0.1
    config.augment = "crop,flip,autoaugment,cutout"
    config.snn_num_steps = 256
    return config
