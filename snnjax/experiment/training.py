"""ANN training: pure jitted steps, Optax SGD as in the reference code, Orbax checkpoints in workdir."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import traverse_util
from flax.training import train_state

from snnjax.core import parallel
from snnjax.experiment import methods, workdir as workdir_lib
from snnjax.experiment.config import validate_config
from snnjax.experiment.metrics_writer import MetricsWriter
from snnjax.io import augment as augment_lib, checkpoints, data as data_lib, files
from snnjax.nn.layers import threshold_from_param

__all__ = [
    "TrainState",
    "create_train_state",
    "epoch_cosine_schedule",
    "eval_step",
    "evaluate",
    "inference_state",
    "layer_thresholds",
    "sgd_coupled_weight_decay",
    "top_k_correct",
    "train_and_evaluate",
    "make_train_step",
    "train_step",
]


class TrainState(train_state.TrainState):
    """Flax TrainState plus BatchNorm running statistics."""

    batch_stats: Any = None


def epoch_cosine_schedule(learning_rate: float, num_epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """Cosine decay over epochs, constant within an epoch (PyTorch ``CosineAnnealingLR`` per epoch).

    ``lr(step) = lr0 · (1 + cos(π · epoch / num_epochs)) / 2`` with ``epoch = step // steps_per_epoch``.
    """
    cosine = optax.cosine_decay_schedule(learning_rate, decay_steps=num_epochs)
    return lambda step: cosine(step // steps_per_epoch)


def sgd_coupled_weight_decay(
    schedule: optax.ScalarOrSchedule, momentum: float = 0.9, weight_decay: float = 5e-4
) -> optax.GradientTransformation:
    """PyTorch ``SGD(momentum, weight_decay)``: decay is added to the gradient *before* momentum.

    Applies to every parameter, thresholds λ included, as the reference training does.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(schedule, momentum=momentum),
    )


PARAM_INITS = ("flax", "pytorch")


def pytorch_default_init(params: Any, rng: jax.Array) -> Any:
    """Redraws every ``kernel`` and its layer's ``bias`` as PyTorch initializes ``Conv2d``/``Linear``.

    PyTorch draws weights by ``kaiming_uniform_(a=√5)`` and biases from ``U(±1/√fan_in)``; both are
    ``U(-b, b)`` with ``b = 1/√fan_in`` (``fan_in``: the kernel's entries per output feature, i.e.
    ``kh·kw·C_in/groups`` for an HWIO convolution kernel, ``d_in`` for a ``[d_in, d_out]`` Dense one):
    variance ``1/(3·fan_in)``, a third of Flax's ``lecun_normal`` (``1/fan_in``). Other parameters
    (BatchNorm's scale 1 and bias 0, thresholds) are kept: they match.

    Args:
      params: a Flax parameter tree.
      rng: PRNG key.

    Returns:
      ``params`` with new kernels and biases (same shapes and dtypes).
    """
    flat = traverse_util.flatten_dict(params)
    kernels = sorted(path for path in flat if path[-1] == "kernel")
    for index, path in enumerate(kernels):
        kernel = flat[path]
        bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))
        key_kernel, key_bias = jax.random.split(jax.random.fold_in(rng, index))
        flat[path] = jax.random.uniform(key_kernel, kernel.shape, kernel.dtype, -bound, bound)
        bias_path = (*path[:-1], "bias")
        if bias_path in flat:
            bias = flat[bias_path]
            flat[bias_path] = jax.random.uniform(key_bias, bias.shape, bias.dtype, -bound, bound)
    return traverse_util.unflatten_dict(flat)


def create_train_state(
    model: nn.Module,
    rng: jax.Array,
    image_shape: tuple[int, ...],
    tx: optax.GradientTransformation,
    param_init: str = "flax",
) -> TrainState:
    """Initializes parameters from ``rng`` for images of shape ``image_shape = (H, W, C)``.

    ``param_init="flax"`` keeps the modules' own initializers (``lecun_normal`` kernels, zero biases);
    ``"pytorch"`` redraws kernels and biases as PyTorch would (`pytorch_default_init`).
    """
    if param_init not in PARAM_INITS:
        raise ValueError(f"param_init={param_init!r} is unknown; allowed: {', '.join(PARAM_INITS)}.")
    init_rng, redraw_rng = jax.random.split(rng)
    variables = model.init(
        init_rng if param_init == "pytorch" else rng, jnp.zeros((1, *image_shape)), train=False
    )
    params = variables["params"]
    if param_init == "pytorch":
        params = pytorch_default_init(params, redraw_rng)
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )


