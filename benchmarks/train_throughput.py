"""Training throughput (images/s) of the ANN train step, per model and convolution implementation.

    python -m benchmarks.train_throughput                       # CPU: small_cnn, resnet20, vgg16
    python -m benchmarks.train_throughput --models=resnet20 --conv=xla,im2col --batch=128

Prints a table and writes ``benchmarks/results/train_throughput_<backend>.json``: a list of rows with
``model``, ``conv``, ``batch``, ``backend``, ``device``, ``steps``, ``seconds_per_step``,
``images_per_second``. Timing: one compiled warm-up step, then the median of ``--repeats`` timed
windows of ``--steps`` steps each, synchronised on the result.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import snnjax
from snnjax.core import activations
from snnjax.experiment import training


def seconds_per_step(step: Callable[[], Any], steps: int, repeats: int) -> float:
    """Median over ``repeats`` timed windows of ``steps`` calls of ``step()``: seconds per call.

    Each window ends by waiting for the last call's result (``jax.block_until_ready``), so the
    asynchronous dispatch of jitted steps is counted in full.
    """
    windows = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            result = step()
        jax.block_until_ready(result)
        windows.append((time.perf_counter() - start) / steps)
    return statistics.median(windows)


def measure(model_name: str, conv: str, batch: int, steps: int, repeats: int) -> dict:
    """Times ``steps`` QCFS train steps on random 32×32×3 CIFAR-shaped data."""
    activation = functools.partial(
        snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=4)
    )
    model = snnjax.create_model(model_name, 10, activation, conv_implementation=conv)
    state = training.create_train_state(
        model, jax.random.key(0), (32, 32, 3), training.sgd_coupled_weight_decay(0.01)
    )
    step = training.make_train_step()
    images = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    labels = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
    start = time.perf_counter()
    state, metrics = step(state, images, labels)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start

    def one_step():
        nonlocal state
        state, metrics = step(state, images, labels)
        return metrics

    seconds = seconds_per_step(one_step, steps, repeats)
    return {
        "model": model_name,
        "conv": conv,
        "batch": batch,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "steps": steps * repeats,
        "compile_seconds": compile_seconds,
        "seconds_per_step": seconds,
        "images_per_second": batch / seconds,
    }


def main() -> None:
    """Runs the grid given on the command line, prints a table and writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small_cnn,resnet20,vgg16")
    parser.add_argument("--conv", default="xla,im2col,auto")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()
    rows = []
    print(f"{'model':>10} {'conv':>7} {'batch':>5} {'img/s':>9} {'s/step':>8} {'compile s':>9}")
    for model_name in args.models.split(","):
        for conv in args.conv.split(","):
            row = measure(model_name, conv, args.batch, args.steps, args.repeats)
            rows.append(row)
            print(
                f"{model_name:>10} {conv:>7} {args.batch:>5} {row['images_per_second']:9.1f} "
                f"{row['seconds_per_step']:8.3f} {row['compile_seconds']:9.1f}",
                flush=True,
            )
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"train_throughput_{jax.default_backend()}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"wrote {out} ({rows[0]['device']})")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
