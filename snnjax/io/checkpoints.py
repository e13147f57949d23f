"""Orbax checkpoints of a training workdir: managers, and restoring the newest *readable* step.

A workdir holds two managers: ``checkpoints/`` (the last two epochs, to resume) and ``best/`` (the
epoch with the highest test accuracy). A step that cannot be read (a truncated or damaged file, a
half-written metadata file) is diagnosed as such, never as a config mismatch: restoring falls back to
the newest readable step with a warning that names both steps, and stops with an error only when no
step is readable. A step whose stored tree differs from the expected one is a mismatch (another
model or method), reported with the differing variables.

Orbax logs a dozen INFO lines per save through absl; importing this module drops Orbax's records
below WARNING (`QUIET_ORBAX`), so a library call inside an ``absl.app`` does not flood the
console. To see them again: ``logging.getLogger("absl").removeFilter(snnjax.io.checkpoints.QUIET_ORBAX)``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

__all__ = [
    "CHECKPOINT_KINDS",
    "QUIET_ORBAX",
    "CheckpointMismatchError",
    "checkpoint_manager",
    "restore_newest_readable",
    "set_aside",
]

CHECKPOINT_KINDS = {"latest": "checkpoints", "best": "best"}
SET_ASIDE_DIR = "set_aside"  # workdir/set_aside/<kind>_step<N>: steps moved out of Orbax's way


class _QuietOrbax(logging.Filter):
    """Drops Orbax's log records below WARNING, and its reports of a full disk.

    On a full disk each of Orbax's writer threads logs the failure with its traceback (hundreds of
    lines); ``train.py`` reports it once, with the last good checkpoint.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        from snnjax.io.files import FULL_DISK_MESSAGES, disk_full

        error = record.exc_info[1] if record.exc_info else None
        if disk_full(error) or any(text in record.getMessage() for text in FULL_DISK_MESSAGES):
            return False
        return record.levelno >= logging.WARNING


QUIET_ORBAX = _QuietOrbax()
# Orbax logs through absl (the "absl" logger) and a few Python loggers under "orbax".
logging.getLogger("absl").addFilter(QUIET_ORBAX)
logging.getLogger("orbax").setLevel(logging.WARNING)


_FULL_DISK_HOOK_INSTALLED = False


def _hide_full_disk_in_writer_threads() -> None:
    """Keeps Orbax's and TensorBoard's writer threads from printing a full disk's traceback.

    Installed with the first checkpoint manager (not at import: a library user's threads are theirs).

    Their failure also reaches the main thread (Orbax re-raises it when a save is awaited; the next
    metrics write fails the same way), which reports it in one line. Other exceptions, and threads
    of other code, reach the previous ``threading.excepthook``.
    """
    global _FULL_DISK_HOOK_INSTALLED
    if _FULL_DISK_HOOK_INSTALLED:
        return
    from snnjax.io.files import disk_full

    previous = threading.excepthook

    def hook(args):
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        ours = any(f"{os.sep}orbax{os.sep}" in f.filename or "tensorboardX" in f.filename for f in frames)
        if not (ours and disk_full(args.exc_value)):
            previous(args)

    threading.excepthook = hook
    _FULL_DISK_HOOK_INSTALLED = True


class CheckpointMismatchError(ValueError):
    """A readable checkpoint whose variables differ from the model the config describes."""


