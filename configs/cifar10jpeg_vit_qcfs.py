"""CIFAR-10 (JPEG), a quantized ViT (patch 4, dim 192, depth 6, 6 heads, MLP 384, L = 16): for a GPU.

Data: ``../shared/data/cifar10-jpeg`` (all 60,000 CIFAR-10 images re-encoded as JPEG q≈75, so results
are "CIFAR-10 (JPEG)").

Command::

    python train.py --config configs/cifar10jpeg_vit_qcfs.py --workdir runs/c10jpeg_vit --config.data_dir=../shared/data/cifar10-jpeg
    python convert.py --workdir runs/c10jpeg_vit

Runtime and expected result: **unmeasured** (no GPU was lent when it was written; on the 2-core CPU
the 100 epochs would take days). The SNN is simulated to T = 64; T* grows with L and depth (MNIST's
depth-4, L = 16 ViT: see the README's "Spiking transformers").
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "vit"
    config.method = "qcfs"
    config.levels = 16
    config.vit_patch = 4
    config.vit_dim = 192
    config.vit_depth = 6
    config.vit_heads = 6
    config.vit_mlp_dim = 384
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.weight_decay = 0.05
    config.num_epochs = 100
    config.batch_size = 128
    config.eval_batch_size = 64  # the SNN holds T·B token maps at once
    config.augment = "crop,flip"
    config.snn_num_steps = 64
    config.report_steps = (8, 64)
    config.report_examples = 64
    return config
