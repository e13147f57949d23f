"""Spiking transformer, CI-sized: a quantized ViT on the scikit-learn digits (8×8, patch 2), exact conversion.

Command: ``python train.py --config configs/digits_vit_qcfs.py --workdir runs/digits_vit && python
convert.py --workdir runs/digits_vit``.
Runtime (2-core AVX-512 CPU, 2026-12-06): 49 s for both commands. Expected result (seed 42, 360 test
images): quantized ANN 88.33 %; SNN 11.11 / 13.33 / 39.17 / 88.06 / 88.33 / 88.33 / 88.33 % at t = 1 /
2 / 4 / 8 / 16 / 32 / 64; T* = 13. More in the README's "Spiking transformers".
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "digits"
    config.model = "vit"
    config.method = "qcfs"
    config.levels = 8
    config.vit_patch = 2
    config.vit_dim = 32
    config.vit_depth = 2
    config.vit_heads = 2
    config.vit_mlp_dim = 64
    config.optimizer = "adamw"
    config.learning_rate = 3e-3
    config.weight_decay = 0.05
    config.num_epochs = 30
    config.batch_size = 64
    config.eval_batch_size = 128
    config.snn_num_steps = 64
    config.report_steps = (8, 64)
    return config
