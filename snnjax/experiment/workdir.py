"""A training workdir's record of its run: the recorded config, checks against it, and safe writes.

``train.py`` records the config it trains with in ``workdir/config.json``. A later ``train.py`` on the
same workdir must describe the same run: every field that changes the model or its optimization is
compared (everything except `FREE_TRAINING_FIELDS`) and a difference is refused with the fields
and both values named. That includes ``num_epochs``: the learning rate follows a cosine over
``num_epochs``, so a run continued with another value would not be the run a fresh start with that value
gives (train longer in a new workdir). ``convert.py`` reads the trained config from ``config.json`` and
takes only `CONVERSION_FIELDS` (T, mode, neuron, dtype, balancing,
reports, exports) as overrides (`conversion_config`).

Results are written atomically (a temporary file in the same folder, then a rename), so an interrupted
write never leaves a half-written ``snn_eval.json`` or plot in place of the previous one; a conversion's
files are staged and renamed into place together (`OutputSet`), so an interruption leaves the
previous complete set or the new one. Written files get the permissions the user's umask gives
(``0644`` under the default ``022``), not ``mkstemp``'s private ``0600``.

One writer per workdir: ``train.py`` and ``convert.py`` hold an exclusive OS file lock on
``workdir/.snnjax.lock`` while they run (`prepared_workdir`); a second process is refused naming
the holder. The OS releases the lock when its process dies, so there is never a stale lock to clean.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no workdir lock
    fcntl = None

import ml_collections

from snnjax.io.checkpoints import CHECKPOINT_KINDS
from snnjax.io.files import atomic_write, publishable, temporary_beside

__all__ = [
    "CONFIG_FILE",
    "FREE_TRAINING_FIELDS",
    "LOCK_FILE",
    "CONVERSION_FIELDS",
    "RECORDS",
    "OutputSet",
    "WorkdirBusyError",
    "check_output_path",
    "conversion_config",
    "check_training_config",
    "config_dict",
    "has_checkpoint",
    "interrupts_noticed",
    "noticed_interrupt",
    "prepared_workdir",
    "read_recorded_config",
    "record_config",
]

CONFIG_FILE = "config.json"
LOCK_FILE = ".snnjax.lock"
# What a workdir holds that an output path (config.export, ...) must never name: the training record,
# the conversion results, and the folders of checkpoints, set-aside steps and TensorBoard files.
RECORDS = (
    CONFIG_FILE,
    "metrics.jsonl",
    "snn_eval.json",
    "snn_accuracy.png",
    "snn_layers.png",
    "snn.nir",
    LOCK_FILE,
    *CHECKPOINT_KINDS.values(),
    "set_aside",
    "tensorboard",
)

# The fields a conversion chooses (T, mode, neuron, dtype, balancing, post-conversion, reports, exports,
# where the data lives, which checkpoint): convert takes these as overrides of the recorded config.
# Every other field was fixed by training and is read from the workdir's config.json.
CONVERSION_FIELDS = frozenset(
    {
        "data_dir",
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
        "hardware_weight_bits",
        "hardware_weight_scale",
        "hardware_state_bits",
        "report_examples",
        "report_steps",
        "energy_pj_per_mac",
        "energy_pj_per_ac",
        "export_nir",
        "export",
    }
)
# Fields a resumed training run may change: logging, and everything a conversion chooses (same model,
# same optimization; the CPU convolution algorithm and the evaluation batch included).
FREE_TRAINING_FIELDS = CONVERSION_FIELDS | {"log_every_steps"}
# Fields that shape how the network was trained but not the trained network itself (the optimizer,
# the schedule's length, augmentation, the initialization): a conversion neither reads nor checks them.
# Every field in neither set defines the network, so a new field is checked until it is listed here.
TRAINING_ONLY_FIELDS = frozenset(
    {
        "num_epochs",
        "batch_size",
        "train_last_batch",
        "learning_rate",
        "momentum",
        "weight_decay",
        "augment",
        "crop_padding",
        "cutout_size",
        "param_init",
        "bn_running_var",
        "threshold_init",
        "optimizer",
        "log_every_steps",
    }
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


# Training fields added after configs were first recorded, with what a run that does not record them
# did: a resumed run is compared against these, so that an older workdir cannot silently continue with,
# e.g., another number of steps per epoch.
UNRECORDED_TRAINING_DEFAULTS = {
    "train_last_batch": "drop",
    "bn_running_var": "biased",
    "param_init": "flax",
    "optimizer": "sgd",
}


def _differences(current: dict, recorded: dict, fields) -> list[str]:
    recorded = {**UNRECORDED_TRAINING_DEFAULTS, **recorded}
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


def conversion_config(
    workdir: str,
    config: ml_collections.ConfigDict | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[ml_collections.ConfigDict, dict[str, Any] | None]:
    """The config a conversion of ``workdir`` runs with: the recorded training config plus conversion fields.

    Args:
      workdir: the training workdir (its ``config.json`` is the record).
      config: a whole config (a config file with its overrides, as training took it), or None to read
        it from ``workdir``. Its fields that define the network (all but `CONVERSION_FIELDS` and
        `TRAINING_ONLY_FIELDS`) must equal the recorded ones; its conversion fields are used.
      overrides: conversion fields to set on the recorded config (only with ``config=None``).

    Returns:
      ``(config, recorded)``: the locked config to convert with (the recorded one with the conversion
      fields set), and the recorded training config (None for a workdir trained before configs were
      recorded, where ``config`` is used as given).

    Raises:
      ValueError: naming each field that training fixed and ``config`` or ``overrides`` changes (with
        both values), or when ``config`` is None and ``workdir`` records no config.
    """
    recorded = read_recorded_config(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    if config is not None:
        if overrides:
            raise ValueError("pass either a whole config or overrides of the recorded one, not both.")
        if recorded is None:
            return config, None
        current = config_dict(config)
        network = sorted(set(current) - CONVERSION_FIELDS - TRAINING_ONLY_FIELDS)
        differences = _differences(current, recorded, network)
        if differences:
            raise ValueError(
                f"the network in {workdir} was trained with another config ({path}); these fields "
                f"differ: {'; '.join(differences)}. Convert reads the trained config from the workdir: "
                "drop --config and pass only conversion fields (--config.snn_num_steps=..., "
                "--config.snn_mode=..., ...), or pass the recorded values."
            )
        overrides = {field: config[field] for field in CONVERSION_FIELDS if field in config}
    elif recorded is None:
        raise ValueError(
            f"{workdir} records no training config ({path}): pass the config it was trained with "
            "(--config FILE)."
        )
    from snnjax.configs import default  # the packaged defaults: the types of every field

    config = default.get_config()
    for field, value in recorded.items():
        if field not in config:  # a field a later snnjax dropped is no longer read
            continue
        try:
            config[field] = tuple(value) if isinstance(config[field], tuple) else value
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{path} records config.{field}={value!r}, which this snnjax cannot read ({error}); pass "
                "the config the workdir was trained with (--config FILE)."
            ) from None
    missing = sorted(set(config) - set(recorded) - CONVERSION_FIELDS)  # conversion fields take defaults
    if missing:
        print(
            f"note: {path} does not record {', '.join(missing)} (trained by an older snnjax): using the "
            "defaults.",
            file=sys.stderr,
        )
    fixed = sorted(set(overrides or {}) - CONVERSION_FIELDS)
    if fixed:
        raise ValueError(
            f"{', '.join(f'config.{f}' for f in fixed)} was fixed by training (recorded in {path}: "
            + ", ".join(f"{f}={recorded.get(f)!r}" for f in fixed)
            + "); convert takes only conversion fields: "
            + ", ".join(sorted(CONVERSION_FIELDS))
            + ". Train a new workdir to change it."
        )
    for field, value in (overrides or {}).items():
        config[field] = value
    config.lock()
    return config, recorded


class WorkdirBusyError(ValueError):
    """Another process holds the workdir's lock."""


