"""ImageNet VGG-16, QCFS (L = 8): the paper setting. NOT RUNNABLE YET.

Command::

    python train.py --config configs/imagenet2012_vgg16_qcfs.py --workdir runs/imagenet2012_vgg16_qcfs

Status: streaming ImageNet input (tfds data_source, random-resized-crop 224) is not implemented;
loading stops at start with a message saying so. The config records the intended hyper-parameters.
Expected result: see the QCFS paper, Table 2 (ImageNet, L = 8).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = "imagenet2012"
    config.model = "vgg16"
    config.method = "qcfs"
    config.levels = 8
    config.num_epochs = 120
    config.learning_rate = 0.1
    config.batch_size = 256
    config.snn_num_steps = 64
    return config
