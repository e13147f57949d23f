"""Spiking transformer on MNIST: a quantized ViT (patch 4, dim 64, depth 4, 4 heads, MLP 128, L = 16), exact conversion.

Command: ``python train.py --config configs/mnist_vit_qcfs.py --workdir runs/mnist_vit
--config.data_dir=../shared/data/mnist && python convert.py --workdir runs/mnist_vit``.
Runtime (2-core AVX-512 CPU, 2026-12-06): training 11 min (~540 img/s), the conversion at T = 48 on
all 10,000 test images 19 min (the SNN at T = 32 alone: 537 s, `benchmarks/transformer_speed.py`).
Expected result (seed 42): quantized ANN 97.22 %; SNN 8.96 / 9.80 / 13.82 / 46.09 / 93.93 / 97.22 /
97.22 % at t = 1 / 2 / 4 / 8 / 16 / 32 / 48; T* = 32 (the ANN's prediction on every test image from
t = 32 on). More in the README's "Spiking transformers".
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "mnist"
    config.model = "vit"
    config.method = "qcfs"
    config.levels = 16
    config.vit_patch = 4
    config.vit_dim = 64
    config.vit_depth = 4
    config.vit_heads = 4
    config.vit_mlp_dim = 128
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.weight_decay = 0.05
    config.num_epochs = 5
    config.batch_size = 128
    config.eval_batch_size = 100  # the SNN holds T·B token maps at once
    config.snn_num_steps = 48  # T* ≈ 31 on this run's first 1,000 test images
    config.report_steps = (8, 48)
    config.report_examples = 128
    return config
