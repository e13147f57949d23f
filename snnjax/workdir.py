"""A training workdir's record of its run: the recorded config, checks against it, and safe writes.

``train.py`` records the config it trains with in ``workdir/config.json``. A later ``train.py`` on the
same workdir must describe the same run: every field that changes the model or its optimization is
compared (everything except :data:`FREE_TRAINING_FIELDS`) and a difference is refused with the fields
and both values named. That includes ``num_epochs``: the learning rate follows a cosine over
``num_epochs``, so a run continued with another value would not be the run a fresh start with that value
gives (train longer in a new workdir). ``convert.py`` compares only the fields that define the trained
network (:data:`NETWORK_FIELDS`); conversion fields (T, mode, neuron, dtype, balancing, reports) stay free.

Results are written atomically (a temporary file in the same folder, then a rename), so an interrupted
write never leaves a half-written ``snn_eval.json`` or plot in place of the previous one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from snnjax.checkpoints import CHECKPOINT_KINDS

__all__ = [
    "CONFIG_FILE",
    "FREE_TRAINING_FIELDS",
    "NETWORK_FIELDS",
    "atomic_write",
    "check_conversion_config",
    "check_training_config",
    "config_dict",
    "has_checkpoint",
    "prepared_workdir",
    "read_recorded_config",
    "record_config",
]

CONFIG_FILE = "config.json"

# Fields a resumed run may change: logging, evaluation batch, where the data lives, the CPU
# convolution algorithm (same model, same optimization), and everything used only by conversion.
FREE_TRAINING_FIELDS = frozenset(
    {
        "data_dir",
        "log_every_steps",
        "eval_batch_size",
        "conv_implementation",
        "checkpoint",
        "torch_checkpoint",
        "torch_layout",
        "snn_num_steps",
        "test_examples",
        "snn_mode",
        "snn_v0",
        "snn_neuron",
        "snn_max_pool",
        "snn_dtype",
        "eval_precision",
        "fold_bn",
        "balancing",
        "calibration_percentile",
        "calibration_examples",
        "post_conversion",
        "prerun_steps",
        "spikes_per_step",
        "post_calibration_examples",
        "post_calibration_steps",
        "step_bias_alpha",
        "report_examples",
        "report_steps",
        "energy_pj_per_mac",
        "energy_pj_per_ac",
        "export_nir",
        "export",
    }
)

# Fields that define the trained network (and, through the seed, the digits train/test split).
NETWORK_FIELDS = (
    "dataset",
    "image_size",
    "seed",
    "model",
    "method",
    "levels",
    "qcfs_shift",
    "slip_c",
    "slip_shift1",
    "slip_shift2",
    "threshold_parameterization",
    "per_channel_threshold",
    "pooling",
)


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as recorded in ``config.json``."""
    return json.loads(config.to_json())


def read_recorded_config(workdir: str) -> dict[str, Any] | None:
    """``workdir/config.json`` as a dict, or None if there is none.

    Raises:
      ValueError: naming the file, if it is not a JSON object.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} (the config this workdir was trained with) cannot be read: {error}. Restore it, or "
            "use a new --workdir."
        ) from None
    if not isinstance(recorded, dict):
        raise ValueError(
            f"{path} must hold a JSON object (the training config), not {type(recorded).__name__}."
        )
    return recorded


def _differences(current: dict, recorded: dict, fields) -> list[str]:
    return [
        f"{field}: trained with {recorded[field]!r}, now {current[field]!r}"
        for field in fields
        if field in recorded and field in current and recorded[field] != current[field]
    ]


def has_checkpoint(workdir: str, kind: str = "latest") -> bool:
    """Whether ``workdir``'s checkpoints of ``kind`` hold a saved step (a folder named by its number)."""
    folder = os.path.join(workdir, CHECKPOINT_KINDS[kind])
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def check_training_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to continue a workdir's run with a config that trains something else.

    Args:
      config: the config about to train.
      workdir: the workdir; only compared if it holds a recorded config.

    Raises:
      ValueError: naming every differing field with both values.
    """
    recorded = read_recorded_config(workdir)
    if recorded is None or not has_checkpoint(workdir):
        return  # nothing trained yet: the new run records its own config
    current = config_dict(config)
    differences = _differences(current, recorded, sorted(set(current) - FREE_TRAINING_FIELDS))
    if differences:
        raise ValueError(
            f"{workdir} holds a run trained with another config ({os.path.join(workdir, CONFIG_FILE)}); "
            f"these fields differ: {'; '.join(differences)}. Use a new --workdir for a new run, or pass the "
            "recorded values (num_epochs cannot change: the cosine schedule spans it)."
        )


def check_conversion_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """Refuses to convert a workdir's network with a config that describes another network.

    Returns:
      The recorded training config (None for a workdir trained before configs were recorded).

    Raises:
      ValueError: naming every differing field of :data:`NETWORK_FIELDS` with both values.
    """
    recorded = read_recorded_config(workdir)
    if recorded is None:
        return None
    differences = _differences(config_dict(config), recorded, NETWORK_FIELDS)
    if differences:
        raise ValueError(
            f"the network in {workdir} was trained with another config "
            f"({os.path.join(workdir, CONFIG_FILE)}); these fields differ: {'; '.join(differences)}. "
            "Pass the recorded values (conversion fields such as snn_num_steps, snn_mode, snn_neuron, "
            "snn_dtype and balancing are free)."
        )
    return recorded


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(temporary_path)`` then renames the result to ``path`` (same folder, atomic).

    The temporary name keeps ``path``'s extension, so writers that infer the format from it (e.g.
    ``matplotlib``'s ``savefig``) still work. On an error the temporary file is removed and ``path``
    keeps its previous content.
    """
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{extension}", dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``workdir/config.json`` (atomically)."""

    def write(path):
        with open(path, "w") as f:
            f.write(config.to_json(indent=2))

    atomic_write(os.path.join(workdir, CONFIG_FILE), write)


@contextlib.contextmanager
def prepared_workdir(workdir: str) -> Iterator[str]:
    """Creates ``workdir`` if needed and checks that files can be written there, before any work.

    If the block fails and the folder was created here and is still empty, it is removed again, so
    a refused run leaves nothing behind.

    Raises:
      NotADirectoryError: if ``workdir`` is a file; PermissionError/OSError naming it, if it cannot be
        created or written to.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir={workdir!r} is a file, not a folder.")
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as error:
        raise PermissionError(
            f"--workdir={workdir!r} cannot be written to: {error.strerror or error}."
        ) from None
    try:
        yield workdir
    except BaseException:
        if created and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)
        raise
