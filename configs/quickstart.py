"""Quickstart: QCFS small CNN on the scikit-learn handwritten digits (8×8), then conversion to an SNN.

Command: ``bash scripts/quickstart.sh`` (or ``python train.py --config configs/quickstart.py
--workdir runs/quickstart && python convert.py --config configs/quickstart.py --workdir runs/quickstart``).
Runtime: TBD. Expected result: TBD.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset = "digits"
    config.model = "small_cnn"
    config.method = "qcfs"
    config.levels = 4
    config.num_epochs = 30
    config.batch_size = 64
    config.eval_batch_size = 128
    config.threshold_init = 2.0  # inputs are in [0, 1]; λ0 = 8 leaves T <= 2 silent
    config.snn_num_steps = 32
    return config
