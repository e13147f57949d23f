"""Trains an ANN for conversion and checkpoints it in a workdir (resumed if it has checkpoints).

Usage (the three are the same command):

    snnjax-train --config quickstart --workdir runs/qs
    python -m snnjax.train --config configs/quickstart.py --workdir runs/qs
    python train.py --config configs/quickstart.py --workdir runs/qs   # in a checkout

``--config`` takes a config file or the name of a packaged config (``snnjax.configs.names()``);
``--config.FIELD=value`` overrides one field.
"""

import jax
from absl import flags, logging

from snnjax.configs import default
from snnjax.experiment import cli, training

__all__ = ["main"]


def _main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # absl.app logs INFO by default (JAX backend probes, ...)
    if flags.FLAGS.distributed:
        # Unset values are detected from the cluster environment (SLURM, Open MPI, Cloud TPU, ...).
        jax.distributed.initialize(
            coordinator_address=flags.FLAGS.coordinator_address,
            num_processes=flags.FLAGS.num_processes,
            process_id=flags.FLAGS.process_id,
        )
    with cli.readable_errors():
        training.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


def main() -> None:
    """``snnjax-train``: parses ``sys.argv``, then `snnjax.experiment.training.train_and_evaluate`."""
    cli.define_flags("Folder for checkpoints and metrics (resumed if it has any).")
    flags.DEFINE_bool("distributed", False, "Multi-process: call jax.distributed.initialize() first.")
    flags.DEFINE_string(
        "coordinator_address", None, "With --distributed: host:port of process 0 (default: from the cluster)."
    )
    flags.DEFINE_integer(
        "num_processes", None, "With --distributed: the number of processes (default: cluster)."
    )
    flags.DEFINE_integer("process_id", None, "With --distributed: this process's id, 0..num_processes-1.")
    cli.run(_main, default.get_config(), doc=__doc__)


if __name__ == "__main__":
    main()
