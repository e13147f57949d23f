r"""Where trained QCFS activations sit on their L levels, and which units fire at the SNN's first step.

At t = 1 an IF neuron with v(0) = θ/2 fires iff its input reaches θ/2: the first step evaluates the ANN
with one level (a unit whose QCFS output is below λ/2 is silent). A network whose activations
sit on the lowest levels therefore loses most at t = 1, whatever the simulation does. This command takes
trained ANNs — snnjax workdirs, or a reference ``.pth`` imported with the config of a workdir — and
prints, per QCFS site, λ, the fraction of the ANN's outputs on each level 0 … L, and the fraction of
the SNN's neurons that fire at t = 1, on the same test images::

    python -m benchmarks.level_occupancy \
        --workdirs=runs/same_recipe/snnjax_e3_s42_qcfs_order-floor_clip \
        --torch_checkpoints=runs/ref_weights/ref_e3_s42.pth --name=r20_e3_s42

A ``.pth`` is imported with ``torch_layout=qcfs_original`` (``--torch_layout``) and the recorded config
of the first workdir (its network must be the checkpoint's). Writes
``benchmarks/results/level_occupancy_<name>.json``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS, write_rows
from snnjax.conversion import recording
from snnjax.core import parallel
from snnjax.experiment import pipeline, workdir as workdir_lib


def level_fractions(ann_output: np.ndarray, threshold: float, levels: int) -> list[float]:
    """The fraction of ``ann_output`` (QCFS outputs, any shape) on each level ``k·λ/L``, k = 0 … L."""
    k = np.clip(np.rint(np.asarray(ann_output, np.float64) * levels / threshold), 0, levels).astype(int)
    return (np.bincount(k.ravel(), minlength=levels + 1) / k.size).tolist()


def occupancy(plan, restored, converted, images: jax.Array) -> dict:
    """Per QCFS site: λ, level fractions of the ANN, and the fraction of SNN neurons spiking at t = 1."""
    model, levels = restored.model, plan.levels
    ann_sites = recording.record_activations(model, converted.ann_variables, images)
    snn_model = plan.snn(model, "layer", plain=True)
    snn_sites = recording.record_activations(snn_model, converted.snn_variables, images[None])
    thresholds = {
        "/".join(k.key for k in path[:-1]): float(np.asarray(leaf).max())
        for path, leaf in jax.tree_util.tree_flatten_with_path(converted.ann_variables["params"])[0]
        if path[-1].key == "threshold"
    }
    sites = {}
    for name, (_, output) in ann_sites.items():
        threshold = thresholds[name]
        spikes = np.asarray(snn_sites[name][1][0])
        sites[name] = {
            "threshold": threshold,
            "levels": level_fractions(np.asarray(output), threshold, levels),
            "t1_firing": float((spikes > 0).mean()),
        }
    return sites


def main(argv: list[str] | None = None) -> list[dict]:
    """Prints and returns one row per source (workdirs first, then the imported checkpoints)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdirs", required=True, help="comma-separated trained workdirs")
    parser.add_argument("--torch_checkpoints", default="", help="comma-separated .pth files to import")
    parser.add_argument("--torch_layout", default="qcfs_original")
    parser.add_argument("--images", type=int, default=500, help="test images (the config's subset's first)")
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    workdirs = [w for w in args.workdirs.split(",") if w]
    sources = [(w, w, {}) for w in workdirs] + [
        (p, workdirs[0], {"torch_checkpoint": p, "torch_layout": args.torch_layout})
        for p in args.torch_checkpoints.split(",")
        if p
    ]
    rows, mesh = [], parallel.data_mesh()
    for label, workdir, overrides in sources:
        start = time.perf_counter()
        config, _ = workdir_lib.conversion_config(workdir, None, {"snn_num_steps": 1, **overrides})
        plan = pipeline.ConversionPlan.from_config(config)
        if plan.levels is None:
            raise SystemExit(f"{label}: method {plan.method!r} has no levels; this reads QCFS-type networks.")
        with jax.default_matmul_precision(config.eval_precision):
            restored = pipeline.restore(plan, workdir, mesh)
            converted = pipeline.convert(plan, restored, mesh)
            images = jnp.asarray(restored.dataset.test_images[: args.images])
            sites = occupancy(plan, restored, converted, images)
        rows.append({"source": label, "images": int(images.shape[0]), "sites": sites})
        rows[-1]["seconds"] = time.perf_counter() - start
        header = f"{'site':>28} {'λ':>6} " + " ".join(f"{'k=' + str(k):>6}" for k in range(plan.levels + 1))
        print(f"\n{label}: fraction of ANN outputs on level k·λ/L, and SNN neurons firing at t = 1")
        print(header + f" {'t=1':>6}")
        for name, site in sites.items():
            print(
                f"{name[-28:]:>28} {site['threshold']:6.2f} "
                + " ".join(f"{f:6.3f}" for f in site["levels"])
                + f" {site['t1_firing']:6.3f}"
            )
    write_rows(rows, args.results_dir, f"level_occupancy_{args.name}")
    return rows


if __name__ == "__main__":
    main()
