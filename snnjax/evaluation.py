"""Conversion + evaluation run: restore the trained ANN, convert it, and report ANN vs SNN accuracy."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from snnjax import (
    calibration as calibration_lib,
    checkpoints,
    conversion,
    data as data_lib,
    export as export_lib,
    interop,
    low_latency,
    methods,
    metrics_writer,
    neurobench as neurobench_lib,
    parallel,
    reports,
    summaries,
    training,
    workdir as workdir_lib,
)
from snnjax.config_validation import validate_config
from snnjax.layers import threshold_to_param
from snnjax.neurons import WINDOWED_NEURONS

__all__ = [
    "available_memory_bytes",
    "convert_and_evaluate",
    "simulation_memory_bytes",
    "snn_accuracy_by_step",
]


@functools.partial(jax.jit, static_argnames=("snn_model", "num_steps", "dtype"))
def _snn_correct_by_step(snn_model, variables, images, labels, mask, num_steps, dtype=jnp.float32):
    logits = conversion.cumulative_mean_logits(
        conversion.spiking_apply(snn_model, variables, images.astype(dtype), num_steps)
    )
    labels_t = jnp.broadcast_to(labels, logits.shape[:2])
    top1 = (jnp.argmax(logits, -1) == labels_t) & mask[None]  # [T, B]
    top5 = training.top_k_correct(logits, labels_t, 5) & mask[None]
    return jnp.sum(top1, axis=1), jnp.sum(top5, axis=1)


def snn_accuracy_by_step(
    snn_model: nn.Module,
    snn_variables: Mapping[str, Any],
    batches: Iterable,
    num_steps: int,
    mesh: jax.sharding.Mesh | None = None,
    num_batches: int | None = None,
    windows: Sequence[int] | None = None,
    dtype: jnp.dtype = jnp.float32,
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
      windows: for a windowed neuron (``integrate_then_fire``), whose result exists only at the end
        of its window: simulate each of these window lengths separately; other t stay NaN.
      dtype: simulation dtype (``jnp.float32`` or ``jnp.bfloat16``); variables are cast to it.

    Returns:
      ``{"top1": [T], "top5": [T]}`` float arrays; entry ``t-1`` is the accuracy of the mean logits
      over steps ``1..t`` (NaN where not simulated).
    """
    mesh = mesh if mesh is not None else parallel.data_mesh()
    snn_variables = parallel.replicate(mesh, jax.tree.map(lambda x: x.astype(dtype), snn_variables))
    simulations = [num_steps] if windows is None else sorted(set(windows))
    top1, top5, count = np.zeros(num_steps), np.zeros(num_steps), 0
    progress = summaries.ProgressLog(f"SNN T={num_steps}", num_batches)
    for batch in tqdm(batches, total=num_batches, desc=f"SNN T={num_steps}", leave=False, disable=None):
        sharded = parallel.shard_batch(mesh, *batch)
        for steps in simulations:
            correct1, correct5 = _snn_correct_by_step(snn_model, snn_variables, *sharded, steps, dtype)
            if windows is None:
                top1 += np.asarray(correct1)
                top5 += np.asarray(correct5)
            else:
                top1[steps - 1] += float(correct1[-1])
                top5[steps - 1] += float(correct5[-1])
        count += int(np.sum(batch[2]))
        progress.update(int(np.sum(batch[2])))
    progress.close()
    if windows is not None:
        unsimulated = np.ones(num_steps, bool)
        unsimulated[np.asarray(simulations) - 1] = False
        top1[unsimulated] = top5[unsimulated] = np.nan
    return {"top1": top1 / count, "top5": top5 / count}


