r"""ANN vs SNN accuracy for every conversion method on one config: the conversion toolkit's table.

Trains one ANN per method (QCFS, SlipReLU c = 0.5, ReLU + 99.9 % balancing, SpikeConverter, and a
max-pool ReLU ANN converted with both max-pool policies), converts each, also simulates each SNN in
bfloat16, and prints/writes one table::

    python -m benchmarks.method_table --config configs/quickstart.py --name quickstart_cpu
    python -m benchmarks.method_table --config configs/mnist_cnn_qcfs.py \\
        --config.data_dir=../shared/data/mnist --name mnist_h100

Writes ``benchmarks/results/method_table_<name>.json`` (rows: method, variant, dtype, ann_accuracy,
snn_accuracy by T) and the per-run workdirs under ``--workdir_root``.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from snnjax import evaluation, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base experiment config.", lock_config=True)
flags.DEFINE_string("name", None, "Result name, e.g. quickstart_cpu.")
flags.DEFINE_string("workdir_root", "runs/method_table", "Where the per-method workdirs go.")
flags.mark_flags_as_required(["config", "name"])

# (label, ANN overrides, conversion overrides); every conversion also runs in bfloat16.
VARIANTS = (
    ("qcfs", {"method": "qcfs"}, {}),
    ("slip_relu c=0.5", {"method": "slip_relu", "slip_c": 0.5}, {}),
    ("relu + 99.9% balancing", {"method": "relu"}, {}),
    ("spikeconverter", {"method": "spikeconverter"}, {}),
    ("relu, max-pool ANN → avg-pool SNN", {"method": "relu", "pooling": "max"}, {"snn_max_pool": "avg"}),
    (
        "relu, max-pool ANN → spiking max gate",
        {"method": "relu", "pooling": "max"},
        {"snn_max_pool": "max_gate"},
    ),
)


def main(argv):
    """Trains (or resumes) each variant, converts it in float32 and bfloat16, prints the table."""
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = []
    for label, ann_overrides, snn_overrides in VARIANTS:
        config = copy.deepcopy(FLAGS.config)
        config.unlock()
        config.update(ann_overrides)
        key = "_".join(f"{k}-{v}" for k, v in sorted(ann_overrides.items()))
        workdir = os.path.join(FLAGS.workdir_root, FLAGS.name, key)
        start = time.perf_counter()
        training.train_and_evaluate(config, workdir)  # resumes (no-op) when already trained
        train_seconds = time.perf_counter() - start
        for dtype in ("float32", "bfloat16"):
            config.update(snn_overrides)
            config.snn_dtype = dtype
            start = time.perf_counter()
            result = evaluation.convert_and_evaluate(config, workdir)
            rows.append(
                {
                    "variant": label,
                    "dtype": dtype,
                    "neuron": result["neuron"],
                    "ann_accuracy": result["ann_accuracy"],
                    "snn_accuracy": result["snn_accuracy"],
                    "train_seconds": round(train_seconds, 1),
                    "convert_seconds": round(time.perf_counter() - start, 1),
                }
            )
    steps = ["1", "2", "4", "8", "16", "32"]
    print(
        f"\n{FLAGS.name}: {FLAGS.config.dataset}, {FLAGS.config.model}, L={FLAGS.config.levels}, "
        f"{jax.devices()[0]}"
    )
    print(f"{'variant':>40} {'dtype':>9} {'ANN':>6} " + " ".join(f"{'T=' + t:>6}" for t in steps))
    for row in rows:
        cells = [
            f"{100 * row['snn_accuracy'][t]:6.2f}" if t in row["snn_accuracy"] else f"{'':>6}" for t in steps
        ]
        print(f"{row['variant']:>40} {row['dtype']:>9} {100 * row['ann_accuracy']:6.2f} " + " ".join(cells))
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", f"method_table_{FLAGS.name}.json")
    with open(path, "w") as f:
        json.dump(
            {"device": str(jax.devices()[0]), "config": FLAGS.config.to_dict(), "rows": rows}, f, indent=2
        )
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
