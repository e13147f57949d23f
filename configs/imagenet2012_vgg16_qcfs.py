"""ImageNet VGG-16, QCFS (L = 8), streamed input.

Command (ImageNet as image folders ``DIR/train/<wnid>/*.JPEG`` and ``DIR/val/<wnid>/*.JPEG``; without
``--config.data_dir`` it reads tensorflow-datasets' prepared ``imagenet2012`` through ``data_source``)::

    python train.py --config configs/imagenet2012_vgg16_qcfs.py --workdir runs/imagenet2012_vgg16_qcfs --config.data_dir=DIR
    python convert.py --config configs/imagenet2012_vgg16_qcfs.py --workdir runs/imagenet2012_vgg16_qcfs --config.data_dir=DIR

Input: random-resized crop 224 + flip for training, resize 256 + centre crop 224 for evaluation, decoded
on host threads (snnjax.io.streaming). Runtime and result: not run here (no ImageNet on the development
machines); see the QCFS paper, Table 2 (ImageNet, L = 8), for the published numbers.
"""

from snnjax.configs import default


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
    config.image_size = 224
    return config
