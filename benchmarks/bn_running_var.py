r"""What PyTorch's unbiased BatchNorm running variance would change in trained workdirs' conversions.

``config.bn_running_var="unbiased"`` (`snnjax.nn.layers.UnbiasedVarianceBatchNorm`) averages
``σ²_b·n/(n−1)`` into the running variance instead of ``σ²_b`` (n = batch × positions per channel).
Training computes the same either way (a training batch is normalized by its own biased variance), so
a run trained with it ends with the same parameters and a running variance of
``c·v + (1 − c)·m^k`` (``c = n/(n−1)``, momentum m = 0.9, k steps; ``m^k`` ≈ 10⁻¹⁸ after one CIFAR
epoch of 390 steps): the trained workdir with every BatchNorm's running variance scaled by its c.
This needs one n per layer (every batch full: ``train_last_batch="drop"``) and a workdir trained with
the biased variance; others are refused. This command converts each workdir both ways, on the same
test images, and prints the ANN and SNN accuracy at each t of both::

    python -m benchmarks.bn_running_var \
        --workdirs=runs/same_recipe/snnjax_e3_s42_qcfs_order-floor_clip,... --name=r20_e3

Writes ``benchmarks/results/bn_running_var_<name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS, write_rows
from benchmarks.same_recipe import parse_overrides
from snnjax.core import parallel
from snnjax.experiment import pipeline, workdir as workdir_lib

REPORTED = (1, 2, 4, 8, 16, 32)


def unbiased_factors(model: nn.Module, variables: dict, image_shape, batch_size: int) -> dict[str, float]:
    """``{BatchNorm path: n/(n−1)}`` with n = ``batch_size`` × the positions of its input map."""
    factors = {}

    def capture(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            x = args[0]
            n = batch_size * int(np.prod(x.shape[1:-1]))
            factors["/".join(context.module.path)] = n / (n - 1)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, jnp.zeros((1, *image_shape)), train=False)
    return factors


def scaled_variances(variables: dict, factors: dict[str, float]) -> dict:
    """``variables`` with each BatchNorm's running variance multiplied by its factor."""
    stats = jax.tree_util.tree_map_with_path(
        lambda path, v: v * factors["/".join(k.key for k in path[:-1])] if path[-1].key == "var" else v,
        jax.device_get(variables["batch_stats"]),
    )
    return {**variables, "batch_stats": stats}


def main(argv: list[str] | None = None) -> list[dict]:
    """Converts each workdir with the biased and the unbiased running variance; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdirs", required=True, help="comma-separated trained workdirs")
    parser.add_argument("--set", default="", help="conversion overrides FIELD=VALUE,...")
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    overrides = parse_overrides([s for s in args.set.split(",") if s])
    rows, mesh = [], parallel.data_mesh()
    for workdir in args.workdirs.split(","):
        start = time.perf_counter()
        config, recorded = workdir_lib.conversion_config(workdir, None, overrides)
        recorded = {**workdir_lib.UNRECORDED_TRAINING_DEFAULTS, **(recorded or {})}
        if recorded["bn_running_var"] != "biased" or recorded["train_last_batch"] != "drop":
            raise SystemExit(
                f"{workdir} was trained with bn_running_var={recorded['bn_running_var']!r}, "
                f"train_last_batch={recorded['train_last_batch']!r}: the scaling stands for training with "
                "the unbiased variance only from a biased run with full batches."
            )
        plan = pipeline.ConversionPlan.from_config(config)
        with jax.default_matmul_precision(config.eval_precision):
            restored = pipeline.restore(plan, workdir, mesh)
            factors = unbiased_factors(
                restored.model, restored.variables, restored.dataset.image_shape, config.batch_size
            )
            row = {"workdir": workdir, "factors": factors, "test_images": restored.dataset.num_test}
            for variant in ("biased", "unbiased"):
                variables = restored.variables
                if variant == "unbiased":
                    variables = scaled_variances(variables, factors)
                print(f"\n{workdir}: {variant} running variance")
                this = dataclasses.replace(restored, variables=variables)
                accuracy = pipeline.simulate(plan, this, pipeline.convert(plan, this, mesh), mesh)
                row[variant] = {
                    "ann": accuracy["ann"]["accuracy"],
                    "snn": {t: accuracy["snn"]["top1"][t - 1] for t in REPORTED if t <= plan.num_steps},
                }
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    print(f"\n{'workdir':>52} {'variant':>9} {'ANN':>6} " + " ".join(f"{'t=' + str(t):>6}" for t in REPORTED))
    for row in rows:
        for variant in ("biased", "unbiased"):
            numbers = row[variant]
            print(
                f"{row['workdir'][-52:]:>52} {variant:>9} {100 * numbers['ann']:6.2f} "
                + " ".join(f"{100 * v:6.2f}" for v in numbers["snn"].values())
            )
    write_rows(rows, args.results_dir, f"bn_running_var_{args.name}")
    return rows


if __name__ == "__main__":
    main()
