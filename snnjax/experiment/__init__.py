"""Running experiments from ml_collections configs: training, the conversion run, the command line.

* `snnjax.experiment.config`: every config field checked against `snnjax.configs.default`.
* `snnjax.experiment.methods`: which ANN activation and SNN neuron a config's method means.
* `snnjax.experiment.training`: `train_and_evaluate(config, workdir)` (Optax, `jax.jit`, Mesh +
  NamedSharding, Orbax).
* `snnjax.experiment.pipeline`: the conversion run (restore → convert → simulate → analyse → write).
* `snnjax.experiment.workdir`, `metrics_writer`, `cli`: the workdir's records and lock, metrics files,
  the command-line wrapper.

Its modules are imported on use (`from snnjax.experiment import training`): they load Orbax and the
datasets, which converting a model in your own code does not need.
"""
