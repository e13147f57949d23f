"""Conversion + evaluation run: restore the trained ANN, convert it, and report ANN vs SNN accuracy."""

from __future__ import annotations

import dataclasses
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

from snnjax import conversion, io as interop
from snnjax.analysis import neurobench as neurobench_lib, reports, summaries
from snnjax.conversion import calibration as calibration_lib, hardware, neuron_registry, recording
from snnjax.core import parallel
from snnjax.experiment import methods, metrics_writer, training, transformer_pipeline, workdir as workdir_lib
from snnjax.experiment.config import validate_config
from snnjax.io import checkpoints, data as data_lib, export as export_lib
from snnjax.nn.layers import threshold_to_param
from snnjax.nn.vit import TRANSFORMERS

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
      snn_model: from `snnjax.spiking_model` (layer or step mode).
      snn_variables: from `snnjax.convert_variables`.
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
    variables, report = interop.import_torch_state_dict(
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


def _check_conversion_inputs(
    config: ml_collections.ConfigDict | None, workdir: str, overrides: Mapping[str, Any] | None
) -> tuple[ml_collections.ConfigDict, dict | None]:
    """Everything `convert_and_evaluate` can check before it loads data or computes anything.

    Returns:
      ``(config, recorded)``: the config to convert with (`snnjax.experiment.workdir.conversion_config`)
      and the training config recorded in ``workdir`` (None when importing a .pth, or for a workdir from
      before configs were recorded).
    """
    if config is not None:
        validate_config(config)  # a bad value is named before anything about the workdir
    if config is None and (overrides or {}).get("torch_checkpoint") is not None:
        raise ValueError(
            "importing a PyTorch checkpoint (config.torch_checkpoint) needs --config: the workdir records "
            "no training config to say which network the checkpoint holds."
        )
    if config is None or config.torch_checkpoint is None:
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise NotADirectoryError(f"--workdir={workdir!r} is a file, not a folder.")
        if not os.path.isdir(workdir):
            raise FileNotFoundError(
                f"--workdir={workdir!r} does not exist: run train.py with the same --config and --workdir "
                "first (or set config.torch_checkpoint to convert a PyTorch checkpoint)."
            )
        config, recorded = workdir_lib.conversion_config(workdir, config, overrides)
    else:
        recorded = None
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
        return config, None
    if not workdir_lib.has_checkpoint(workdir, config.checkpoint):
        raise FileNotFoundError(
            f"No checkpoint in {os.path.join(workdir, checkpoints.CHECKPOINT_KINDS[config.checkpoint])}: "
            "run train.py with the same --config and --workdir first."
        )
    if recorded is None:
        print(
            f"warning: {workdir} has no {workdir_lib.CONFIG_FILE} (trained by an older snnjax): the config "
            "cannot be checked against the one it was trained with.",
            file=sys.stderr,
        )
    return config, recorded


def convert_and_evaluate(
    config: ml_collections.ConfigDict | None, workdir: str, overrides: Mapping[str, Any] | None = None
) -> dict:
    """The conversion run: restore → convert → simulate → analyse → write, for the ANN trained in ``workdir``.

    Every check that needs no computation runs first: the config (read from ``workdir``'s
    ``config.json`` plus ``overrides`` when ``config`` is None; otherwise its network fields must equal
    the recorded ones: `snnjax.experiment.workdir.conversion_config`), the checkpoint's
    presence, that ``workdir`` can be written to (it is created for an imported .pth), that no other
    process holds its lock, and that ``config.export`` names no workdir record. Runs under
    ``jax.default_matmul_precision(config.eval_precision)`` (``"highest"`` by default: true float32
    convolutions on GPUs, whose default for float32 is TF32).

    Prints the accuracy table and the layer-wise report, and writes to ``workdir``: ``snn_eval.json``
    (`record`), ``snn_accuracy.png`` and ``snn_layers.png`` (plus ``snn.nir`` and the
    ``config.export`` artefact when asked), as one set: staged, then renamed into place together, so an
    interruption leaves the previous complete set or this one (`write`).

    Args:
      config: the whole config (as training took it, with conversion fields changed), or None to use
        the one recorded in ``workdir``.
      workdir: the training workdir.
      overrides: conversion fields to change on the recorded config (with ``config=None``).

    Returns:
      The dictionary written to ``snn_eval.json``.

    Raises:
      FileNotFoundError: if ``workdir`` holds no checkpoint.
      ValueError: if a field fixed by training differs from the recorded one, every checkpoint step is
        unreadable, or a readable one stores another network
        (`snnjax.io.checkpoints.CheckpointMismatchError`).
    """
    config, trained_config = _check_conversion_inputs(config, workdir, overrides)
    plan = ConversionPlan.from_config(config)
    with (
        workdir_lib.prepared_workdir(workdir, "convert.py"),
        jax.default_matmul_precision(config.eval_precision),
    ):
        mesh = parallel.data_mesh()
        restored = restore(plan, workdir, mesh)
        if config.model in TRANSFORMERS:  # its own SNN and reports; the variables are used as trained
            return transformer_pipeline.run(plan, restored, trained_config, workdir, mesh)
        converted = convert(plan, restored, mesh)
        start = time.perf_counter()  # as before: the evaluations and reports, not loading or converting
        accuracy = simulate(plan, restored, converted, mesh)
        analysis = analyse(plan, restored, converted, mesh)
        print(f"(evaluation took {time.perf_counter() - start:.1f}s)")
        result = record(plan, restored, converted, accuracy, analysis, trained_config)
        write(plan, workdir, result, restored, converted, accuracy, analysis)
        return result


@dataclasses.dataclass(frozen=True)
class ConversionPlan:
    """What a conversion run does, read once from the config; the stages read this, never the config.

    Attributes:
      config: the resolved config, frozen. Read where a stage needs a detail no decision depends on:
        the network's architecture and activation (`build`), the data and checkpoint to restore, a
        calibration's sample sizes, the printed header; `record` writes it into ``snn_eval.json``.
      method, levels: the training method and its L (None for unquantized methods).
      v0: the initial membrane as a fraction of θ.
      neuron: the plain SNN's neuron (the method's, or ``config.snn_neuron``); the layer report,
        NeuroBench counts and NIR export use it.
      post: the low-latency method (`snnjax.experiment.methods.PostConversion`), or None.
      hardware: ``(weight_bits, weight_scale, state_bits or None)`` of the integer hardware form
        (`snnjax.conversion.hardware`), or None for float32.
      fold_bn, per_channel, threshold_parameterization, max_pool: how the SNN is built.
      mode, dtype, num_steps, batch_size: how it is simulated (`simulate`).
      balancing: ``"threshold"`` or ``"weights"``.
      relu_calibration: ``(examples, percentile)`` of the data-based θ of a plain-ReLU ANN, else None.
      report_steps, report_examples, energy_pj: the layer report's t, images, and pJ per MAC / AC.
      export_nir, export: the optional exports (`write`).
    """

    config: ml_collections.FrozenConfigDict
    method: str
    levels: int | None
    v0: float
    neuron: str
    post: methods.PostConversion | None
    hardware: tuple[int, str, int | None] | None
    fold_bn: bool
    per_channel: bool
    threshold_parameterization: str
    max_pool: str
    mode: str
    dtype: str
    num_steps: int
    batch_size: int
    balancing: str
    relu_calibration: tuple[int, float] | None
    report_steps: tuple[int, ...]
    report_examples: int
    energy_pj: tuple[float, float]
    export_nir: bool
    export: str | None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> ConversionPlan:
        """The plan of a validated config (`snnjax.experiment.config.validate_config`)."""
        levels = methods.levels(config)
        report_steps = {min(int(t), config.snn_num_steps) for t in config.report_steps}
        if levels is not None:
            report_steps.add(min(levels, config.snn_num_steps))
        relu = config.method == methods.Method.RELU
        return cls(
            config=ml_collections.FrozenConfigDict(config),
            method=config.method,
            levels=levels,
            v0=methods.initial_membrane_fraction(config),
            neuron=methods.snn_neuron(config),
            post=methods.post_conversion(config),
            hardware=(
                (
                    config.hardware_weight_bits,
                    config.hardware_weight_scale,
                    config.hardware_state_bits or None,
                )
                if config.hardware_weight_bits
                else None
            ),
            fold_bn=config.fold_bn,
            per_channel=config.per_channel_threshold,
            threshold_parameterization=config.threshold_parameterization,
            max_pool=config.snn_max_pool,
            mode=config.snn_mode,
            dtype=config.snn_dtype,
            num_steps=int(config.snn_num_steps),
            batch_size=int(config.eval_batch_size),
            balancing=config.balancing,
            relu_calibration=(config.calibration_examples, config.calibration_percentile) if relu else None,
            report_steps=tuple(sorted(report_steps)),
            report_examples=int(config.report_examples),
            energy_pj=(config.energy_pj_per_mac, config.energy_pj_per_ac),
            export_nir=config.export_nir,
            export=config.export,
        )

    @property
    def run_neuron(self) -> str:
        """The neuron the accuracy is measured with.

        The low-latency method's; the fixed-point IF with a hardware membrane width; else `neuron`.
        """
        if self.post is not None:
            return self.post.neuron
        return "fixed_point_if" if self.hardware is not None and self.hardware[2] else self.neuron

    @property
    def neuron_options(self) -> dict:
        if self.post is not None:
            return dict(self.post.neuron_options)
        return {"bits": self.hardware[2]} if self.run_neuron == "fixed_point_if" else {}

    @property
    def run_spec(self) -> neuron_registry.Neuron:
        """The record of `run_neuron` (`snnjax.conversion.neuron_registry`)."""
        return neuron_registry.neuron(self.run_neuron)

    @property
    def windowed(self) -> bool:
        """Whether the plain neuron's output exists only at the end of a window (``integrate_then_fire``)."""
        return neuron_registry.neuron(self.neuron).windowed

    def build(self, num_classes: int) -> nn.Module:
        """The ANN of the trained config (`snnjax.experiment.methods.build_ann`)."""
        return methods.build_ann(self.config, num_classes)

    def snn(
        self, ann_model: nn.Module, mode: str | None = None, plain: bool = False
    ) -> conversion.SpikingNetwork:
        """The SNN: ``ann_model`` with its activations swapped for this plan's neuron.

        Args:
          ann_model: the ANN (`build`).
          mode: ``"layer"`` or ``"step"`` (default: the plan's).
          plain: the plain neuron (`neuron`) instead of the low-latency method's (`run_neuron`).
        """
        model = conversion.spiking_model(
            ann_model,
            v0=self.v0,
            fold_bn=self.fold_bn,
            per_channel=self.per_channel,
            mode=mode or self.mode,
            neuron=self.neuron if plain else self.run_neuron,
            neuron_options=None if plain else self.neuron_options,
        )
        return model.clone(pooling=self.max_pool) if hasattr(model.ann, "pooling") else model


@dataclasses.dataclass(frozen=True)
class Restored:
    """The trained ANN and its data.

    Attributes:
      dataset: the dataset with its test split drawn down to ``config.test_examples``.
      full_test: the size of the whole test split.
      model: the ANN module.
      variables: its trained ``{"params", "batch_stats"}`` (replicated over the mesh).
      source: where they came from (``{"checkpoint", "step", "directory"}`` or
        ``{"torch_checkpoint", "sha256", "torch_layout"}``).
    """

    dataset: Any
    full_test: int
    model: nn.Module
    variables: dict
    source: dict


def restore(plan: ConversionPlan, workdir: str, mesh: jax.sharding.Mesh) -> Restored:
    """Stage 1: the dataset, the ANN and its trained variables (checkpoint or imported .pth)."""
    config = plan.config
    dataset = data_lib.load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
    full_test = dataset.num_test
    dataset = data_lib.subsample_test(dataset, config.test_examples)
    model = plan.build(dataset.num_classes)
    variables, source = _restore(config, workdir, dataset, model, mesh)
    return Restored(dataset, full_test, model, variables, source)


@dataclasses.dataclass(frozen=True)
class Converted:
    """The ANN's variables turned into the SNN's.

    Attributes:
      ann_variables: the ANN's variables with data-based thresholds for a plain-ReLU ANN (else the
        trained ones).
      snn_variables: the plain SNN's (`snnjax.convert_variables`: λ → θ, BatchNorm folded).
      simulated_variables: what the accuracy is measured with (weights balanced, or calibrated by the
        low-latency method; else ``snn_variables``).
      calibration: the low-latency calibration's record (training images only), or None.
      hardware: the hardware form's record (`snnjax.conversion.hardware.quantize_for_hardware`), or
        None.
      spiking_layers: the number of spiking layers (all lie on the longest path: shortcuts add none).
    """

    ann_variables: dict
    snn_variables: dict
    simulated_variables: dict
    calibration: dict | None
    hardware: dict | None
    spiking_layers: int


def convert(plan: ConversionPlan, restored: Restored, mesh: jax.sharding.Mesh) -> Converted:
    """Stage 2: thresholds (data-based for ReLU), λ → θ with BatchNorm folded, balancing, calibration.

    Before balancing, calibration or the hardware form (and before any evaluation), the memory check:
    a T or batch the device cannot hold fails here, not after minutes of work (`_check_memory`).
    """
    model, dataset = restored.model, restored.dataset
    ann_variables = restored.variables
    if plan.relu_calibration is not None:
        examples, percentile = plan.relu_calibration
        ann_variables = conversion.calibrate_thresholds(
            model, ann_variables, dataset.calibration_images(examples), percentile, plan.per_channel
        )
    example = jnp.zeros((1, *dataset.image_shape))  # the structure graph reads shapes only
    snn_variables = conversion.convert_variables(
        ann_variables,
        threshold_parameterization=plan.threshold_parameterization,
        fold_bn=plan.fold_bn,
        model=model,
        inputs=example,
    )
    _check_memory(plan, plan.snn(model), snn_variables, dataset.image_shape, mesh.size)
    simulated = snn_variables
    if plan.balancing == "weights":
        simulated = conversion.balance_weights(snn_variables, model=model, inputs=example)
    calibration = None
    if plan.post is not None and plan.post.calibration is not None:
        simulated, calibration = _calibrate(
            plan.config,
            dataset,
            model,
            ann_variables,
            plan.snn(model, "layer", plain=True),
            snn_variables,
            plan.post.calibration,
        )
    hardware_info = None
    if plan.hardware is not None:
        weight_bits, weight_scale, state_bits = plan.hardware
        simulated, hardware_info = hardware.quantize_for_hardware(
            snn_variables,
            model=model,
            inputs=example,
            weight_bits=weight_bits,
            weight_scale=weight_scale,
            state_bits=state_bits,
        )
    spiking_layers = len(recording.activation_shapes(model, ann_variables, example))
    return Converted(ann_variables, snn_variables, simulated, calibration, hardware_info, spiking_layers)


def simulate(plan: ConversionPlan, restored: Restored, converted: Converted, mesh) -> dict:
    """Stage 3: the ANN's test accuracy and the SNN's at every t; prints the accuracy table.

    Returns:
      ``{"ann": {"accuracy", "top5_accuracy"}, "snn": {"top1": [T], "top5": [T]}, "latency": {t: steps}}``.
    """
    dataset, model = restored.dataset, restored.model
    ann = training.evaluate(
        training.inference_state(model, restored.variables), dataset.test_batches(plan.batch_size), mesh
    )
    windows = summaries.reported_steps(plan.num_steps, plan.levels) if plan.windowed else None
    snn = snn_accuracy_by_step(
        plan.snn(model),
        converted.simulated_variables,
        dataset.test_batches(plan.batch_size),
        plan.num_steps,
        mesh,
        num_batches=-(-dataset.num_test // plan.batch_size),
        windows=windows,
        dtype=jnp.dtype(plan.dtype),
    )
    config, card = plan.config, plan.run_spec
    print(
        f"\n{config.dataset} test set ("
        + (
            f"{dataset.num_test} images"
            if dataset.num_test == restored.full_test
            else f"{dataset.num_test} of {restored.full_test} images drawn uniformly: config.test_examples"
        )
        + f"), {config.model}, method {plan.method}"
        + (f", L={plan.levels}" if plan.levels else "")
        + f", {plan.run_neuron} neuron, {plan.mode} mode, {plan.dtype}"
    )
    if plan.post is not None:
        calibration = converted.calibration
        print(
            f"post-conversion method {plan.post.name}"
            + "".join(f", {k}={v}" for k, v in plan.neuron_options.items())
            + f"; spikes: {card.alphabet}; extra state per neuron: {card.state}"
            + (
                f"; calibrated on {calibration['images']} training images for T={calibration['steps']}"
                if calibration
                else ""
            )
        )
    if converted.hardware is not None:
        info = converted.hardware
        print(
            f"hardware form: {info['weight_bits']}-bit weights per {info['weight_scale']}, "
            + (f"{info['state_bits']}-bit saturating membrane" if info["state_bits"] else "float membrane")
            + "; grid exponents p (θ = 2^p): "
            + ", ".join(f"{layer['name']} {layer.get('exponent', 'head')}" for layer in info["layers"])
            + " (the layer report below is the float SNN's)"
        )
    prerun = plan.neuron_options.get("prerun", 0)
    latency = {
        t: plan.run_spec.total_latency(t, converted.spiking_layers, prerun)
        for t in range(1, plan.num_steps + 1)
    }
    print(summaries.format_table(ann["accuracy"], snn["top1"], plan.levels, latency))
    last = max(t for t in range(1, plan.num_steps + 1) if np.isfinite(snn["top1"][t - 1]))
    print(f"top-5: ANN {100 * ann['top5_accuracy']:.2f}%, SNN at T={last} {100 * snn['top5'][last - 1]:.2f}%")
    return {"ann": ann, "snn": snn, "latency": latency}


def analyse(plan: ConversionPlan, restored: Restored, converted: Converted, mesh) -> dict:
    """Stage 4: the layer-wise report, energy, NeuroBench metrics (and the low-latency method's own).

    The layer-wise report compares rate·θ with the ANN, so it runs the plain neuron's threshold form
    in float32 and layer mode (the same spikes as weight balancing and step mode; bfloat16 is
    reported by accuracy only).

    Returns:
      ``{"layers", "energy", "neurobench", "method_energy"}`` (the last None without a low-latency method).
    """
    dataset, model = restored.dataset, restored.model
    plain = plan.snn(model, "layer", plain=True)
    report_batch = min(plan.batch_size, 32 * mesh.size)

    def report_batches():
        return itertools.islice(dataset.test_batches(report_batch), -(-plan.report_examples // report_batch))

    layer_report = reports.spiking_layer_report(
        model,
        converted.ann_variables,
        plain,
        converted.snn_variables,
        report_batches(),
        list(plan.report_steps),
        plan.v0,
        windowed=plan.windowed,
        mesh=mesh,
    )
    spikes = {layer["name"]: layer["spikes_per_image"] for layer in layer_report["layers"]}
    costs = reports.linear_layer_costs(model, converted.ann_variables, dataset.image_shape)
    energy = reports.energy_report(costs, spikes, *plan.energy_pj)
    print(summaries.format_layer_table(layer_report, energy))
    # The same plain SNN, images and T, counted as NeuroBench counts (snnjax.analysis.neurobench).
    neurobench = neurobench_lib.neurobench_metrics(
        plain, converted.snn_variables, report_batches(), layer_report["firing_steps"]
    )
    print(summaries.format_neurobench(neurobench))
    method_energy = None
    if plan.post is not None:
        name, firing_steps = plan.post.name, layer_report["firing_steps"]
        method_model = plan.snn(model, "layer")
        method_spikes = reports.method_spikes_per_image(
            method_model, converted.simulated_variables, report_batches(), firing_steps, mesh
        )
        method_energy = reports.energy_report(costs, method_spikes, *plan.energy_pj)
        method_energy["readout_steps"] = firing_steps
        method_energy["simulated_steps"] = method_model.simulated_steps(firing_steps)
        method_energy["spikes_per_image"] = sum(method_spikes.values())
        print(
            f"{name}: {method_energy['spikes_per_image']:.0f} spikes/image over "
            f"{method_energy['simulated_steps']} simulated steps (t={firing_steps}; plain IF: "
            f"{layer_report['spikes_per_image']:.0f}), energy {method_energy['snn_energy_uj']:.3f} µJ/image "
            f"(plain IF {energy['snn_energy_uj']:.3f}, ANN {energy['ann_energy_uj']:.3f})"
        )
        print(
            f"{name}: {summaries.energy_comparison(method_energy['snn_energy_uj'], energy['ann_energy_uj'])}"
        )
    if plan.windowed:
        layers = converted.spiking_layers
        print(
            f"latency: {plan.neuron} separates the layers in time; an output needs ({layers} spiking "
            f"layers + 1) × T steps: T={plan.levels} → {(layers + 1) * plan.levels} steps."
        )
    return {
        "layers": layer_report,
        "energy": energy,
        "neurobench": neurobench,
        "method_energy": method_energy,
    }


def record(
    plan: ConversionPlan,
    restored: Restored,
    converted: Converted,
    accuracy: dict,
    analysis: dict,
    trained_config: dict | None,
) -> dict:
    """Stage 5a: the dictionary ``snn_eval.json`` holds (accuracies as fractions, by t as strings)."""

    def by_step(values):
        return {str(t + 1): float(a) for t, a in enumerate(values) if np.isfinite(a)}

    ann, snn, latency = accuracy["ann"], accuracy["snn"], accuracy["latency"]
    card = plan.run_spec
    config = plan.config
    return {
        "dataset": config.dataset,
        "method": plan.method,
        "T": plan.num_steps,
        # Test images the accuracies are measured on (fewer than the test set after config.test_examples).
        "num_test_images": restored.dataset.num_test,
        "ann_accuracy": float(ann["accuracy"]),
        "snn_accuracy": by_step(snn["top1"]),
        "ann_top5_accuracy": float(ann["top5_accuracy"]),
        "snn_top5_accuracy": by_step(snn["top5"]),
        "neuron": plan.run_neuron,
        "post_conversion": config.post_conversion,
        "neuron_options": plan.neuron_options,
        "spike_alphabet": card.alphabet,
        "extra_state_per_neuron": card.state,
        # Training images the corrections were computed from (never test images); None without one.
        "calibration": converted.calibration,
        # The integer hardware form (weight bits, grids, levels used, weight error); None for float32.
        "hardware": converted.hardware,
        "snn_mode": plan.mode,
        "snn_dtype": plan.dtype,
        "balancing": plan.balancing,
        "spiking_layers": converted.spiking_layers,
        # Total latency of each readout t: every simulated step from the first input to the output,
        # pre-run steps included (snnjax.conversion.neuron_registry.Neuron.total_latency).
        "latency_steps": {t: latency[int(t)] for t in by_step(snn["top1"])},
        "layers": analysis["layers"],
        "energy": analysis["energy"],
        # NeuroBench's metrics under its names (Footprint, ConnectionSparsity, ActivationSparsity,
        # SynapticOperations: Effective_MACs, Effective_ACs, Dense) for the plain SNN above.
        "neurobench": analysis["neurobench"],
        # The post-conversion method's own spikes and energy (pre-run steps included); None without one.
        "method_energy": analysis["method_energy"],
        # What produced these numbers.
        "v0": plan.v0,
        "levels": plan.levels,
        "source": restored.source,
        "trained_config": trained_config,
        "config": workdir_lib.config_dict(config),
        # Filled by `write`: the id of the output set and its files.
        "run_id": None,
        "outputs": None,
    }


def write(
    plan: ConversionPlan,
    workdir: str,
    result: dict,
    restored: Restored,
    converted: Converted,
    accuracy: dict,
    analysis: dict,
) -> None:
    """Stage 5b: ``snn_eval.json``, the two plots and the asked-for exports, as one set.

    The files are staged beside their destinations and renamed into place together at the end, so an
    interruption leaves the previous complete set or this one (`snnjax.experiment.workdir.OutputSet`);
    ``result`` gets the set's ``"run_id"`` and ``"outputs"``, and the NIR graph and the artefact's
    sidecar carry the same ``run_id``. A previous ``snn_eval.json`` is replaced with a note.
    """
    dataset, model, layer_report = restored.dataset, restored.model, analysis["layers"]
    latency, config = accuracy["latency"], plan.config
    with workdir_lib.OutputSet() as outputs:
        result["run_id"] = outputs.run_id
        title = f"{config.dataset} / {config.model} / {plan.method} ({plan.run_neuron})"
        if plan.hardware is not None:
            title += f", {plan.hardware[0]}-bit weights" + (
                f", {plan.hardware[2]}-bit state" if plan.hardware[2] else ""
            )
        outputs.stage(
            os.path.join(workdir, "snn_accuracy.png"),
            lambda path: summaries.plot_accuracy(
                path,
                result["ann_accuracy"],
                accuracy["snn"]["top1"],
                f"{title}, {dataset.num_test} test images",
                latency if any(latency[t] != t for t in latency) else None,
                levels=plan.levels,
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
        if plan.export_nir:
            # The plain IF network; with hardware bit widths, its integer-form weights and thresholds.
            _stage_nir(
                outputs,
                plan.snn(model, "layer", plain=True),
                converted.simulated_variables if plan.hardware else converted.snn_variables,
                dataset.image_shape,
                plan.v0,
                workdir,
            )
            written.append("snn.nir")
        if plan.export is not None:
            path = os.path.join(workdir, plan.export)
            metadata = {
                "dataset": config.dataset,
                "model": config.model,
                "method": plan.method,
                "levels": plan.levels,
                "post_conversion": config.post_conversion,
                "neuron_options": plan.neuron_options,
                "source": restored.source,
            }
            exported = plan.snn(model), converted.simulated_variables, plan.num_steps
            _stage_export(outputs, path, *exported, dataset, metadata)
            written += [_named_from(workdir, path), _named_from(workdir, path) + ".json"]
        # The files of this run (relative to the workdir unless outside it).
        result["outputs"] = written
        result_path = os.path.join(workdir, "snn_eval.json")
        if os.path.exists(result_path):
            print(f"note: replacing the previous {result_path} (keep a copy to compare runs).")

        def write_json(path):
            with open(path, "w") as f:
                json.dump(result, f, indent=2)

        outputs.stage(result_path, write_json)  # last: the record of the set
    if not plan.export_nir and os.path.exists(os.path.join(workdir, "snn.nir")):
        print(f"note: snn.nir in {workdir} is from an earlier conversion, not from this run.")
    run = f"snn_{plan.method}_{config.post_conversion}_{plan.run_neuron}_{plan.mode}_{plan.dtype}"
    if plan.hardware is not None:  # each bit-width variant keeps its own curves
        run += f"_w{plan.hardware[0]}{plan.hardware[1][0]}_s{plan.hardware[2] or 'float'}"
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
    if plan.export_nir:
        print(f"Wrote {os.path.join(workdir, 'snn.nir')} (NIR graph; our IF semantics in metadata['snnjax'])")
    if plan.export is not None:
        path = os.path.join(workdir, plan.export)
        print(f"Wrote {path} and {path}.json (portable SNN at T={plan.num_steps}; snnjax.import_snn)")


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
    plan: ConversionPlan,
    snn_model: conversion.SpikingNetwork,
    snn_variables: Mapping[str, Any],
    image_shape: Sequence[int],
    devices: int,
) -> None:
    """Refuses the plan's T × batch (``snn_num_steps`` × ``eval_batch_size``) if a device cannot hold it.

    Costs one compilation of the simulation for one batch (seconds for the largest models here), paid
    before the ANN evaluation so that a run that cannot finish stops at once.
    """
    available = available_memory_bytes()
    if available is None:
        return
    dtype = jnp.dtype(plan.dtype)
    batch = max(1, plan.batch_size // devices)  # each device simulates its shard of the batch
    need = simulation_memory_bytes(snn_model, snn_variables, image_shape, batch, plan.num_steps, dtype)
    # A margin for what the estimate leaves out: XLA's host allocator, the process's own arrays.
    if need <= 0.75 * available:
        return
    hint = ""
    if snn_model.mode == "layer" and snn_model.spec.step and plan.post is None:
        step = simulation_memory_bytes(
            snn_model.clone(mode="step"), snn_variables, image_shape, batch, plan.num_steps, dtype
        )
        hint = f", or set config.snn_mode='step' (flat in T: about {step / 1e9:.2f} GB here)"
    raise ValueError(
        f"the SNN simulation would need about {need / 1e9:.1f} GB per device (XLA's estimate for "
        f"{batch} images of config.eval_batch_size={plan.batch_size} at config.snn_num_steps="
        f"{plan.num_steps}, {snn_model.mode} mode), more than the {available / 1e9:.1f} GB free on "
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
    """Stages the portable SNN at ``path`` and its sidecar ``path.json`` (`snnjax.export_snn`)."""
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

    graph = interop.export_nir(snn_model, snn_variables, image_shape, v0=v0, lossy=True)
    graph.metadata = {**dict(graph.metadata or {}), "snnjax_run_id": outputs.run_id}
    outputs.stage(os.path.join(workdir, "snn.nir"), lambda temporary: nir.write(temporary, graph))
