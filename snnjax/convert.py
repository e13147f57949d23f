"""Converts the ANN trained in a workdir to an SNN and reports ANN vs SNN accuracy at every T.

Usage (the three are the same command):

    snnjax-convert --workdir runs/qs
    python -m snnjax.convert --workdir runs/qs --config.snn_num_steps=8
    python convert.py --workdir runs/qs   # in a checkout

The trained config is read from the workdir's ``config.json``; ``--config.FIELD=value`` changes a
conversion field (T, mode, neuron, dtype, balancing, post-conversion, reports, exports). A field fixed by
training is refused, naming it. ``--config FILE`` (or a packaged config's name) is still accepted: its
training fields must then equal the recorded ones. Importing a PyTorch checkpoint
(``--config.torch_checkpoint``) needs ``--config``: there is no recorded config.
"""

from absl import flags, logging

from snnjax.configs import default
from snnjax.experiment import cli, pipeline

__all__ = ["main"]


def _main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # absl.app logs INFO by default (JAX backend probes, ...)
    config = flags.FLAGS.config
    with cli.readable_errors():
        if cli.config_given():
            pipeline.convert_and_evaluate(config, flags.FLAGS.workdir)
        else:
            overrides = {field: config[field] for field in cli.config_overrides()}
            pipeline.convert_and_evaluate(None, flags.FLAGS.workdir, overrides)


def main() -> None:
    """``snnjax-convert``: parses ``sys.argv``, then `snnjax.experiment.pipeline.convert_and_evaluate`."""
    cli.define_flags(
        "The training workdir (holds the checkpoint and the recorded config).",
        "Optional: the config the ANN was trained with (default: the workdir's config.json).",
        config_required=False,
    )
    cli.run(_main, default.get_config(), doc=__doc__)


if __name__ == "__main__":
    main()
