"""CIFAR-10 (JPEG), small CNN, QCFS (L = 4): the CPU-sized CIFAR experiment.

Data: ``../shared/data/cifar10-jpeg`` (all 60,000 CIFAR-10 images re-encoded as JPEG q≈75, so results
are "CIFAR-10 (JPEG)", not comparable digit for digit with CIFAR-10).

Command::

    python train.py --config configs/cifar10jpeg_cnn_qcfs.py --workdir runs/c10jpeg_cnn --config.data_dir=../shared/data/cifar10-jpeg
    python convert.py --config configs/cifar10jpeg_cnn_qcfs.py --workdir runs/c10jpeg_cnn --config.data_dir=../shared/data/cifar10-jpeg

Runtime: ~1 min on one H100 (2026-11-22, 70–95k img/s, data decoding included); on a 2-core AVX CPU
the train step runs at ~300–340 img/s: 28 min for the 10 epochs plus 6.5 min for the SNN evaluation
(measured 2026-11-22).
Expected result (seed 42): H100: ANN 74.44 %; SNN T=1 64.39, T=2 71.80, T=4 (= L) 74.40, T=8 74.65,
T=16 75.00, T=32 75.02. 2-core CPU: ANN 75.21 %; SNN 60.88 / 71.27 / 74.71 / 75.56 / 75.93 / 75.79
(GPU and CPU differ in float summation order and in the data order of the shuffled batches.)
"""

from snnjax.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.model = "small_cnn"
    config.method = "qcfs"
    config.levels = 4
    config.num_epochs = 10
    config.batch_size = 128
    config.learning_rate = 0.1
    config.threshold_init = 4.0
    config.augment = "crop,flip"
    config.snn_num_steps = 32
    return config