def _import_torch(config: ml_collections.ConfigDict, dataset) -> dict:
    """The ANN variables of a reference PyTorch checkpoint (``config.torch_checkpoint``)."""
    state_dict = interop.read_torch_checkpoint(config.torch_checkpoint)
    variables, report = interop.from_torch_state_dict(
        state_dict,
        config.model,
        dataset.num_classes,
        config.torch_layout,
        dataset.image_shape[0],
        dataset.image_shape[2],
    )
    if report["unmapped"]:
        print(f"warning: {len(report['unmapped'])} checkpoint entries unused: {report['unmapped'][:10]}")
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: (
            threshold_to_param(x, config.threshold_parameterization)
            if path[-1].key == "threshold"
            else jnp.asarray(x)
        ),
        variables["params"],
    )
    return {"params": params, "batch_stats": jax.tree.map(jnp.asarray, variables["batch_stats"])}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore(config: ml_collections.ConfigDict, workdir: str, dataset, model, mesh) -> tuple[dict, dict]:
    """The trained ANN's variables (no optimizer state) and where they came from.

    Returns:
      ``({"params", "batch_stats"}, source)`` with ``source = {"checkpoint", "step", "directory"}``,
      or ``{"torch_checkpoint", "sha256", "torch_layout"}`` for an imported .pth.
    """
    if config.torch_checkpoint is not None:
        source = {
            "torch_checkpoint": os.path.abspath(config.torch_checkpoint),
            "sha256": _sha256(config.torch_checkpoint),
            "torch_layout": config.torch_layout,
        }
        return parallel.replicate(mesh, _import_torch(config, dataset)), source
    manager = checkpoints.checkpoint_manager(workdir, config.checkpoint, read_only=True)
    template = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *dataset.image_shape)), train=False)
    )
    template = {"params": template["params"], "batch_stats": template.get("batch_stats", {})}
    try:
        variables, step, _ = checkpoints.restore_newest_readable(manager, template, mesh, subset=True)
    finally:
        manager.close()
    if variables is None:
        raise FileNotFoundError(
            f"No checkpoint in {manager.directory}: run train.py with the same --config and --workdir first."
        )
    return variables, {
        "checkpoint": config.checkpoint,
        "step": int(step),
        "directory": os.fspath(manager.directory),
    }


