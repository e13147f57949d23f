"""Converts the ANN trained in a workdir to an SNN and reports ANN vs SNN accuracy at every T.

Usage (the three are the same command)::

  snnjax-convert --config quickstart --workdir runs/qs
  python -m snnjax.convert --config configs/quickstart.py --workdir runs/qs
  python convert.py --config configs/quickstart.py --workdir runs/qs   # in a checkout

Use the config (and overrides) the ANN was trained with; ``--config`` takes a config file or the
name of a packaged config (``snnjax.configs.names()``).
"""

from absl import flags, logging

from snnjax import cli, evaluation
from snnjax.configs import default

__all__ = ["main"]


def _main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # absl.app logs INFO by default (JAX backend probes, ...)
    with cli.readable_errors():
        evaluation.convert_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def main() -> None:
    """``snnjax-convert``: parses ``sys.argv``, then :func:`snnjax.evaluation.convert_and_evaluate`."""
    cli.define_flags("The training workdir (holds the checkpoint).")
    cli.run(_main, default.get_config(), doc=__doc__)


if __name__ == "__main__":
    main()
