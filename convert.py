"""Converts the ANN trained in DIR to an SNN and reports ANN vs SNN accuracy at every T.

``python convert.py --config configs/quickstart.py --workdir DIR``
"""

from absl import app, flags, logging
from ml_collections import config_flags

from snnjax import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training workdir (holds the checkpoint).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Parses nothing beyond the flags and runs the library function."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
    evaluation.convert_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
