r"""Hardware bit widths on a trained workdir: SNN accuracy at each t for b-bit weights × membrane widths.

Restores the workdir's ANN once, then converts it (BatchNorm folded) in float32 and in the integer
hardware form of `snnjax.conversion.hardware` for each variant ``BITS[c][/STATE]`` (``8`` = 8-bit
weights per layer, float membrane; ``8/16`` = with a 16-bit saturating membrane; ``8c/16`` = per output
channel), and simulates the test set up to T. Prints the accuracy table with each variant's distance
to float32, and writes ``benchmarks/results/hardware_bits_<name>.json``::

    python -m benchmarks.hardware_bits --workdir=runs/mnist --set=data_dir=../shared/data/mnist \
        --name=mnist

The workdir must hold a plain chain (ConvNet, SmallCNN, TinyCNN: conv → IF → pool → dense).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import RESULTS, write_rows
from snnjax.core import parallel
from snnjax.experiment import pipeline, training, workdir as workdir_lib

DEFAULT_VARIANTS = ("8/16", "8c/16", "6/16", "4/16", "8", "8/12")
REPORTED = (1, 2, 4, 8, 16, 32)


def parse_variant(text: str) -> tuple[int, str, int]:
    """``"8c/16"`` → ``(8, "channel", 16)``; ``"6"`` → ``(6, "layer", 0)`` (0: float membrane)."""
    weights, _, state = text.partition("/")
    scale = "channel" if weights.endswith("c") else "layer"
    return int(weights.rstrip("c")), scale, int(state or 0)


def _overrides(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        field, _, value = item.partition("=")
        out[field] = int(value) if value.lstrip("-").isdigit() else value
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the variants; returns the rows written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", default="", help="conversion overrides FIELD=VALUE,... (e.g. data_dir=...)")
    parser.add_argument("--steps", type=int, default=16, help="T")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--name", default="run")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    base = {"fold_bn": True, "snn_num_steps": args.steps, **_overrides(args.set)}
    config, _ = workdir_lib.conversion_config(args.workdir, None, base)
    plan = pipeline.ConversionPlan.from_config(config)
    mesh = parallel.data_mesh()
    restored = pipeline.restore(plan, args.workdir, mesh)
    dataset = restored.dataset
    ann = training.evaluate(
        training.inference_state(restored.model, restored.variables),
        dataset.test_batches(plan.batch_size),
        mesh,
    )["accuracy"]
    rows = []
    for variant in ["float32", *filter(None, args.variants.split(","))]:
        fields = {}
        if variant != "float32":
            bits, scale, state = parse_variant(variant)
            fields = {
                "hardware_weight_bits": bits,
                "hardware_weight_scale": scale,
                "hardware_state_bits": state,
            }
        variant_plan = pipeline.ConversionPlan.from_config(
            workdir_lib.conversion_config(args.workdir, None, base | fields)[0]
        )
        start = time.perf_counter()
        converted = pipeline.convert(variant_plan, restored, mesh)
        accuracy = pipeline.snn_accuracy_by_step(
            variant_plan.snn(restored.model),
            converted.simulated_variables,
            dataset.test_batches(plan.batch_size),
            args.steps,
            mesh,
            num_batches=-(-dataset.num_test // plan.batch_size),
        )["top1"]
        rows.append(
            {
                "variant": variant,
                "neuron": variant_plan.run_neuron,
                "ann_accuracy": float(ann),
                "snn_accuracy": {str(t): float(accuracy[t - 1]) for t in range(1, args.steps + 1)},
                "hardware": converted.hardware,
                "num_test_images": dataset.num_test,
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{variant}: done in {rows[-1]['seconds']:.0f}s", flush=True)
    steps = [t for t in REPORTED if t <= args.steps]
    print(
        f"\n{config.dataset} / {config.model} / {config.method}, {dataset.num_test} test images, "
        f"ANN {100 * ann:.2f}%"
    )
    print(
        f"{'variant':>8} "
        + " ".join(f"{'T=' + str(t):>7}" for t in steps)
        + f"  {'Δ float at T=' + str(steps[-1]):>16}"
    )
    reference = rows[0]["snn_accuracy"]
    for row in rows:
        accuracy = row["snn_accuracy"]
        delta = 100 * (accuracy[str(steps[-1])] - reference[str(steps[-1])])
        print(
            f"{row['variant']:>8} "
            + " ".join(f"{100 * accuracy[str(t)]:7.2f}" for t in steps)
            + f"  {delta:+16.2f}"
        )
    write_rows(rows, args.results_dir, f"hardware_bits_{args.name}")
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
