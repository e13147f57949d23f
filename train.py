"""Trains an ANN for conversion: ``python train.py --config configs/quickstart.py --workdir DIR``."""

import jax
from absl import flags, logging
from ml_collections import config_flags

from configs import default
from snnjax import cli, training

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder for checkpoints and metrics (resumed if it has any).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first.")
config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. configs/quickstart.py (fields: see below).",
    lock_config=True,
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Runs the library function (cli.run has parsed and checked the flags)."""
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
    if FLAGS.distributed:
        jax.distributed.initialize()  # coordinator/process ids from the cluster environment
    with cli.readable_errors():
        training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main, default.get_config())
