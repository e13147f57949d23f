"""The conversion run of a quantized transformer: restore → simulate → analyse → write.

`snnjax.experiment.pipeline.convert_and_evaluate` hands a transformer config (``config.model`` in
`snnjax.nn.vit.TRANSFORMERS`) to `run` after its checks and `snnjax.experiment.pipeline.restore`.
The SNN is `snnjax.conversion.transformer.spiking_transformer` of the trained ANN with its variables
unchanged; its readout is the accumulated output, whose prediction at each t is also the running
mean's (see that module). Besides the accuracy at every t, the run measures T*: the first t from
which the SNN's prediction equals the quantized ANN's on every test image.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from snnjax.analysis import summaries
from snnjax.conversion import transformer
from snnjax.core import parallel
from snnjax.experiment import training, workdir as workdir_lib

if TYPE_CHECKING:  # the pipeline imports this module
    from snnjax.experiment.pipeline import ConversionPlan, Restored

__all__ = ["format_operator_table", "run", "transformer_accuracy_by_step"]


@functools.partial(jax.jit, static_argnames=("snn", "num_steps"))
def _predictions(snn, variables, images, num_steps):
    """The SNN's predictions ``[T, B]`` and accumulated logits ``[T, B, C]``, the ANN's logits ``[B, C]``."""
    ann_logits = snn.ann.apply(variables, images, train=False)
    logits = transformer.accumulated_outputs(transformer.transformer_apply(snn, variables, images, num_steps))
    return jnp.argmax(logits, -1), logits, ann_logits


def transformer_accuracy_by_step(
    snn: transformer.SpikingTransformer,
    variables: dict,
    batches: Iterable,
    num_steps: int,
    mesh: jax.sharding.Mesh,
    num_batches: int | None = None,
) -> dict:
    """The SNN's top-1 / top-5 accuracy at every t, its agreement with the ANN, T* and the logit error.

    Args:
      snn: from `snnjax.conversion.transformer.spiking_transformer`.
      variables: the ANN's variables.
      batches: ``(images [B, ...], labels [B], mask [B])`` tuples.
      num_steps: T.
      mesh: the data mesh.
      num_batches: for the progress bar.

    Returns:
      ``{"top1": [T], "top5": [T], "agreement": [T], "settled_step": T* or None,
      "max_abs_logit_error": float, "logits_match_fraction": float}``: fractions of the unmasked
      images; ``agreement[t−1]`` is the fraction whose SNN prediction at t equals the ANN's; the error
      is at t = T, and the match fraction counts the images whose logits at T are within 1e-3 of the
      ANN's (float32 rounding at a quantizer's boundary can move a count by one; float64 does not).
    """
    variables = parallel.replicate(mesh, variables)
    top1, top5, agree = np.zeros(num_steps), np.zeros(num_steps), np.zeros(num_steps)
    snn_all, ann_all, error, count, matching = [], [], 0.0, 0, 0
    progress = summaries.ProgressLog(f"SNN T={num_steps}", num_batches)
    for images, labels, mask in tqdm(
        batches, total=num_batches, desc=f"SNN T={num_steps}", leave=False, disable=None
    ):
        sharded = parallel.shard_batch(mesh, images, labels, mask)
        predicted, logits, ann_logits = jax.device_get(_predictions(snn, variables, sharded[0], num_steps))
        keep = np.asarray(mask, bool)
        labels_t = np.broadcast_to(np.asarray(labels), predicted.shape)
        top1 += np.sum((predicted == labels_t) & keep, axis=1)
        top5 += np.sum(np.asarray(training.top_k_correct(logits, labels_t, 5)) & keep, axis=1)
        ann_predicted = np.argmax(ann_logits, -1)
        agree += np.sum((predicted == ann_predicted[None]) & keep, axis=1)
        snn_all.append(predicted[:, keep])
        ann_all.append(ann_predicted[keep])
        difference = np.max(np.abs(logits[-1] - ann_logits), axis=-1)[keep]  # [B]
        error = max(error, float(np.max(difference, initial=0.0)))
        matching += int(np.sum(difference <= 1e-3))
        count += int(np.sum(keep))
        progress.update(int(np.sum(keep)))
    progress.close()
    settled = transformer.settled_step(np.concatenate(snn_all, axis=1), np.concatenate(ann_all))
    return {
        "top1": top1 / count,
        "top5": top5 / count,
        "agreement": agree / count,
        "settled_step": settled,
        "max_abs_logit_error": error,
        "logits_match_fraction": matching / count,
    }


def format_operator_table(report: dict, energy_pj: tuple[float, float]) -> str:
    """The operator table: each site's kind, output alphabet, input, spikes and operations per image."""
    lines = [
        f"operators of the SNN ({report['images']} images, T={report['steps']}; ops: each nonzero input "
        "increment × the outputs it reaches, SOP for spike inputs, MAC for analog ones)",
        f"{'operator':<44} {'kind':<8} {'output':<18} {'input':<7} {'spikes/img':>10} {'ops/img':>10} "
        f"{'ANN MAC':>9}",
    ]
    for row in report["operators"]:
        spikes = f"{row['spikes_per_image']:10.1f}" if "spikes_per_image" in row else f"{'':>10}"
        ops = row.get("ops_per_image")
        ops_text = f"{ops:10.0f}" if ops is not None else f"{'':>10}"
        ann = row.get("ann_macs_per_image")
        ann_text = f"{ann:9.0f}" if ann is not None else f"{'':>9}"
        lines.append(
            f"{row['name'] + ' (' + row['operator'] + ')':<44.44} {row['kind']:<8} {row['output']:<18} "
            f"{row['input']:<7} {spikes} {ops_text} {ann_text}"
        )
    mac_pj, ac_pj = energy_pj
    snn_uj = (report["macs_per_image"] * mac_pj + report["synaptic_ops_per_image"] * ac_pj) * 1e-6
    ann_uj = report["ann_macs_per_image"] * mac_pj * 1e-6
    lines.append(
        f"total: {report['spikes_per_image']:.0f} spikes/image, {report['synaptic_ops_per_image']:.0f} SOP + "
        f"{report['macs_per_image']:.0f} MAC per image (ANN {report['ann_macs_per_image']:.0f} MAC); "
        f"energy {snn_uj:.3f} µJ vs ANN {ann_uj:.3f} µJ per image (matrix products only: softmax and "
        "LayerNorm stay analog and are not counted in either)"
    )
    return "\n".join(lines)


