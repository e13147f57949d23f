r"""A trained transformer's SNN against its quantized ANN: accuracy at each t, T*, and the time of each.

Restores the workdir's ViT, then times the quantized ANN and the SNN (`snnjax.conversion.transformer`,
T steps, the image given once) on the same test images, each jitted and compiled before the clock
starts (one untimed batch), batch by batch. Prints the accuracy at t = 1, 2, 4, …, T, T* (the first t
from which the SNN predicts as the ANN on every image) and the SNN's time as a multiple of the ANN's;
writes ``benchmarks/results/transformer_speed_<name>.json``::

    python -m benchmarks.transformer_speed --workdir=runs/mnist_vit --set=data_dir=../shared/data/mnist \
        --steps=32 --name=mnist
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

from benchmarks import RESULTS, write_rows
from benchmarks.same_recipe import parse_overrides
from snnjax.analysis import summaries
from snnjax.conversion import transformer
from snnjax.core import parallel
from snnjax.experiment import pipeline, workdir as workdir_lib


def _timed(fn, batches) -> tuple[list, float]:
    """``fn`` on every batch, compiled first on the first batch (untimed); outputs and seconds."""
    jax.block_until_ready(fn(batches[0]))
    start = time.perf_counter()
    outputs = [jax.block_until_ready(fn(batch)) for batch in batches]
    return outputs, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    """Runs the comparison; returns the row written to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", default="", help="conversion overrides FIELD=VALUE,... (e.g. data_dir=...)")
    parser.add_argument("--steps", type=int, default=32, help="T")
    parser.add_argument("--name", default="run")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    config, _ = workdir_lib.conversion_config(
        args.workdir,
        None,
        {"snn_num_steps": args.steps, **parse_overrides(list(filter(None, args.set.split(","))))},
    )
    plan = pipeline.ConversionPlan.from_config(config)
    mesh = parallel.data_mesh()
    restored = pipeline.restore(plan, args.workdir, mesh)
    model, variables, dataset = restored.model, restored.variables, restored.dataset
    snn = transformer.spiking_transformer(model)
    batches = [(images, labels, mask) for images, labels, mask in dataset.test_batches(plan.batch_size)]
    images = [parallel.shard_batch(mesh, *batch)[0] for batch in batches]

    ann_fn = jax.jit(functools.partial(model.apply, train=False))
    ann_logits, ann_seconds = _timed(lambda x: ann_fn(variables, x), images)
    snn_fn = jax.jit(transformer.transformer_apply, static_argnums=(0, 3))
    increments, snn_seconds = _timed(lambda x: snn_fn(snn, variables, x, args.steps), images)

    keep = [np.asarray(mask, bool) for _, _, mask in batches]
    labels = np.concatenate([np.asarray(b[1])[k] for b, k in zip(batches, keep, strict=True)])
    ann_pred = np.concatenate(
        [np.argmax(np.asarray(a), -1)[k] for a, k in zip(ann_logits, keep, strict=True)]
    )
    snn_pred = np.concatenate(
        [
            np.argmax(np.asarray(transformer.accumulated_outputs(y)), -1)[:, k]
            for y, k in zip(increments, keep, strict=True)
        ],
        axis=1,
    )  # [T, N]
    error = np.concatenate(
        [
            np.max(np.abs(np.asarray(transformer.accumulated_outputs(y))[-1] - np.asarray(a)), -1)[k]
            for y, a, k in zip(increments, ann_logits, keep, strict=True)
        ]
    )  # [N]: the largest logit difference of each image at T
    accuracy = np.mean(snn_pred == labels[None], axis=1)
    agreement = np.mean(snn_pred == ann_pred[None], axis=1)
    settled = transformer.settled_step(snn_pred, ann_pred)
    row = {
        "dataset": config.dataset,
        "model": config.model,
        "levels": plan.levels,
        "num_test_images": int(labels.size),
        "T": args.steps,
        "ann_accuracy": float(np.mean(ann_pred == labels)),
        "snn_accuracy": {str(t + 1): float(a) for t, a in enumerate(accuracy)},
        "agreement_with_ann": {str(t + 1): float(a) for t, a in enumerate(agreement)},
        "settled_step": settled,
        # Images whose logits at T equal the ANN's within 1e-3 (float32 rounding at a quantizer's
        # boundary can move one count: the others), and the largest difference.
        "logits_match_fraction": float(np.mean(error <= 1e-3)),
        "max_abs_logit_error": float(np.max(error)),
        "ann_seconds": ann_seconds,
        "snn_seconds": snn_seconds,
        "snn_over_ann": snn_seconds / ann_seconds,
        "devices": [str(d) for d in jax.devices()],
    }
    print(
        f"\n{config.dataset} / {config.model} (SignedQCFS L={plan.levels} → ST-BIF), "
        f"{labels.size} test images"
    )
    print(summaries.format_table(row["ann_accuracy"], accuracy, plan.levels))
    print(
        f"T*: {settled if settled else 'not reached by T=' + str(args.steps)}; agreement with the ANN at T: "
        f"{100 * agreement[-1]:.2f}%; logits within 1e-3 of the ANN's at T: "
        f"{100 * row['logits_match_fraction']:.2f}% of the images "
        f"(largest difference {row['max_abs_logit_error']:.3g})"
    )
    print(
        f"time (compiled, {len(images)} batches of {plan.batch_size}): ANN {ann_seconds:.2f}s, "
        f"SNN T={args.steps} {snn_seconds:.1f}s = {row['snn_over_ann']:.1f}× the ANN"
    )
    write_rows([row], args.results_dir, f"transformer_speed_{args.name}")
    return row


if __name__ == "__main__":
    main()
