"""Conversion + evaluation run: restore the trained ANN, convert it, and report ANN vs SNN accuracy."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from snnjax import conversion, methods, parallel, training
from snnjax import data as data_lib
from snnjax.config_validation import validate_config

__all__ = ["convert_and_evaluate", "format_table", "snn_accuracy_by_step"]

REPORTED_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@functools.partial(jax.jit, static_argnames=("snn_model", "num_steps"))
def _snn_correct_by_step(snn_model, variables, images, labels, mask, num_steps):
    logits = conversion.cumulative_mean_logits(
        conversion.spiking_apply(snn_model, variables, images, num_steps)
    )
    labels_t = jnp.broadcast_to(labels, logits.shape[:2])
    top1 = (jnp.argmax(logits, -1) == labels_t) & mask[None]  # [T, B]
    top5 = training.top_k_correct(logits, labels_t, 5) & mask[None]
    return jnp.sum(top1, axis=1), jnp.sum(top5, axis=1)


def snn_accuracy_by_step(
    snn_model, snn_variables, batches: Iterable, num_steps: int, mesh=None, num_batches: int | None = None
) -> dict[str, np.ndarray]:
    """SNN top-1 and top-5 accuracy after every step t = 1..T, from one T-step simulation per batch.

    Args:
      snn_model: from :func:`snnjax.spiking_model` (layer or step mode).
      snn_variables: from :func:`snnjax.ann_to_snn_variables`.
      batches: ``(images [B, H, W, C], labels [B], mask [B])`` tuples (``dataset.test_batches(B)``), B
        divisible by the device count.
      num_steps: T.
      mesh: data mesh (default: all devices).
      num_batches: for the progress bar.

    Returns:
      ``{"top1": [T], "top5": [T]}`` float arrays; entry ``t-1`` is the accuracy of the mean logits
      over steps ``1..t``.
    """
    mesh = mesh if mesh is not None else parallel.data_mesh()
    snn_variables = parallel.replicate(mesh, snn_variables)
    top1, top5, count = np.zeros(num_steps), np.zeros(num_steps), 0
    for batch in tqdm(batches, total=num_batches, desc=f"SNN T={num_steps}", leave=False, disable=None):
        sharded = parallel.shard_batch(mesh, *batch)
        correct1, correct5 = _snn_correct_by_step(snn_model, snn_variables, *sharded, num_steps)
        top1 += np.asarray(correct1)
        top5 += np.asarray(correct5)
        count += int(np.sum(batch[2]))
    return {"top1": top1 / count, "top5": top5 / count}


def format_table(ann_accuracy: float, snn_accuracy: np.ndarray, levels: int | None = None) -> str:
    """A text table of ANN accuracy and SNN accuracy at T = 1, 2, 4, ... (and T = L)."""
    num_steps = len(snn_accuracy)
    steps = sorted({t for t in REPORTED_STEPS if t <= num_steps} | {num_steps})
    if levels is not None and levels <= num_steps:
        steps = sorted(set(steps) | {levels})
    lines = [f"{'':>10}  {'accuracy':>9}  {'Δ vs ANN':>9}", f"{'ANN':>10}  {100 * ann_accuracy:8.2f}%"]
    for t in steps:
        acc = snn_accuracy[t - 1]
        mark = " (=L)" if t == levels else ""
        lines.append(
            f"{'SNN T=' + str(t):>10}  {100 * acc:8.2f}%  {100 * (acc - ann_accuracy) + 0.0:+8.2f}{mark}"
        )
    return "\n".join(lines)


def _plot(path: str, ann_accuracy: float, snn_accuracy: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(snn_accuracy) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(steps, 100 * snn_accuracy, marker="o", markersize=3, label="SNN (mean logits over 1..t)")
    ax.axhline(100 * ann_accuracy, color="k", linestyle="--", label=f"ANN {100 * ann_accuracy:.2f}%")
    ax.set_xscale("log", base=2)
    ticks = [t for t in REPORTED_STEPS if t <= len(snn_accuracy)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("time steps t")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def convert_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Restores the ANN trained in ``workdir``, converts it to an SNN and evaluates both.

    Prints the accuracy table, and writes ``workdir/snn_eval.json``
    (``{"dataset", "method", "T", "ann_accuracy", "snn_accuracy": {"1": ..., "T": ...},
    "ann_top5_accuracy", "snn_top5_accuracy": {...}}``, accuracies as fractions) and
    ``workdir/snn_accuracy.png``.

    Args:
      config: the config the ANN was trained with.
      workdir: the training workdir.

    Returns:
      The dictionary written to ``snn_eval.json``.

    Raises:
      FileNotFoundError: if ``workdir`` holds no checkpoint.
    """
    validate_config(config)
    mesh = parallel.data_mesh()
    dataset = data_lib.load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
    steps_per_epoch = dataset.num_train // config.batch_size
    manager = training.checkpoint_manager(workdir, config.checkpoint)
    template = training.abstract_train_state(config, dataset, steps_per_epoch)
    state = training.restore_state(manager, template, mesh)
    manager.close()
    if state is None:
        raise FileNotFoundError(
            f"No checkpoint in {manager.directory}: run train.py with the same --config and --workdir first."
        )
    start = time.perf_counter()
    ann = training.evaluate(state, dataset.test_batches(config.eval_batch_size), mesh)
    ann_variables = {"params": state.params, "batch_stats": state.batch_stats}
    ann_model = training.build_ann(config, dataset.num_classes)
    if config.method == methods.Method.RELU:
        calibration = dataset.calibration_images(config.calibration_examples)
        ann_variables = conversion.calibrate_thresholds(
            ann_model, ann_variables, calibration, config.calibration_percentile
        )
    snn_variables = conversion.ann_to_snn_variables(
        ann_variables,
        threshold_parameterization=config.threshold_parameterization,
        fold_bn=config.fold_bn,
    )
    snn_model = conversion.spiking_model(
        ann_model,
        v0=methods.initial_membrane_fraction(config),
        fold_bn=config.fold_bn,
        per_channel=config.per_channel_threshold and config.method != methods.Method.RELU,
        mode=config.snn_mode,
    )
    accuracy = snn_accuracy_by_step(
        snn_model,
        snn_variables,
        dataset.test_batches(config.eval_batch_size),
        config.snn_num_steps,
        mesh,
        num_batches=-(-dataset.num_test // config.eval_batch_size),
    )
    snn = accuracy["top1"]
    levels = config.levels if config.method in (methods.Method.QCFS, methods.Method.SLIP_RELU) else None
    print(
        f"\n{config.dataset} test set ({dataset.num_test} images), {config.model}, "
        f"method {config.method}" + (f", L={levels}" if levels else "") + f", {config.snn_mode} mode"
    )
    print(format_table(ann["accuracy"], snn, levels))
    print(
        f"top-5: ANN {100 * ann['top5_accuracy']:.2f}%, SNN at T={len(snn)} {100 * accuracy['top5'][-1]:.2f}%"
    )
    print(f"(evaluation took {time.perf_counter() - start:.1f}s)")
    result = {
        "dataset": config.dataset,
        "method": config.method,
        "T": int(config.snn_num_steps),
        "ann_accuracy": float(ann["accuracy"]),
        "snn_accuracy": {str(t + 1): float(a) for t, a in enumerate(snn)},
        "ann_top5_accuracy": float(ann["top5_accuracy"]),
        "snn_top5_accuracy": {str(t + 1): float(a) for t, a in enumerate(accuracy["top5"])},
    }
    with open(os.path.join(workdir, "snn_eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    _plot(
        os.path.join(workdir, "snn_accuracy.png"),
        ann["accuracy"],
        snn,
        f"{config.dataset} ({dataset.num_test} test images) / {config.model} / {config.method}",
    )
    print(f"Wrote {os.path.join(workdir, 'snn_eval.json')} and snn_accuracy.png")
    return result
