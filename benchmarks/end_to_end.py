"""A whole test set through the SNN, end to end: data loading, compilation and the T-step simulation.

    python -m benchmarks.end_to_end --data_dir=../shared/data/cifar10-jpeg              # CIFAR-10 (JPEG)
    python -m benchmarks.end_to_end --data_dir=... --models=resnet20 --limit=2048      # shorter
    python -m benchmarks.end_to_end --data_dir=...  # on a GPU: layer mode, batch 256 by default

The GPU target of the performance issue: the 10,000 CIFAR-10 test images at T = 32 in under 10 s, data
loading included. One process per run times, in the order ``convert.py`` meets them:

* ``load``: `snnjax.io.data.load_dataset` (reading, decoding and normalizing both splits, since
  conversion needs training images for threshold balancing and calibration);
* ``warmup``: `snnjax.experiment.pipeline.snn_accuracy_by_step` on the first batch (compilation + one batch);
* ``simulate``: the same over the whole test set (host-to-device copies, the per-step top-1/top-5
  readout and the accuracy sums included).

``end_to_end = load + warmup + simulate`` counts the first batch twice, so it is an upper bound. The
weights are the untrained model's with every threshold θ = 1 (firing at a moderate rate on normalized
images): this times the pipeline, so no accuracy is reported. Without ``--data_dir`` the data set
comes from tensorflow-datasets; if that is not installed either, the script says so and stops.

Prints a table and writes ``benchmarks/results/<name>.json``: one row per model with ``model``, ``T``,
``batch``, ``mode``, ``dtype``, ``num_test_images``, the four ``*_seconds``, ``images_per_second``
(simulate), ``end_to_end_images_per_second``, ``data``, ``backend``, ``device``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import snnjax
from benchmarks import RESULTS, snn_throughput, write_rows
from snnjax import conversion
from snnjax.experiment import pipeline as evaluation
from snnjax.io import data as data_lib

SHARED_CIFAR10 = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")
)


def snn_with_unit_thresholds(model_name: str, num_classes: int, image_shape: tuple, mode: str):
    """(SNN module, SNN variables) of the untrained ``model_name`` with every θ = 1."""
    ann = snnjax.create_model(model_name, num_classes, snn_throughput.QCFS)
    variables = snn_throughput.with_unit_thresholds(ann.init(jax.random.key(0), jnp.zeros((1, *image_shape))))
    return conversion.spiking_model(ann, mode=mode), conversion.convert_variables(variables)


def measure(
    dataset,
    data_name: str,
    load_seconds: float,
    model_name: str,
    num_steps: int,
    batch: int,
    mode: str,
    dtype: str,
) -> dict:
    """Times the warm-up batch and the whole test set of ``dataset`` for one model."""
    snn, variables = snn_with_unit_thresholds(model_name, dataset.num_classes, dataset.image_shape, mode)
    dtype = jnp.dtype(dtype)
    start = time.perf_counter()
    first = next(iter(dataset.test_batches(batch)))
    evaluation.snn_accuracy_by_step(snn, variables, [first], num_steps, num_batches=1, dtype=dtype)
    warmup_seconds = time.perf_counter() - start
    num_batches = -(-dataset.num_test // batch)
    start = time.perf_counter()
    evaluation.snn_accuracy_by_step(
        snn, variables, dataset.test_batches(batch), num_steps, num_batches=num_batches, dtype=dtype
    )
    simulate_seconds = time.perf_counter() - start
    end_to_end = load_seconds + warmup_seconds + simulate_seconds
    return {
        "model": model_name,
        "T": num_steps,
        "batch": batch,
        "mode": mode,
        "dtype": dtype.name,
        "num_test_images": dataset.num_test,
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "simulate_seconds": simulate_seconds,
        "end_to_end_seconds": end_to_end,
        "images_per_second": dataset.num_test / simulate_seconds,
        "end_to_end_images_per_second": dataset.num_test / end_to_end,
        "data": data_name,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
    }


def print_table(rows: list[dict]) -> None:
    """The rows as a table, seconds per stage."""
    print(
        f"{'model':>10} {'T':>3} {'B':>4} {'mode':>5} {'dtype':>8} {'images':>6} {'load s':>7} "
        f"{'warmup s':>8} {'simulate s':>10} {'end to end s':>12} {'img/s':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:>10} {r['T']:>3} {r['batch']:>4} {r['mode']:>5} {r['dtype']:>8} "
            f"{r['num_test_images']:>6} {r['load_seconds']:7.2f} {r['warmup_seconds']:8.2f} "
            f"{r['simulate_seconds']:10.2f} {r['end_to_end_seconds']:12.2f} {r['images_per_second']:8.1f}"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark (flags: ``--help``) and returns its rows."""
    accelerator = jax.default_backend() != "cpu"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cifar10", choices=data_lib.DATASETS)
    default_dir = SHARED_CIFAR10 if os.path.isdir(SHARED_CIFAR10) else None
    parser.add_argument("--data_dir", default=default_dir, help="data set files (default: tfds)")
    parser.add_argument("--models", default="resnet20,vgg16")
    parser.add_argument("--steps", type=int, default=32, help="T")
    parser.add_argument("--batch", type=int, default=256 if accelerator else 64)
    # Layer mode is the faster one on the H100 (benchmarks/results/h100.md), step mode on the CPU.
    parser.add_argument("--mode", default="layer" if accelerator else "step", choices=["layer", "step"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--limit", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--name", default=f"end_to_end_{jax.default_backend()}")
    parser.add_argument("--results_dir", default=RESULTS, help="where <name>.json goes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        dataset = data_lib.load_dataset(args.dataset, args.data_dir)
    except (ImportError, FileNotFoundError, ValueError) as error:
        raise SystemExit(
            f"Could not load {args.dataset}: {error}\nPass --data_dir (e.g. a folder holding "
            "cifar10-jpeg.tar.gz or cifar-10-python.tar.gz) or install tensorflow-datasets."
        ) from None
    load_seconds = time.perf_counter() - start
    dataset = data_lib.subsample_test(dataset, args.limit)
    data_name = f"{args.dataset} ({args.data_dir or 'tfds'})"
    print(f"{data_name}: {dataset.num_test} test images, loaded in {load_seconds:.2f} s", flush=True)
    rows = []
    for model_name in filter(None, args.models.split(",")):
        rows.append(
            measure(
                dataset, data_name, load_seconds, model_name, args.steps, args.batch, args.mode, args.dtype
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    write_rows(rows, args.results_dir, args.name)
    return rows


if __name__ == "__main__":
    main()
