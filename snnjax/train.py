"""Trains an ANN for conversion and checkpoints it in a workdir (resumed if it has checkpoints).

Usage (the three are the same command)::

  snnjax-train --config quickstart --workdir runs/qs
  python -m snnjax.train --config configs/quickstart.py --workdir runs/qs
  python train.py --config configs/quickstart.py --workdir runs/qs   # in a checkout

``--config`` takes a config file or the name of a packaged config (``snnjax.configs.names()``);
``--config.FIELD=value`` overrides one field.
"""

import jax
from absl import flags, logging

from snnjax import cli, training
from snnjax.configs import default

__all__ = ["main"]


def _main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    if flags.FLAGS.distributed:
        jax.distributed.initialize()  # coordinator/process ids from the cluster environment
    with cli.readable_errors():
        training.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def main() -> None:
    """``snnjax-train``: parses ``sys.argv``, then :func:`snnjax.training.train_and_evaluate`."""
    cli.define_flags("Folder for checkpoints and metrics (resumed if it has any).")
    flags.DEFINE_bool("distributed", False, "Multi-process: call jax.distributed.initialize() first.")
    cli.run(_main, default.get_config(), doc=__doc__)


if __name__ == "__main__":
    main()
