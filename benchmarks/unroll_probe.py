"""Probe: how the IF scan's unrolling changes SNN time (one model, T, batch; layer mode, float32).

    python -m benchmarks.unroll_probe --model=vgg16 --steps=32 --batch=256

Prints SNN milliseconds for a rolled scan, partial unrolls and full unrolling. Used to choose
``snnjax.core.neurons.UNROLL_MAX_STEPS``; results are quoted in ``benchmarks/results/README.md``.
"""

import argparse
import dataclasses
import functools

from benchmarks import snn_throughput
from snnjax.conversion.neuron_registry import NEURONS
from snnjax.core import neurons


def main() -> None:
    """Measures each unroll setting once (median of the repeats)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    original = NEURONS["if"]
    for unroll in (1, 4, 8, True):

        def if_neuron(z, threshold, v0=0.5, unroll=unroll):
            return neurons.if_neuron_with_state(z, threshold, v0, unroll=unroll)[0]

        NEURONS["if"] = dataclasses.replace(original, fn=functools.partial(if_neuron, unroll=unroll))
        row = snn_throughput.measure(args.model, args.steps, args.batch, "layer", "float32", args.repeats)
        print(
            f"{args.model} T={args.steps} B={args.batch} unroll={unroll!s:>5}: "
            f"{1e3 * row['snn_seconds']:8.1f} ms (limit {1e3 * row['limit_seconds']:.1f} ms, "
            f"overhead {100 * row['overhead']:.1f}%)",
            flush=True,
        )
    NEURONS["if"] = original


if __name__ == "__main__":
    main()