def checkpoint_manager(workdir: str, kind: str = "latest", read_only: bool = False) -> ocp.CheckpointManager:
    """The Orbax manager of one kind of checkpoint in ``workdir``.

    ``kind="latest"``: ``workdir/checkpoints``, the last 2 epochs, used to resume. ``kind="best"``:
    ``workdir/best``, the epoch with the highest test accuracy (as the reference code keeps). A
    writing manager creates its folder and deletes the unfinished ``*.orbax-checkpoint-tmp-*``
    folders that a killed save leaves behind; ``read_only=True`` (conversion) touches nothing.
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint kind {kind!r} is unknown; allowed: {', '.join(CHECKPOINT_KINDS)}.")
    directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_KINDS[kind])
    # Orbax's own read_only option logs three warnings; a manager that is never asked to save
    # writes nothing, so read-only here means: no folder created, no temporary folder removed.
    common = {
        "create": not read_only,
        "cleanup_tmp_directories": not read_only,
        # Both managers save the same step; with several processes their barriers need distinct names.
        "multiprocessing_options": ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=kind),
    }
    if kind == "best":
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["test_accuracy"], best_mode="max", **common
        )
    else:
        options = ocp.CheckpointManagerOptions(max_to_keep=2, **common)
    _hide_closed_loop_callbacks()  # a failed save (a full disk) leaves the same late callbacks
    _hide_full_disk_in_writer_threads()
    return ocp.CheckpointManager(directory, options=options)


def _key_name(key) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{"params/conv/kernel": shape}`` of a tree, with dict keys, indices and attributes alike."""
    return {
        "/".join(_key_name(k) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _stored_shapes(step_dir: epath.Path) -> dict[str, tuple[int, ...]]:
    """The variable shapes a step stores (reads metadata only; raises if that is unreadable)."""
    metadata = ocp.StandardCheckpointHandler().metadata(step_dir / "default")
    return _shapes(getattr(metadata, "tree", metadata))


def _mismatch(expected: dict, stored: dict) -> str | None:
    """A description of how two shape tables differ, or None if they agree."""
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    shapes = [
        f"{k}: stored {stored[k]}, expected {expected[k]}"
        for k in expected
        if stored.get(k, expected[k]) != expected[k]
    ]
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}")
    if extra:
        parts.append(f"unexpected {extra[:5]}")
    if shapes:
        parts.append(f"shapes differ ({'; '.join(shapes[:5])})")
    return ", ".join(parts) or None


_LOOP_CLOSED_FILTER_INSTALLED = False


def _hide_closed_loop_callbacks() -> None:
    """Keeps tensorstore's late callbacks from printing tracebacks after a failed restore or save.

    Installed with the first manager. When one read of a restore (or one write of a save on a full
    disk) fails, Orbax closes its event loop while other operations are still in flight; each of them
    later reports ``RuntimeError('Event loop is closed')`` through ``sys.unraisablehook``: up to about
    200 lines that bury the real message. Only that exact error is hidden; everything else reaches the
    previous hook.
    """
    global _LOOP_CLOSED_FILTER_INSTALLED
    if _LOOP_CLOSED_FILTER_INSTALLED:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    _LOOP_CLOSED_FILTER_INSTALLED = True


def set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> str:
    """Moves step ``step`` out of ``manager``'s folder (nothing is deleted) and says where to.

    Training sets aside an unreadable step before it writes that step again, and ``best`` steps
    newer than the step it resumes from (they would collide with the steps it is about to write).

    Returns:
      The new path: ``workdir/set_aside/<kind>_step<N>[_<time>]``.
    """
    source = os.fspath(manager.directory / str(step))
    workdir = os.path.dirname(os.fspath(manager.directory))
    target = os.path.join(
        workdir, SET_ASIDE_DIR, f"{os.path.basename(os.fspath(manager.directory))}_step{step}"
    )
    if os.path.exists(target):
        target += time.strftime("_%Y%m%d-%H%M%S")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    manager.reload()
    print(f"warning: moved step {step} ({reason}) from {source} to {target}.", file=sys.stderr)
    return target


def restore_newest_readable(
    manager: ocp.CheckpointManager, template: Any, mesh: jax.sharding.Mesh | None = None, subset: bool = False
) -> tuple[Any, int | None, list[int]]:
    """Restores the newest step of ``manager`` that can be read, into the structure of ``template``.

    Args:
      manager: from `checkpoint_manager`.
      template: the expected tree (e.g. ``jax.eval_shape`` of the train state); only its structure,
        shapes and dtypes are used.
      mesh: restore replicated over this mesh (default: the first device).
      subset: ``template`` is a dict holding some of the stored top-level entries (e.g. only
        ``params`` and ``batch_stats`` of a train state, for conversion: no optimizer is needed);
        the others are not compared and not returned.

    Returns:
      ``(state, step, unreadable)``: the restored tree and its step, ``(None, None, [])`` when the
      manager holds no step; ``unreadable`` lists the newer steps that had to be skipped (each is
      also named in a warning on stderr).

    Raises:
      CheckpointMismatchError: if the newest step is readable but stores other variables than
        ``template`` (another model, method or threshold setting).
      ValueError: if steps exist but none can be read (each is named with Orbax's reason).
    """
    if mesh is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    else:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template)
    expected = _shapes(abstract)
    steps = sorted(manager.all_steps(), reverse=True)
    if steps:
        _hide_closed_loop_callbacks()
    unreadable: list[tuple[int, str]] = []
    for step in steps:
        step_dir = manager.directory / str(step)
        try:
            stored = _stored_shapes(step_dir)
        except Exception as error:  # Orbax/tensorstore raise many types for damaged files
            unreadable.append((step, f"{type(error).__name__}: {str(error)[:300]}"))
            continue
        if subset:
            stored = {k: v for k, v in stored.items() if k.split("/")[0] in template}
        difference = _mismatch(expected, stored)
        if difference is not None:
            raise CheckpointMismatchError(
                f"step {step} at {step_dir} stores another network than the config describes: "
                f"{difference}. Pass the config it was trained with (see config.json in the workdir)."
            )
        try:
            if subset:  # restore as stored, keep the requested entries, place them like the template
                restored = manager.restore(step, args=ocp.args.StandardRestore())
                state = jax.device_put(
                    {k: restored[k] for k in template}, jax.tree.map(lambda a: a.sharding, abstract)
                )
            else:
                state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:
            unreadable.append((step, f"{type(error).__name__}: {str(error)[:300]}"))
            continue
        for bad, reason in unreadable:
            print(
                f"warning: checkpoint step {bad} at {manager.directory / str(bad)} is unreadable or "
                f"corrupt ({reason}); using step {step} instead.",
                file=sys.stderr,
            )
        return state, step, [bad for bad, _ in unreadable]
    if unreadable:
        details = "; ".join(f"step {s} at {manager.directory / str(s)}: {r}" for s, r in unreadable)
        raise ValueError(
            f"no readable checkpoint in {manager.directory}: every step is unreadable or corrupt "
            f"({details}). Move the folder away and train again."
        )
    return None, None, []