def inference_state(model: nn.Module, variables: dict[str, Any]) -> TrainState:
    """A `TrainState` for evaluation only: ``model.apply`` and ``variables``, no optimizer."""
    return TrainState(
        step=0,
        apply_fn=model.apply,
        params=variables["params"],
        tx=None,
        opt_state=None,
        batch_stats=variables.get("batch_stats", {}),
    )


def train_step(
    state: TrainState, images: jax.Array, labels: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a batch.

    Args:
      state: the train state.
      images: ``[B, H, W, C]``.
      labels: ``[B]`` int.

    Returns:
      ``(new_state, {"loss": scalar, "accuracy": scalar})``.
    """

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates.get("batch_stats", {}))  # a model without BatchNorm has none

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, {"loss": loss, "accuracy": accuracy}


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Whether each label is among the ``k`` largest logits: ``logits [..., C]``, ``labels [...]``."""
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)
    # Rank = number of classes scoring strictly higher than the label (ties count in its favour).
    return jnp.sum(logits > label_logit, axis=-1) < k


def eval_step(
    state: TrainState, images: jax.Array, labels: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """Sums of correct predictions and losses over the unmasked examples of a batch.

    Args:
      state: the train state.
      images: ``[B, H, W, C]``.
      labels: ``[B]``.
      mask: ``[B]`` bool, False on padding.

    Returns:
      ``{"correct": scalar, "correct_top5": scalar, "loss": scalar, "count": scalar}`` (sums).
    """
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return {
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) & mask),
        "correct_top5": jnp.sum(top_k_correct(logits, labels, 5) & mask),
        "loss": jnp.sum(jnp.where(mask, losses, 0.0)),
        "count": jnp.sum(mask),
    }


def make_train_step(
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None, seed: int = 0
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Jitted `train_step` (state donated), with optional on-device augmentation.

    Args:
      augment: pure ``augment(images, key) -> images`` applied inside the step; its key is
        ``fold_in(key(seed), state.step)``, so a resumed run draws the same augmentations.
      seed: run seed.

    Returns:
      ``step(state, images, labels) -> (state, metrics)``.
    """

    def step(state, images, labels):
        if augment is not None:
            images = augment(images, jax.random.fold_in(jax.random.key(seed), state.step))
        return train_step(state, images, labels)

    return jax.jit(step, donate_argnums=0)


_jit_eval_step = jax.jit(eval_step)


def evaluate(state: TrainState, batches: Iterable, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Top-1/top-5 accuracy and mean loss of the ANN over ``batches`` (inference-mode BatchNorm).

    Args:
      state: the train state.
      batches: ``(images [B, H, W, C], labels [B], mask [B])`` tuples, e.g. ``dataset.test_batches(B)``.
      mesh: the data mesh.
    """
    totals = {"correct": 0.0, "correct_top5": 0.0, "loss": 0.0, "count": 0.0}
    for batch in batches:
        metrics = _jit_eval_step(state, *parallel.shard_batch(mesh, *batch))
        totals = {k: totals[k] + metrics[k] for k in totals}
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}  # ratios in float64, on host
    return {
        "accuracy": totals["correct"] / totals["count"],
        "top5_accuracy": totals["correct_top5"] / totals["count"],
        "loss": totals["loss"] / totals["count"],
    }


