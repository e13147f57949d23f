"""Writing files without losing what was there: atomic replacement, the umask's modes, a full disk named.

A file is written to a temporary name in the same folder and renamed over the old one (`atomic_write`),
so an interrupted write leaves the previous content; the result gets the mode a plain ``open`` would
give under the user's umask (``0644`` under ``022``), not ``mkstemp``'s ``0600``. `disk_full` finds a
full disk (or quota) anywhere in an exception's chain, however the writer reported it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable

__all__ = [
    "FULL_DISK_MESSAGES",
    "DiskFullError",
    "atomic_write",
    "disk_full",
    "publishable",
    "temporary_beside",
]


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


def publishable(path: str) -> None:
    """Gives a file made by ``mkstemp`` (mode 0600) the mode a plain ``open`` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def temporary_beside(path: str) -> str:
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
    temporary = temporary_beside(path)
    try:
        write(temporary)
        publishable(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


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