def run(
    plan: ConversionPlan,
    restored: Restored,
    trained_config: dict | None,
    workdir: str,
    mesh: jax.sharding.Mesh,
) -> dict:
    """Simulates, reports and writes ``snn_eval.json`` and ``snn_accuracy.png`` for a transformer.

    Args:
      plan: the `snnjax.experiment.pipeline.ConversionPlan`.
      restored: the `snnjax.experiment.pipeline.Restored` ANN and data.
      trained_config: the config recorded at training (or None).
      workdir: where the results go.
      mesh: the data mesh.

    Returns:
      The dictionary written to ``snn_eval.json``.
    """
    config, dataset, model = plan.config, restored.dataset, restored.model
    snn = transformer.spiking_transformer(model)
    start = time.perf_counter()
    ann = training.evaluate(
        training.inference_state(model, restored.variables), dataset.test_batches(plan.batch_size), mesh
    )
    ann_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = transformer_accuracy_by_step(
        snn,
        restored.variables,
        dataset.test_batches(plan.batch_size),
        plan.num_steps,
        mesh,
        num_batches=-(-dataset.num_test // plan.batch_size),
    )
    snn_seconds = time.perf_counter() - start
    print(
        f"\n{config.dataset} test set ({dataset.num_test} images), {config.model} (depth {config.vit_depth}, "
        f"dim {config.vit_dim}, {config.vit_heads} heads), SignedQCFS L={plan.levels} → ST-BIF neurons, "
        "image given once, readout: accumulated output"
    )
    print(summaries.format_table(ann["accuracy"], accuracy["top1"], plan.levels))
    settled = accuracy["settled_step"]
    agreement = accuracy["agreement"]
    print(
        "T* (the SNN's prediction equals the quantized ANN's on every test image from t = T* to T): "
        + (
            f"{settled}"
            if settled
            else f"not reached by T={plan.num_steps} ({100 * agreement[-1]:.2f}% agree at T)"
        )
        + f"; logits at T within 1e-3 of the ANN's on {100 * accuracy['logits_match_fraction']:.2f}% of the "
        f"images (largest difference {accuracy['max_abs_logit_error']:.2e}: neurons not yet settled at T, or "
        "a count moved by float32 rounding at a quantizer boundary)"
    )
    print(f"time: ANN {ann_seconds:.1f}s, SNN T={plan.num_steps} {snn_seconds:.1f}s (both with compilation)")
    images = next(iter(dataset.test_batches(min(plan.report_examples, plan.batch_size))))[0]
    ann_logits = model.apply(restored.variables, images, train=False)
    report = transformer.operator_report(
        snn, restored.variables, jnp.asarray(images), plan.num_steps, ann_logits
    )
    print(format_operator_table(report, plan.energy_pj))

    def by_step(values):
        return {str(t + 1): float(a) for t, a in enumerate(values)}

    result = {
        "dataset": config.dataset,
        "model": config.model,
        "method": plan.method,
        "T": plan.num_steps,
        "num_test_images": dataset.num_test,
        "ann_accuracy": float(ann["accuracy"]),
        "snn_accuracy": by_step(accuracy["top1"]),
        "ann_top5_accuracy": float(ann["top5_accuracy"]),
        "snn_top5_accuracy": by_step(accuracy["top5"]),
        # Fraction of test images whose SNN prediction at t equals the quantized ANN's.
        "agreement_with_ann": by_step(agreement),
        # T*: from this t on the SNN predicts as the quantized ANN on every test image (None: not by T).
        "settled_step": settled,
        "max_abs_logit_error": accuracy["max_abs_logit_error"],
        # Images whose logits at T are within 1e-3 of the quantized ANN's (the rest: float32 rounding).
        "logits_match_fraction": accuracy["logits_match_fraction"],
        "neuron": "st_bif",
        "readout": "accumulated output (sum over t of the output increments)",
        "input": "the image once, at the first step",
        "operators": report,
        "seconds": {"ann": ann_seconds, "snn": snn_seconds},
        "levels": plan.levels,
        "source": restored.source,
        "trained_config": trained_config,
        "config": workdir_lib.config_dict(config),
        "run_id": None,
        "outputs": None,
    }
    with workdir_lib.OutputSet() as outputs:
        result["run_id"] = outputs.run_id
        outputs.stage(
            os.path.join(workdir, "snn_accuracy.png"),
            lambda path: summaries.plot_accuracy(
                path,
                result["ann_accuracy"],
                accuracy["top1"],
                f"{config.dataset} / {config.model} / SignedQCFS → ST-BIF, {dataset.num_test} test images",
                levels=plan.levels,
                num_test=dataset.num_test,
                readout="output accumulated over 1..t",
                settled_step=settled,
            ),
        )
        result["outputs"] = ["snn_accuracy.png"]
        result_path = os.path.join(workdir, "snn_eval.json")
        if os.path.exists(result_path):
            print(f"note: replacing the previous {result_path} (keep a copy to compare runs).")

        def write_json(path):
            with open(path, "w") as f:
                json.dump(result, f, indent=2)

        outputs.stage(result_path, write_json)
    for stale in ("snn_layers.png", "snn.nir"):
        if os.path.exists(os.path.join(workdir, stale)):
            print(f"note: {stale} in {workdir} is from an earlier conversion, not from this run.")
    print(f"Wrote {result_path} and snn_accuracy.png")
    return result