def layer_thresholds(params: Any, parameterization: str) -> dict[str, float]:
    """λ of every threshold activation layer, for logging (a per-channel λ gives its mean).

    Args:
      params: the model's ``params`` tree (on any device).
      parameterization: how λ is stored (``config.threshold_parameterization``).

    Returns:
      ``{"threshold/<module path>": λ}``, e.g. ``{"threshold/act0": 2.31, "threshold/fc_act0": 4.02}``;
      empty for a model without trainable thresholds (plain ReLU).
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    stored = jax.device_get({k: v for k, v in flat.items() if k.endswith("/threshold")})
    return {
        f"threshold/{k.removesuffix('/threshold')}": float(np.mean(threshold_from_param(v, parameterization)))
        for k, v in stored.items()
    }


def build_model_and_optimizer(
    config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int
) -> tuple[nn.Module, optax.GradientTransformation, optax.Schedule]:
    """The ANN, its optimizer and learning-rate schedule for ``config``."""
    schedule = epoch_cosine_schedule(config.learning_rate, config.num_epochs, steps_per_epoch)
    if config.optimizer == "adamw":  # decoupled decay (Loshchilov & Hutter), as transformers train
        tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        tx = sgd_coupled_weight_decay(schedule, config.momentum, config.weight_decay)
    return methods.build_ann(config, num_classes), tx, schedule


def abstract_train_state(config: ml_collections.ConfigDict, dataset, steps_per_epoch: int) -> TrainState:
    """The train state's structure for ``config`` without computing any parameters."""
    model, tx, _ = build_model_and_optimizer(config, dataset.num_classes, steps_per_epoch)
    return jax.eval_shape(
        lambda rng: create_train_state(model, rng, dataset.image_shape, tx, config.param_init),
        jax.random.key(config.seed),
    )


@jax.jit
def _finite_flags(tree) -> list[jax.Array]:
    """One bool per floating-point leaf of ``tree``: whether all its values are finite."""
    return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]


def non_finite_variables(state: TrainState) -> list[str]:
    """Paths (``params/conv_bn0/conv/kernel``, ``opt_state/...``) of the train state's non-finite arrays.

    Checks the parameters, BatchNorm statistics and optimizer state, i.e. everything a checkpoint holds.
    """
    tree = {"params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state}
    flags = iter(jax.device_get(_finite_flags(tree)))
    return [
        "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact) and not next(flags)
    ]


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, devices: list[jax.Device] | None = None
) -> TrainState:
    """Trains the ANN described by ``config``, checkpointing to (and resuming from) ``workdir``.

    Every ``config.log_every_steps`` steps and at each epoch end the metrics are pulled to the host,
    printed (loss, accuracy, images/s, ETA) and written to ``workdir/metrics.jsonl`` and TensorBoard
    (``workdir/tensorboard``). Each epoch ends with a checkpoint in ``workdir/checkpoints`` (latest,
    used to resume) and ``workdir/best`` (highest test accuracy). The config is recorded in
    ``workdir/config.json``; resuming compares against it (see `snnjax.experiment.workdir`).

    Everything is checked before anything is written: the config, the data, the recorded config of
    an existing workdir. A newest checkpoint that cannot be read is set aside (moved to
    ``workdir/set_aside/``) with a warning, and training resumes from the newest readable one.

    Args:
      config: an experiment config (see ``configs/default.py``).
      workdir: output folder; a checkpoint there is resumed automatically.
      devices: devices of the data-parallel mesh (default: all).

    Returns:
      The final train state (replicated over the mesh).

    Raises:
      ValueError: for an invalid config, unreadable data, a workdir trained with another config, or
        a workdir whose checkpoints are all unreadable (each named).
      FloatingPointError: if the training loss or the train state (parameters, BatchNorm statistics,
        optimizer state) becomes non-finite; a non-finite state is never saved, and the message names
        the last finite checkpoint.
    """
    validate_config(config)
    # Processes other than 0 of a multi-process run share process 0's workdir (and its lock).
    with workdir_lib.prepared_workdir(workdir, "train.py", lock=jax.process_index() == 0):
        workdir_lib.check_training_config(config, workdir)
        mesh = parallel.data_mesh(devices)
        if config.batch_size % mesh.size or config.eval_batch_size % mesh.size:
            raise ValueError(
                f"config.batch_size={config.batch_size} and config.eval_batch_size="
                f"{config.eval_batch_size} must be divisible by the device count {mesh.size}."
            )
        dataset = data_lib.load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
        steps_per_epoch = dataset.num_train // config.batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"config.batch_size={config.batch_size} exceeds the {dataset.num_train} training examples."
            )
        remainder = dataset.num_train % config.batch_size
        if config.train_last_batch == "keep" and remainder:
            if remainder % mesh.size:
                raise ValueError(
                    f"config.train_last_batch='keep': the last batch of {remainder} examples "
                    f"({dataset.num_train} mod config.batch_size={config.batch_size}) is not divisible by "
                    f"the device count {mesh.size}; use 'drop' or another batch size."
                )
            steps_per_epoch += 1
        if "autoaugment" in config.augment and dataset.image_shape[-1] != 3:
            raise ValueError(
                f"config.augment includes autoaugment, which needs RGB images; {config.dataset} has "
                f"{dataset.image_shape[-1]} channel(s)."
            )
        latest = checkpoints.checkpoint_manager(workdir, "latest")
        best = checkpoints.checkpoint_manager(workdir, "best")
        failed = True
        try:
            state = _train(config, workdir, mesh, dataset, steps_per_epoch, latest, best)
            failed = False
            return state
        except Exception as error:  # a full disk surfaces as OSError, or tensorstore's ValueError
            full = files.disk_full(error)
            if full is None:
                raise
            with contextlib.suppress(Exception):  # a save in flight may still complete its step
                latest.wait_until_finished()
            raise files.DiskFullError(
                f"the disk is full: writing {getattr(full, 'filename', None) or workdir} failed "
                f"({getattr(full, 'strerror', None) or 'No space left on device'}); "
                f"{_last_good_checkpoint(workdir)} Free space (or move the workdir) and run the same "
                "command again to resume.",
            ) from error
        finally:
            # Also on an interruption: let in-flight async saves finish, so a restart can resume. After
            # a failure, their own errors (the same full disk, a closed handle) must not replace it.
            with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
                latest.wait_until_finished()
                best.wait_until_finished()
                latest.close()
                best.close()


