"""A training workdir's record of its run: the recorded config, checks against it, and safe writes.

``train.py`` records the config it trains with in ``workdir/config.json``. A later ``train.py`` on the
same workdir must describe the same run: every field that changes the model or its optimization is
compared (everything except :data:`FREE_TRAINING_FIELDS`) and a difference is refused with the fields
and both values named. That includes ``num_epochs``: the learning rate follows a cosine over
``num_epochs``, so a run continued with another value would not be the run a fresh start with that value
gives (train longer in a new workdir). ``convert.py`` compares only the fields that define the trained
network (:data:`NETWORK_FIELDS`); conversion fields (T, mode, neuron, dtype, balancing, reports) stay free.

Results are written atomically (a temporary file in the same folder, then a rename), so an interrupted
write never leaves a half-written ``snn_eval.json`` or plot in place of the previous one; a conversion's
files are staged and renamed into place together (:class:`OutputSet`), so an interruption leaves the
previous complete set or the new one. Written files get the permissions the user's umask gives
(``0644`` under the default ``022``), not ``mkstemp``'s private ``0600``.

One writer per workdir: ``train.py`` and ``convert.py`` hold an exclusive OS file lock on
``workdir/.snnjax.lock`` while they run (:func:`prepared_workdir`); a second process is refused naming
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no workdir lock
    fcntl = None

import ml_collections

from snnjax.checkpoints import CHECKPOINT_KINDS

__all__ = [
    "CONFIG_FILE",
    "FREE_TRAINING_FIELDS",
    "LOCK_FILE",
    "NETWORK_FIELDS",
    "RECORDS",
    "DiskFullError",
    "OutputSet",
    "WorkdirBusyError",
    "atomic_write",
    "check_output_path",
    "disk_full",
    "check_conversion_config",
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


def _umask() -> int:
    """The process's umask, from ``/proc/self/status`` where Linux gives it.

    Elsewhere it is read by setting it and putting it back (there is no getter), which for an instant
    changes it for every thread of the process.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publishable(path: str) -> None:
    """Gives a file made by ``mkstemp`` (mode 0600) the mode a plain ``open`` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def _temporary_beside(path: str) -> str:
    """A new empty file in ``path``'s folder whose name keeps ``path``'s extension."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{extension}", dir=folder)
    os.close(handle)
    return temporary


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(temporary_path)`` then renames the result to ``path`` (same folder, atomic).

    The temporary name keeps ``path``'s extension, so writers that infer the format from it (e.g.
    ``matplotlib``'s ``savefig``) still work. The file gets the mode the umask gives. On an error the
    temporary file is removed and ``path`` keeps its previous content.
    """
    temporary = _temporary_beside(path)
    try:
        write(temporary)
        _publishable(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


class WorkdirBusyError(ValueError):
    """Another process holds the workdir's lock."""


class DiskFullError(OSError):
    """A write failed because the file system is full (or over quota); the message says what survived."""


FULL_DISK_MESSAGES = ("No space left on device", "Disk quota exceeded")


def disk_full(error: BaseException | None) -> BaseException | None:
    """The error in ``error``'s cause/context chain that reports a full disk (or quota), if any.

    An ``OSError`` with ``ENOSPC``/``EDQUOT``, or any error whose message says so (tensorstore reports
    Orbax's failed writes as ``ValueError: RESOURCE_EXHAUSTED: ... No space left on device``). Writers
    on background threads report a full disk as a later, unrelated error ("handle is closed"); the
    original survives in the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        if any(text in str(error) for text in FULL_DISK_MESSAGES):
            return error
        error = error.__cause__ or error.__context__
    return None


def check_output_path(path: str, workdir: str, field: str) -> None:
    """Refuses an output path that would overwrite a workdir record or a file snnjax did not write.

    Args:
      path: where an output goes (absolute, or as joined with the workdir).
      workdir: the run's workdir.
      field: the config field that named it, for the message (e.g. ``"config.export"``).

    Raises:
      ValueError: if ``path`` (or its sidecar ``PATH.json``) is, or lies inside, one of
        :data:`RECORDS` of ``workdir``, has the name of a record in a folder that holds a
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
    """Whether ``path`` is the JSON sidecar :func:`snnjax.export_snn` writes (its ``format`` says so)."""
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
        temporary = _temporary_beside(path)
        pairs = [(temporary, path)] + [(temporary + s, path + s) for s in companions]
        self._staged += pairs
        write(temporary)
        for staged, _ in pairs:
            if not os.path.isfile(staged):
                raise FileNotFoundError(f"the writer of {path} did not write {staged}.")
            _publishable(staged)

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
    """Raises KeyboardInterrupt if a Ctrl-C arrived since :func:`interrupts_noticed` began.

    A KeyboardInterrupt raised while Python runs a garbage-collector callback (JAX installs one) is
    printed and swallowed; the flag set by the handler survives it, so the run still stops.
    """
    if _interrupted.is_set():
        raise KeyboardInterrupt("interrupted (a Ctrl-C that arrived earlier)")


@contextlib.contextmanager
def interrupts_noticed() -> Iterator[None]:
    """Installs a SIGINT handler that records the interruption before raising KeyboardInterrupt.

    Ends with KeyboardInterrupt if one was recorded but swallowed in between (see
    :func:`noticed_interrupt`). Outside the main thread it does nothing.
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
      NotADirectoryError: if ``workdir`` is a file; PermissionError naming it, if it cannot be
        created or written to; WorkdirBusyError, if another process holds its lock.
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