def check_output_path(path: str, workdir: str, field: str) -> None:
    """Refuses an output path that would overwrite a workdir record or a file snnjax did not write.

    Args:
      path: where an output goes (absolute, or as joined with the workdir).
      workdir: the run's workdir.
      field: the config field that named it, for the message (e.g. ``"config.export"``).

    Raises:
      ValueError: if ``path`` (or its sidecar ``PATH.json``) is, or lies inside, one of
        `RECORDS` of ``workdir``, has the name of a record in a folder that holds a
        ``config.json`` (another workdir), is a folder, or would replace a file that is not an
        earlier snnjax export (``PATH`` or ``PATH.json`` exists without snnjax's sidecar).
    """
    target = os.path.realpath(path)
    for candidate in (target, target + ".json"):
        for record in RECORDS:
            record_path = os.path.realpath(os.path.join(workdir, record))
            inside = os.path.normcase(candidate + os.sep).startswith(os.path.normcase(record_path + os.sep))
            # samefile: the same file under another name (a case-insensitive file system, a hard link).
            if inside or (
                os.path.exists(candidate)
                and os.path.exists(record_path)
                and os.path.samefile(candidate, record_path)
            ):
                raise ValueError(
                    f"{field} names {path}, which would overwrite {record_path}, a record of the workdir "
                    f"(records: {', '.join(RECORDS)}); choose another file name."
                )
        folder, name = os.path.split(candidate)
        if name in RECORDS and os.path.exists(os.path.join(folder, CONFIG_FILE)):
            raise ValueError(
                f"{field} names {path}, which would overwrite {candidate}, a record of the workdir "
                f"{folder}; choose another file name."
            )
    if os.path.isdir(target):
        raise ValueError(f"{field} names {path}, a folder; give a file path inside it.")
    if (os.path.exists(target) or os.path.exists(target + ".json")) and not _is_export_sidecar(
        target + ".json"
    ):
        raise ValueError(
            f"{field} names {path}: it or {path}.json exists and is not an snnjax export (no snnjax sidecar "
            f"{os.path.basename(path)}.json); refusing to overwrite it: choose another path or remove it."
        )


