"""Test-only: the quickstart shrunk to seconds (TinyCNN, 2 epochs, T = 8) for the end-to-end test.

Command: ``python train.py --config configs/ci_tiny.py --workdir /tmp/tiny`` then the same with
``convert.py``. Runtime: ~10 s on a 2-core CPU. Expected result: none (too small to be meaningful);
only that training, conversion and ``snn_eval.json`` work.
"""

from snnjax.configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.model = "tiny_cnn"
    config.num_epochs = 2
    config.batch_size = 32
    config.eval_batch_size = 64
    config.snn_num_steps = 8
    return config