def _last_good_checkpoint(workdir: str) -> str:
    """Names the newest completed checkpoint step (Orbax finishes a step by renaming its folder)."""
    folder = os.path.join(workdir, checkpoints.CHECKPOINT_KINDS["latest"])
    steps = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
    if not steps:
        return "no checkpoint had been saved yet."
    return f"the last good checkpoint is step {steps[-1]} in {folder}."


def _train(config, workdir, mesh, dataset, steps_per_epoch, latest, best) -> TrainState:
    """The body of `train_and_evaluate` once everything is checked and the managers are open."""
    model, tx, schedule = build_model_and_optimizer(config, dataset.num_classes, steps_per_epoch)
    _, mean, std = data_lib.NORMALIZATION[dataset.name]
    step_fn = make_train_step(augment_lib.from_config(config, mean, std), config.seed)
    template = abstract_train_state(config, dataset, steps_per_epoch)
    state, restored_step, unreadable = checkpoints.restore_newest_readable(latest, template, mesh)
    for step in unreadable:  # it would be written again: keep the damaged files, out of Orbax's way
        checkpoints.set_aside(latest, step, "unreadable")
    resume_step = restored_step or 0
    for step in best.all_steps():
        if step > resume_step:
            checkpoints.set_aside(best, step, f"newer than step {resume_step}, which training resumes from")
    if state is None:
        state = create_train_state(
            model, jax.random.key(config.seed), dataset.image_shape, tx, config.param_init
        )
        state = parallel.replicate(mesh, state)
    else:
        print(f"Resuming from {workdir} at step {resume_step}.")
    if jax.process_index() == 0 and (
        restored_step is None or workdir_lib.read_recorded_config(workdir) is None
    ):
        workdir_lib.record_config(config, workdir)  # a fresh run, or a workdir from before records
    start_epoch = resume_step // steps_per_epoch
    print(
        f"Training {config.model} ({config.method}) on {config.dataset}: "
        f"{dataset.num_train} train / {dataset.num_test} test images, "
        f"{config.num_epochs} epochs × {steps_per_epoch} steps of {config.batch_size}, "
        f"{mesh.size} {jax.default_backend()} device(s)."
    )
    # With several processes (one workdir), process 0 writes the host-side files; Orbax coordinates
    # the checkpoints itself.
    writer = MetricsWriter(workdir, resume_step=resume_step, active=jax.process_index() == 0)
    total_steps = config.num_epochs * steps_per_epoch
    start_time = time.perf_counter()
    epoch_sums: dict[str, float] = {}

    def check_finite(loss: float, step: int, epoch: int) -> None:
        """Stops before a non-finite loss or train state can be logged as progress or saved."""
        bad = [] if np.isfinite(loss) else ["training loss"]
        bad += non_finite_variables(state)
        if bad:
            latest.wait_until_finished()
            last = latest.latest_step()
            kept = (
                f"the last checkpoint, step {last} (finite), is kept in {latest.directory}"
                if last is not None
                else "no checkpoint had been saved yet"
            )
            raise FloatingPointError(
                f"training diverged by step {step} (epoch {epoch + 1}): non-finite {', '.join(bad[:6])}"
                f"{' …' if len(bad) > 6 else ''}; nothing from this epoch was saved and {kept}. Lower "
                "config.learning_rate (or raise config.threshold_init) and train again."
            )

    def pull(window: list[dict[str, jax.Array]], step: int, epoch: int) -> dict[str, float]:
        """Brings a window of step metrics to the host (one transfer) and checks them and the state."""
        workdir_lib.noticed_interrupt()  # a Ctrl-C swallowed since the last pull stops the run here
        means = {k: float(np.mean(v)) for k, v in jax.device_get(_stack(window)).items()}
        check_finite(means["loss"], step, epoch)
        for k, v in means.items():
            epoch_sums[k] = epoch_sums.get(k, 0.0) + v * len(window)
        return means

    try:
        for epoch in range(start_epoch, config.num_epochs):
            epoch_sums.clear()
            window, window_images, window_start = [], 0, time.perf_counter()
            batches = dataset.train_batches(
                config.batch_size, config.seed, epoch, keep_last=config.train_last_batch == "keep"
            )
            for index, (images, labels) in enumerate(batches, start=1):
                state, metrics = step_fn(state, *parallel.shard_batch(mesh, images, labels))
                window.append(metrics)
                window_images += len(labels)  # the kept last batch (train_last_batch="keep") is shorter
                if len(window) < config.log_every_steps and index < steps_per_epoch:
                    continue
                step = epoch * steps_per_epoch + index
                train = pull(window, step, epoch)
                now = time.perf_counter()
                speed = window_images / (now - window_start)
                eta = (now - start_time) / (step - resume_step) * (total_steps - step)
                writer.write(
                    step,
                    {f"train_{k}": v for k, v in train.items()}
                    | {"images_per_second": speed, "learning_rate": float(schedule(step - 1))}
                    | layer_thresholds(state.params, config.threshold_parameterization),
                )
                if index < steps_per_epoch:
                    print(
                        f"  step {step:7d}/{total_steps} loss {train['loss']:.4f} "
                        f"acc {train['accuracy']:.4f} {speed:7.0f} img/s ETA {eta:6.0f}s",
                        flush=True,
                    )
                window, window_images, window_start = [], 0, time.perf_counter()
            test = evaluate(state, dataset.test_batches(config.eval_batch_size), mesh)
            step = int(state.step)
            writer.write(step, {f"test_{k}": v for k, v in test.items()})
            print(
                f"epoch {epoch + 1:3d}/{config.num_epochs} step {step:7d} "
                f"loss {epoch_sums['loss'] / steps_per_epoch:.4f} "
                f"train acc {epoch_sums['accuracy'] / steps_per_epoch:.4f} "
                f"test acc {test['accuracy']:.4f} {speed:7.0f} img/s ETA {eta:6.0f}s",
                flush=True,
            )
            latest.save(step, args=ocp.args.StandardSave(state))
            best.save(step, args=ocp.args.StandardSave(state), metrics={"test_accuracy": test["accuracy"]})
    finally:
        writer.close()
    return state


def _stack(window: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    return {k: jnp.stack([m[k] for m in window]) for k in window[0]}
