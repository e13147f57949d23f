"""Converts the ANN trained in DIR to an SNN and reports ANN vs SNN accuracy at every T.

``python convert.py --config configs/quickstart.py --workdir DIR``
"""

from absl import flags, logging
from ml_collections import config_flags

from configs import default
from snnjax import cli, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training workdir (holds the checkpoint).")
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
    with cli.readable_errors():
        evaluation.convert_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main, default.get_config())
