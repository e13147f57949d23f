"""Trains an ANN for conversion: ``python train.py --config configs/quickstart.py --workdir DIR``."""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from snnjax import training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints and metrics (resumed if it has any).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Parses nothing beyond the flags and runs the library function."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
    if FLAGS.distributed:
        jax.distributed.initialize()  # coordinator/process ids from the cluster environment
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