def _check_conversion_inputs(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Everything :func:`convert_and_evaluate` can check before it loads data or computes anything.

    Returns:
      The training config recorded in ``workdir`` (None when importing a .pth, or for a workdir from
      before configs were recorded).
    """
    validate_config(config)
    if config.export_nir:
        neuron = methods.snn_neuron(config)
        if neuron != "if" or config.snn_max_pool != "avg":
            raise ValueError(
                f"config.export_nir: NIR has no counterpart for neuron {neuron!r} / snn_max_pool "
                f"{config.snn_max_pool!r}; export needs the IF neuron and average pooling."
            )
        if importlib.util.find_spec("nir") is None:
            raise ValueError("config.export_nir needs the nir package: pip install 'snnjax[nir]'.")
    if config.export is not None:
        if not config.export.strip():
            raise ValueError("config.export is empty: give a file path (relative = inside the workdir).")
        workdir_lib.check_output_path(os.path.join(workdir, config.export), workdir, "config.export")
        if importlib.util.find_spec("flatbuffers") is None:
            raise ValueError(
                "config.export needs the flatbuffers package (jax.export): pip install flatbuffers."
            )
    if config.torch_checkpoint is not None:
        if not os.path.isfile(config.torch_checkpoint):
            raise FileNotFoundError(f"config.torch_checkpoint={config.torch_checkpoint!r} does not exist.")
        if config.per_channel_threshold:
            raise ValueError(
                "reference checkpoints hold one λ per layer: set config.per_channel_threshold=False."
            )
        return None
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir={workdir!r} is a file, not a folder.")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(
            f"--workdir={workdir!r} does not exist: run train.py with the same --config and --workdir "
            "first (or set config.torch_checkpoint to convert a PyTorch checkpoint)."
        )
    if not workdir_lib.has_checkpoint(workdir, config.checkpoint):
        raise FileNotFoundError(
            f"No checkpoint in {os.path.join(workdir, checkpoints.CHECKPOINT_KINDS[config.checkpoint])}: "
            "run train.py with the same --config and --workdir first."
        )
    recorded = workdir_lib.check_conversion_config(config, workdir)
    if recorded is None:
        print(
            f"warning: {workdir} has no {workdir_lib.CONFIG_FILE} (trained by an older snnjax): the config "
            "cannot be checked against the one it was trained with.",
            file=sys.stderr,
        )
    return recorded


def convert_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Restores, converts, evaluates and reports; see :func:`_convert_and_evaluate`.

    Every check that needs no computation runs first: the config's fields, the recorded training
    config of ``workdir`` (the fields that define the network must agree, see
    :func:`snnjax.workdir.check_conversion_config`), the checkpoint's presence, and that ``workdir``
    can be written to (it is created for an imported .pth), that no other process holds its lock, and
    that ``config.export`` names no workdir record. The results are written as one set
    (:class:`snnjax.workdir.OutputSet`). Runs under
    ``jax.default_matmul_precision(config.eval_precision)`` (``"highest"`` by default: true float32
    convolutions on GPUs, whose default for float32 is TF32).
    """
    trained_config = _check_conversion_inputs(config, workdir)
    with (
        workdir_lib.prepared_workdir(workdir, "convert.py"),
        jax.default_matmul_precision(config.eval_precision),
    ):
        return _convert_and_evaluate(config, workdir, trained_config)


def _convert_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, trained_config: dict | None
) -> dict:
    """Restores the ANN trained in ``workdir``, converts it to an SNN, evaluates and reports both.

    Prints the accuracy table and the layer-wise report, and writes to ``workdir``:
    ``snn_eval.json`` (``{"dataset", "method", "T", "ann_accuracy", "snn_accuracy": {"1": ..., "T": ...},
    "ann_top5_accuracy", "snn_top5_accuracy": {...}, "neuron", "snn_dtype", "latency_steps": {...},
    "layers": <reports.spiking_layer_report>, "energy": <reports.energy_report>, "v0", "levels",
    "source": {"checkpoint", "step", "directory"} or {"torch_checkpoint", "sha256", "torch_layout"},
    "trained_config", "config"}``, accuracies as fractions), ``snn_accuracy.png`` and
    ``snn_layers.png`` (plus ``snn.nir`` and the ``config.export`` artefact when asked), as one set:
    staged, then renamed into place together, so an interruption leaves the previous complete set or
    this one; ``snn_eval.json`` names the set (``"run_id"``, ``"outputs"``) and the NIR graph and the
    artefact's sidecar carry the same ``run_id``. A previous ``snn_eval.json`` is replaced with a note.

    Args:
      config: the config the ANN was trained with (plus conversion fields).
      workdir: the training workdir.
      trained_config: the config recorded by training (for the provenance in ``snn_eval.json``).

    Returns:
      The dictionary written to ``snn_eval.json``.

    Raises:
      FileNotFoundError: if ``workdir`` holds no checkpoint.
      ValueError: if every checkpoint step is unreadable, or a readable one stores another network
        (:class:`snnjax.checkpoints.CheckpointMismatchError`).
    """
    mesh = parallel.data_mesh()
    dataset = data_lib.load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
    full_test = dataset.num_test
    dataset = data_lib.subsample_test(dataset, config.test_examples)
    ann_model = training.build_ann(config, dataset.num_classes)
    ann_variables, source = _restore(config, workdir, dataset, ann_model, mesh)
    trained_variables = ann_variables
    per_channel = config.per_channel_threshold
    if config.method == methods.Method.RELU:
        calibration = dataset.calibration_images(config.calibration_examples)
        ann_variables = conversion.calibrate_thresholds(
            ann_model, ann_variables, calibration, config.calibration_percentile, per_channel
        )
    example = jnp.zeros((1, *dataset.image_shape))  # the structure graph reads shapes only
    snn_variables = conversion.ann_to_snn_variables(
        ann_variables,
        threshold_parameterization=config.threshold_parameterization,
        fold_bn=config.fold_bn,
        model=ann_model,
        inputs=example,
    )
    neuron = methods.snn_neuron(config)
    v0 = methods.initial_membrane_fraction(config)
    # The low-latency method, if any, changes the neuron the accuracy is measured with; the layer-wise
    # error report stays that of the plain SNN (its ideal-neuron split is defined for it).
    post = methods.post_conversion(config)
    run_neuron = post.neuron if post is not None else neuron
    options = post.neuron_options if post is not None else {}

    def snn_model(mode, plain=False):
        model = conversion.spiking_model(
            ann_model,
            v0=v0,
            fold_bn=config.fold_bn,
            per_channel=per_channel,
            mode=mode,
            neuron=neuron if plain else run_neuron,
            neuron_options=None if plain else options,
        )
        return model.clone(pooling=config.snn_max_pool) if hasattr(model.ann, "pooling") else model

    # Before any evaluation: a T or batch the device cannot hold fails here, not after the ANN's pass.
    _check_memory(config, snn_model(config.snn_mode), snn_variables, dataset.image_shape, mesh.size)
    start = time.perf_counter()
    ann = training.evaluate(
        training.inference_state(ann_model, trained_variables),
        dataset.test_batches(config.eval_batch_size),
        mesh,
    )
    levels = methods.levels(config)
    windowed = neuron in WINDOWED_NEURONS
    windows = summaries.reported_steps(config.snn_num_steps, levels) if windowed else None
    simulated_variables = snn_variables
    if config.balancing == "weights":
        simulated_variables = conversion.balance_weights(snn_variables, model=ann_model, inputs=example)
    calibration = None
    if post is not None and post.calibration is not None:
        simulated_variables, calibration = _calibrate(
            config,
            dataset,
            ann_model,
            ann_variables,
            snn_model("layer", plain=True),
            snn_variables,
            post.calibration,
        )
    accuracy = snn_accuracy_by_step(
        snn_model(config.snn_mode),
        simulated_variables,
        dataset.test_batches(config.eval_batch_size),
        config.snn_num_steps,
        mesh,
        num_batches=-(-dataset.num_test // config.eval_batch_size),
        windows=windows,
        dtype=jnp.dtype(config.snn_dtype),
    )
    snn = accuracy["top1"]
    card = low_latency.NEURON_CARDS[run_neuron]
    print(
        f"\n{config.dataset} test set ("
        + (
            f"{dataset.num_test} images"
            if dataset.num_test == full_test
            else f"{dataset.num_test} of {full_test} images drawn uniformly: config.test_examples"
        )
        + f"), {config.model}, method {config.method}"
        + (f", L={levels}" if levels else "")
        + f", {run_neuron} neuron, {config.snn_mode} mode, {config.snn_dtype}"
    )
    if post is not None:
        print(
            f"post-conversion method {post.name}"
            + "".join(f", {k}={v}" for k, v in options.items())
            + f"; spikes: {card.alphabet}; extra state per neuron: {card.state}"
            + (
                f"; calibrated on {calibration['images']} training images for T={calibration['steps']}"
                if calibration
                else ""
            )
        )
    # All activation layers lie on the longest path: shortcuts skip activations, they add none.
    num_spiking = len(
        reports.activation_shapes(ann_model, ann_variables, jnp.zeros((1, *dataset.image_shape)))
    )
    latency = {
        t: low_latency.total_latency(run_neuron, t, num_spiking, options.get("prerun", 0))
        for t in range(1, config.snn_num_steps + 1)
    }
    print(summaries.format_table(ann["accuracy"], snn, levels, latency))
    last = max(t for t in range(1, len(snn) + 1) if np.isfinite(snn[t - 1]))
    top5 = accuracy["top5"][last - 1]
    print(f"top-5: ANN {100 * ann['top5_accuracy']:.2f}%, SNN at T={last} {100 * top5:.2f}%")
    # The layer-wise report compares rate·θ with the ANN, so it runs the threshold form in float32 and
    # layer mode (same spikes as weight balancing and step mode; bfloat16 is reported by accuracy only).
    report_steps = {min(int(t), config.snn_num_steps) for t in config.report_steps}
    if levels is not None:
        report_steps.add(min(levels, config.snn_num_steps))
    report_steps = sorted(report_steps)
    report_batch = min(config.eval_batch_size, 32 * mesh.size)
    layer_report = reports.spiking_layer_report(
        ann_model,
        ann_variables,
        snn_model("layer", plain=True),
        snn_variables,
        itertools.islice(dataset.test_batches(report_batch), -(-config.report_examples // report_batch)),
        report_steps,
        v0,
        windowed=windowed,
        mesh=mesh,
    )
    spikes = {layer["name"]: layer["spikes_per_image"] for layer in layer_report["layers"]}
    costs = reports.linear_layer_costs(ann_model, ann_variables, dataset.image_shape)
    energy = reports.energy_report(costs, spikes, config.energy_pj_per_mac, config.energy_pj_per_ac)
    print(summaries.format_layer_table(layer_report, energy))
    # The same plain SNN, images and T, counted as NeuroBench counts (snnjax.neurobench).
    neurobench = neurobench_lib.neurobench_metrics(
        snn_model("layer", plain=True),
        snn_variables,
        itertools.islice(dataset.test_batches(report_batch), -(-config.report_examples // report_batch)),
        layer_report["firing_steps"],
    )
    print(summaries.format_neurobench(neurobench))
    method_energy = None
    if post is not None:
        firing_steps = layer_report["firing_steps"]
        method_spikes = reports.method_spikes_per_image(
            snn_model("layer"),
            simulated_variables,
            itertools.islice(dataset.test_batches(report_batch), -(-config.report_examples // report_batch)),
            firing_steps,
            mesh,
        )
        method_energy = reports.energy_report(
            costs, method_spikes, config.energy_pj_per_mac, config.energy_pj_per_ac
        )
        method_energy["readout_steps"] = firing_steps
        method_energy["simulated_steps"] = snn_model("layer").simulated_steps(firing_steps)
        method_energy["spikes_per_image"] = sum(method_spikes.values())
        print(
            f"{post.name}: {method_energy['spikes_per_image']:.0f} spikes/image over "
            f"{method_energy['simulated_steps']} simulated steps (t={firing_steps}; plain IF: "
            f"{layer_report['spikes_per_image']:.0f}), energy {method_energy['snn_energy_uj']:.3f} µJ/image "
            f"(plain IF {energy['snn_energy_uj']:.3f}, ANN {energy['ann_energy_uj']:.3f})"
        )
        comparison = summaries.energy_comparison(method_energy["snn_energy_uj"], energy["ann_energy_uj"])
        print(f"{post.name}: {comparison}")
    if windowed:
        print(
            f"latency: {neuron} separates the layers in time; an output needs ({num_spiking} spiking "
            f"layers + 1) × T steps: T={levels} → {(num_spiking + 1) * levels} steps."
        )
    print(f"(evaluation took {time.perf_counter() - start:.1f}s)")

    def by_step(values):
        return {str(t + 1): float(a) for t, a in enumerate(values) if np.isfinite(a)}

    result = {
        "dataset": config.dataset,
        "method": config.method,
        "T": int(config.snn_num_steps),
        # Test images the accuracies are measured on (fewer than the test set after config.test_examples).
        "num_test_images": dataset.num_test,
        "ann_accuracy": float(ann["accuracy"]),
        "snn_accuracy": by_step(snn),
        "ann_top5_accuracy": float(ann["top5_accuracy"]),
        "snn_top5_accuracy": by_step(accuracy["top5"]),
        "neuron": run_neuron,
        "post_conversion": config.post_conversion,
        "neuron_options": options,
        "spike_alphabet": card.alphabet,
        "extra_state_per_neuron": card.state,
        # Training images the corrections were computed from (never test images); None without one.
        "calibration": calibration,
        "snn_mode": config.snn_mode,
        "snn_dtype": config.snn_dtype,
        "balancing": config.balancing,
        "spiking_layers": num_spiking,
        # Total latency of each readout t: every simulated step from the first input to the output,
        # pre-run steps included (snnjax.low_latency.total_latency).
        "latency_steps": {t: latency[int(t)] for t in by_step(snn)},
        "layers": layer_report,
        "energy": energy,
        # NeuroBench's metrics under its names (Footprint, ConnectionSparsity, ActivationSparsity,
        # SynapticOperations: Effective_MACs, Effective_ACs, Dense) for the plain SNN above.
        "neurobench": neurobench,
        # The post-conversion method's own spikes and energy (pre-run steps included); None without one.
        "method_energy": method_energy,
        # What produced these numbers.
        "v0": v0,
        "levels": levels,
        "source": source,
        "trained_config": trained_config,
        "config": workdir_lib.config_dict(config),
    }
    # The results are one set: staged beside their destinations and renamed into place together at
    # the end, so an interruption leaves the previous complete set or this one (snnjax.workdir).
    with workdir_lib.OutputSet() as outputs:
        result["run_id"] = outputs.run_id
        title = f"{config.dataset} / {config.model} / {config.method} ({run_neuron})"
        outputs.stage(
            os.path.join(workdir, "snn_accuracy.png"),
            lambda path: summaries.plot_accuracy(
                path,
                ann["accuracy"],
                snn,
                f"{title}, {dataset.num_test} test images",
                latency if any(latency[t] != t for t in latency) else None,
                levels=levels,
                num_test=dataset.num_test,
            ),
        )
        outputs.stage(
            os.path.join(workdir, "snn_layers.png"),
            lambda path: summaries.plot_layers(
                path, layer_report, f"{title}, {layer_report['images']} images"
            ),
        )
        written = ["snn_accuracy.png", "snn_layers.png"]
        if config.export_nir:
            _stage_nir(outputs, snn_model("layer"), snn_variables, dataset.image_shape, v0, workdir)
            written.append("snn.nir")
        if config.export is not None:
            path = os.path.join(workdir, config.export)
            metadata = {
                "dataset": config.dataset,
                "model": config.model,
                "method": config.method,
                "levels": levels,
                "post_conversion": config.post_conversion,
                "neuron_options": options,
                "source": source,
            }
            exported = snn_model(config.snn_mode), simulated_variables, config.snn_num_steps
            _stage_export(outputs, path, *exported, dataset, metadata)
            written += [_named_from(workdir, path), _named_from(workdir, path) + ".json"]
        # The files of this run (relative to the workdir unless outside it); the NIR graph and the
        # export's sidecar carry run_id too.
        result["outputs"] = written
        result_path = os.path.join(workdir, "snn_eval.json")
        if os.path.exists(result_path):
            print(f"note: replacing the previous {result_path} (keep a copy to compare runs).")

        def write_json(path):
            with open(path, "w") as f:
                json.dump(result, f, indent=2)

        outputs.stage(result_path, write_json)  # last: the record of the set
    if not config.export_nir and os.path.exists(os.path.join(workdir, "snn.nir")):
        print(f"note: snn.nir in {workdir} is from an earlier conversion, not from this run.")
    run = f"snn_{config.method}_{config.post_conversion}_{run_neuron}_{config.snn_mode}_{config.snn_dtype}"
    # Derived from snn_eval.json (rewritten from it by any later conversion): written after the set.
    wrote_curves = metrics_writer.write_curves(
        os.path.join(workdir, "tensorboard", run),
        {
            "snn/top1_accuracy_vs_t": {int(t): a for t, a in result["snn_accuracy"].items()},
            "snn/top5_accuracy_vs_t": {int(t): a for t, a in result["snn_top5_accuracy"].items()},
            "snn/ann_top1_accuracy": {int(t): result["ann_accuracy"] for t in result["snn_accuracy"]},
            "snn/top1_accuracy_vs_total_latency": {
                latency[int(t)]: a for t, a in result["snn_accuracy"].items()
            },
        },
    )
    print(
        f"Wrote {os.path.join(workdir, 'snn_eval.json')}, snn_accuracy.png and snn_layers.png"
        + (f"; TensorBoard: the accuracy-vs-t curve in tensorboard/{run}" if wrote_curves else "")
    )
    if config.export_nir:
        print(f"Wrote {os.path.join(workdir, 'snn.nir')} (NIR graph; our IF semantics in metadata['snnjax'])")
    if config.export is not None:
        path = os.path.join(workdir, config.export)
        print(
            f"Wrote {path} and {path}.json (portable SNN at T={config.snn_num_steps}; snnjax.load_exported)"
        )
    return result


def available_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Memory free for a computation on ``device`` (default: the first), or None where unknown.

    Accelerators report their allocator's limit minus what is in use; on the CPU it is the host's
    ``MemAvailable`` (Linux ``/proc/meminfo``).
    """
    device = device if device is not None else jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def simulation_memory_bytes(
    snn_model: conversion.SpikingNetwork,
    snn_variables: Mapping[str, Any],
    image_shape: Sequence[int],
    batch: int,
    num_steps: int,
    dtype: jnp.dtype,
) -> int:
    """XLA's estimate of the memory one evaluation batch of the SNN needs on one device (compiled, not run).

    Args:
      snn_model: the SNN as evaluated (layer mode: grows with T; step mode: flat in T).
      snn_variables: its variables (only their shapes and dtypes are read).
      image_shape: ``(H, W, C)``.
      batch: images per device (a data-parallel mesh gives each device ``B / devices``).
      num_steps: T.
      dtype: the simulation dtype.

    Returns:
      Bytes of arguments, outputs and temporaries of the compiled step.
    """
    lowered = _snn_correct_by_step.lower(
        snn_model,
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), snn_variables),
        jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
        jax.ShapeDtypeStruct((batch,), jnp.bool_),
        num_steps,
        dtype,
    )
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        return 0
    return int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes)


def _check_memory(
    config: ml_collections.ConfigDict,
    snn_model: conversion.SpikingNetwork,
    snn_variables: Mapping[str, Any],
    image_shape: Sequence[int],
    devices: int,
) -> None:
    """Refuses ``config.snn_num_steps`` × ``config.eval_batch_size`` when a device cannot hold it.

    Costs one compilation of the simulation for one batch (seconds for the largest models here), paid
    before the ANN evaluation so that a run that cannot finish stops at once.
    """
    available = available_memory_bytes()
    if available is None:
        return
    dtype = jnp.dtype(config.snn_dtype)
    batch = max(1, config.eval_batch_size // devices)  # each device simulates its shard of the batch
    need = simulation_memory_bytes(snn_model, snn_variables, image_shape, batch, config.snn_num_steps, dtype)
    # A margin for what the estimate leaves out: XLA's host allocator, the process's own arrays.
    if need <= 0.75 * available:
        return
    hint = ""
    if snn_model.mode == "layer" and snn_model.neuron == "if" and config.post_conversion == "none":
        step = simulation_memory_bytes(
            snn_model.clone(mode="step"), snn_variables, image_shape, batch, config.snn_num_steps, dtype
        )
        hint = f", or set config.snn_mode='step' (flat in T: about {step / 1e9:.2f} GB here)"
    raise ValueError(
        f"the SNN simulation would need about {need / 1e9:.1f} GB per device (XLA's estimate for "
        f"{batch} images of config.eval_batch_size={config.eval_batch_size} at config.snn_num_steps="
        f"{config.snn_num_steps}, {snn_model.mode} mode), more than the {available / 1e9:.1f} GB free on "
        f"{jax.devices()[0].platform}. Lower config.eval_batch_size (memory grows with it) or "
        f"config.snn_num_steps{hint}."
    )


def _calibrate(
    config, dataset, ann_model, ann_variables, snn_model, snn_variables, kind: str
) -> tuple[dict, dict]:
    """Calibrates the SNN on ``config.post_calibration_examples`` training images (never test images)."""
    images = dataset.calibration_images(config.post_calibration_examples)
    batch = config.eval_batch_size
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    start = time.perf_counter()
    variables, info = calibration_lib.calibrate_snn(
        snn_model,
        snn_variables,
        ann_model,
        ann_variables,
        batches,
        config.post_calibration_steps,
        kind,
        config.step_bias_alpha,
    )
    info["split"] = "train"
    print(
        f"calibrated ({info['kind']}) on {info['images']} training images in {info['batches']} batches "
        f"for T={info['steps']} ({time.perf_counter() - start:.1f}s)"
    )
    return variables, info


def _named_from(workdir: str, path: str) -> str:
    """``path`` relative to ``workdir`` when inside it, else absolute."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(workdir))
    return os.path.abspath(path) if relative.startswith(os.pardir) else relative


def _stage_export(outputs, path: str, snn_model, snn_variables, num_steps: int, dataset, metadata) -> None:
    """Stages the portable SNN at ``path`` and its sidecar ``path.json`` (:func:`snnjax.export_snn`)."""
    _, mean, std = data_lib.NORMALIZATION[dataset.name]
    normalization = {"pixels": "scaled to [0, 1], then (x - mean) / std", "mean": mean, "std": std}
    outputs.stage(
        path,
        lambda temporary: export_lib.export_snn(
            snn_model,
            jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), snn_variables),
            dataset.image_shape,
            num_steps,
            temporary,
            metadata={"normalization": normalization, **metadata, "run_id": outputs.run_id},
        ),
        companions=(".json",),
    )


def _stage_nir(outputs, snn_model, snn_variables, image_shape, v0: float, workdir: str) -> None:
    """Stages ``workdir/snn.nir`` (lossy by request: NIR's IF resets to a value, ours by subtraction)."""
    import nir

    graph = interop.to_nir(snn_model, snn_variables, image_shape, v0=v0, lossy=True)
    graph.metadata = {**dict(graph.metadata or {}), "snnjax_run_id": outputs.run_id}
    outputs.stage(os.path.join(workdir, "snn.nir"), lambda temporary: nir.write(temporary, graph))