def _is_export_sidecar(path: str) -> bool:
    """Whether ``path`` is the JSON sidecar `snnjax.export_snn` writes (its ``format`` says so)."""
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(sidecar, dict) and str(sidecar.get("format", "")).startswith("snnjax.exported_snn/")


class OutputSet:
    """The files of one run, staged under temporary names and renamed into place together.

    ``stage`` writes each file beside its destination (same file system, so the final rename is
    atomic); ``commit`` renames them all with SIGINT and SIGTERM held back (their Python handlers
    only record them until the last rename, then run), so a Ctrl-C either lands before (nothing of the
    new set is in place; the previous set stays whole) or after (the new set is whole, and the run then
    stops with the interruption). A process killed outright (SIGKILL, power loss) can still stop
    between two renames; ``snn_eval.json``, renamed last, names the set's run id and files (the NIR
    graph and the export's sidecar carry the run id too), so a mix is recognisable.

    Use as a context manager: the staged files are committed when the block ends normally and
    removed when it raises.
    """

    def __init__(self) -> None:
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._staged: list[tuple[str, str]] = []  # (temporary, destination)

    def stage(self, path: str, write: Callable[[str], None], companions: Sequence[str] = ()) -> None:
        """Calls ``write(temporary)``; ``temporary`` goes to ``path`` on commit.

        The writer also writes ``temporary + suffix`` for each of ``companions`` (e.g. ``(".json",)``
        for a sidecar); those go to ``path + suffix``.
        """
        temporary = temporary_beside(path)
        pairs = [(temporary, path)] + [(temporary + s, path + s) for s in companions]
        self._staged += pairs
        write(temporary)
        for staged, _ in pairs:
            if not os.path.isfile(staged):
                raise FileNotFoundError(f"the writer of {path} did not write {staged}.")
            publishable(staged)

    def commit(self) -> None:
        """Renames every staged file into place, in staging order, with interruptions held back."""
        noticed_interrupt()
        with _signals_held():
            for temporary, destination in self._staged:
                os.replace(temporary, destination)
            self._staged = []

    def discard(self) -> None:
        """Removes the staged files (the destinations keep their previous content)."""
        for temporary, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
        self._staged = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self.commit()
            finally:
                self.discard()
        else:
            self.discard()


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_interrupted = threading.Event()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM only recorded inside the block, then handled as before once it ends.

    Python runs signal handlers in the main thread whichever thread the OS delivers the signal to
    (JAX processes have many), so swapping the handlers holds them back where masking one thread's
    signals would not. Outside the main thread handlers cannot be set: nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {number: signal.getsignal(number) for number in _HELD_SIGNALS}
    for number in _HELD_SIGNALS:
        signal.signal(number, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(arrived):
            signal.raise_signal(number)  # the previous handler (or the default action) runs now


def noticed_interrupt() -> None:
    """Raises KeyboardInterrupt if a Ctrl-C arrived since `interrupts_noticed` began.

    A KeyboardInterrupt raised while Python runs a garbage-collector callback (JAX installs one) is
    printed and swallowed; the flag set by the handler survives it, so the run still stops.
    """
    if _interrupted.is_set():
        raise KeyboardInterrupt("interrupted (a Ctrl-C that arrived earlier)")


@contextlib.contextmanager
def interrupts_noticed() -> Iterator[None]:
    """Installs a SIGINT handler that records the interruption before raising KeyboardInterrupt.

    Ends with KeyboardInterrupt if one was recorded but swallowed in between (see
    `noticed_interrupt`). Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        _interrupted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
        noticed_interrupt()
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


def record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``workdir/config.json`` (atomically)."""

    def write(path):
        with open(path, "w") as f:
            f.write(config.to_json(indent=2))

    atomic_write(os.path.join(workdir, CONFIG_FILE), write)


def _lock_holder(path: str) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open(path) as f:
            holder = f.read().strip()
        if holder:
            return holder
    return "another process"


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def _exclusive(workdir: str, command: str, created: bool) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``workdir/.snnjax.lock`` (released by the OS if the process dies).

    If the block fails in a workdir created for it that holds nothing but the lock file, the file and
    the folder are removed while the lock is still held (so no other process can have taken it).

    Raises:
      WorkdirBusyError: naming the holder (pid, command, start time) if another process holds it.
    """
    if fcntl is None:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise WorkdirBusyError(
                f"--workdir={workdir!r} is in use by {_lock_holder(path)}: one process writes a workdir at "
                "a time. Wait for it to finish (or stop it), or use another --workdir."
            ) from None
        except OSError as error:
            os.close(handle)
            if error.errno not in _NO_LOCKS:
                raise
            print(
                f"warning: the file system of {workdir} does not support locks ({error.strerror}); "
                "nothing stops a second process from writing the same workdir.",
                file=sys.stderr,
            )
            yield
            return
        # The previous holder may have removed the file between our open and our lock: lock the
        # file that is there now.
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(handle).st_ino == os.stat(path).st_ino:
                break
        os.close(handle)
    try:
        os.ftruncate(handle, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(handle, f"pid {os.getpid()} ({command}, started {started})\n".encode())
        yield
    except BaseException:
        if created and set(os.listdir(workdir)) <= {LOCK_FILE}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            with contextlib.suppress(OSError):
                os.rmdir(workdir)
        raise
    finally:
        os.close(handle)  # releases the lock; the file stays (removing it would race a new holder)


@contextlib.contextmanager
def prepared_workdir(workdir: str, command: str = "snnjax", lock: bool = True) -> Iterator[str]:
    """Creates ``workdir`` if needed, checks it can be written and takes its lock, before any work.

    If the block fails and the folder was created here and holds nothing but the lock file, it is
    removed again, so a refused run leaves nothing behind.

    Args:
      workdir: the folder.
      command: what holds the lock, for the message a second process gets (e.g. ``"train.py"``).
      lock: take the exclusive workdir lock (False for processes other than 0 of a multi-process run,
        which share process 0's workdir).

    Raises:
      NotADirectoryError: if ``workdir`` is a file.
      PermissionError: naming it, if it cannot be created or written to.
      WorkdirBusyError: if another process holds its lock.
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
    if not lock:  # another process owns the workdir (and its clean-up)
        yield workdir
        return
    with _exclusive(workdir, command, created):
        yield workdir
