"""The front door of ``snnjax-train`` and ``snnjax-convert``: help, flag errors, readable failures.

* ``--config`` takes a config file or the name of a packaged config (``--config quickstart``; see
  `snnjax.configs.names`); ``configs/NAME.py`` outside a checkout also means the packaged file.

* ``--help`` (``-h``, ``--helpshort``, ``--helpfull``) prints the usage, the flags and every config
  field with its default, and exits 0 (absl's own help exits 1).
* A bad flag or config override (``--config.levelz=3``, ``--config.levels=abc``, a missing config
  file) ends in one line naming it, exit status 2.
* A config file that cannot be loaded (a syntax error, a failing import, an exception in
  ``get_config``) ends in one line naming the file and line, exit status 2.
* An error from bad input (`USER_ERRORS`: an invalid config value, a missing or damaged file, a
  workdir trained with another config or in use by another process, a diverged run, a full disk)
  ends in one line with its message, exit status 1; ``--debug`` shows the full traceback instead.
* Ctrl-C ends in one line, exit status 130, also when the interruption landed where Python swallows
  it (a garbage-collector callback): `snnjax.experiment.workdir.interrupts_noticed`.

Library code never calls this module: it raises, and the caller decides.
"""

from __future__ import annotations

import ast
import contextlib
import os
import pathlib
import pickle
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from snnjax import configs
from snnjax.experiment import workdir as workdir_lib
from snnjax.io import files

__all__ = ["USER_ERRORS", "define_flags", "readable_errors", "resolve_config_argument", "run"]

flags.DEFINE_bool("debug", False, "Show the full Python traceback of an error instead of its message alone.")

# Errors the library raises for bad input; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    FloatingPointError,
    pickle.UnpicklingError,
    files.DiskFullError,
)
HELP_FLAGS = ("-h", "-?", "--help", "-help", "--helpshort", "--helpfull")


def _fail(message: str, status: int, at_once: bool = False) -> None:
    print(f"error: {message}", file=sys.stderr)
    if at_once:
        # A full disk: writer threads and exit handlers (TensorBoard's flush) would fail again, each
        # with its traceback. Everything that can be saved was (the checkpoints were awaited).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _clean(message: str) -> str:
    """ml_collections reports an unknown field as the repr of a repr; show the text once, on one line."""
    for _ in range(2):
        if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
            with contextlib.suppress(ValueError, SyntaxError):
                message = ast.literal_eval(message)
    return " ".join(message.split())


def define_flags(workdir_help: str, config_help: str | None = None, config_required: bool = True) -> None:
    """Defines the flags every command has: ``--workdir`` and ``--config`` (a locked config file).

    Args:
      workdir_help: what the workdir is to this command.
      config_help: what ``--config`` is to this command (default: the experiment config).
      config_required: whether ``--config`` must be given. When it need not and is not, the packaged
        defaults take its place, so ``--config.FIELD=value`` overrides still parse; `config_given`
        and `config_overrides` tell the command what the user wrote.
    """
    flags.DEFINE_string("workdir", None, workdir_help)
    config_flags.DEFINE_config_file(
        "config",
        None,
        config_help
        or "Experiment config: a file (configs/quickstart.py) or a packaged config's name (quickstart).",
        lock_config=True,
    )
    flags.mark_flags_as_required(["config", "workdir"] if config_required else ["workdir"])
    _COMMAND_LINE["config_required"] = config_required


# What the user wrote on the command line, as `_parser` found it (a command parses its flags once).
_COMMAND_LINE: dict = {"config_required": True, "config_given": True, "overrides": ()}


def config_given() -> bool:
    """Whether the command line named a config file (``--config``)."""
    return _COMMAND_LINE["config_given"]


def config_overrides() -> tuple[str, ...]:
    """The config fields the command line sets (``--config.FIELD=value``: ``FIELD``), in order."""
    return _COMMAND_LINE["overrides"]


def _override_names() -> tuple[str, ...]:
    """The top-level config fields the parsed command line overrides.

    In any spelling ml_collections reads: ``--config.x=v``, ``-config.x v``, ``--noconfig.flag``.
    """
    overridden = config_flags.get_override_values(flags.FLAGS["config"])
    return tuple(dict.fromkeys(name.split(".")[0] for name in overridden))


def resolve_config_argument(value: str) -> str:
    """Maps ``--config``'s value to a file: a path that exists stays; a packaged config's name does not.

    Args:
      value: ``PATH[:CONFIG_STRING]`` as ml_collections reads it; ``PATH`` may be ``quickstart``,
        ``quickstart.py`` or ``configs/quickstart.py`` for a packaged config.

    Returns:
      The value with ``PATH`` replaced by the packaged config's file where ``PATH`` does not exist and
      names one; otherwise ``value`` unchanged (a missing file is then reported by the flag parser).
    """
    file, colon, config_string = value.partition(":")
    candidate = pathlib.PurePath(file)
    if pathlib.Path(file).exists() or str(candidate.parent) not in (".", "configs"):
        return value
    if candidate.name.removesuffix(".py") not in configs.names():
        return value
    return f"{configs.path(candidate.name)}{colon}{config_string}"


def _config_file(argv: list[str]) -> str | None:
    """The file ``--config`` (or ``-config``) names in ``argv``, without its ``:CONFIG_STRING``."""
    for i, arg in enumerate(argv):
        name, equals, value = arg.lstrip("-").partition("=") if arg.startswith("-") else ("", "", "")
        if name == "config":
            if not equals:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            return value.partition(":")[0]
    return None


def _config_file_error(error: BaseException, file: str | None) -> str | None:
    """``FILE, line N: Kind: message`` when ``error`` was raised by (or while importing) the config file."""
    if file is None:
        return None
    target = os.path.realpath(file)
    if isinstance(error, SyntaxError) and error.filename and os.path.realpath(error.filename) == target:
        return f"{file}, line {error.lineno}: SyntaxError: {error.msg}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) == target]
    if not frames:
        return None
    return f"{file}, line {frames[-1].lineno}: {type(error).__name__}: {_clean(str(error))}"


def _resolve_config_arguments(argv: list[str]) -> list[str]:
    argv = list(argv)
    for i, arg in enumerate(argv):
        dashes = arg[: len(arg) - len(arg.lstrip("-"))]
        if arg.startswith("-") and arg.lstrip("-").startswith("config="):
            argv[i] = f"{dashes}config=" + resolve_config_argument(arg.lstrip("-").removeprefix("config="))
        elif arg in ("--config", "-config") and i + 1 < len(argv):
            argv[i + 1] = resolve_config_argument(argv[i + 1])
    return argv


def _help_text(config_fields: ml_collections.ConfigDict | None, doc: str | None) -> str:
    if doc is None:
        doc = sys.modules["__main__"].__doc__ or ""
    # The command's own flags (defined here or in its module), then the shared ones, each module once.
    by_module = flags.FLAGS.flags_by_module_dict()
    modules = [m for m in by_module if m.startswith("snnjax") or m == sys.argv[0]]
    lines = [doc.strip(), *(flags.FLAGS.module_help(m) for m in modules)]
    lines += ["", "Packaged configs (--config NAME):", textwrap.fill(" ".join(configs.names()), 100)]
    if config_fields is not None:
        fields = "  ".join(f"{k}={v!r}" for k, v in config_fields.items())
        lines += [
            "",
            "Config fields (defaults; configs/default.py explains each), set with --config.FIELD=value:",
            textwrap.fill(fields, width=100, initial_indent="  ", subsequent_indent="  "),
        ]
    return "\n".join(lines)


def _parser(
    config_fields: ml_collections.ConfigDict | None, doc: str | None
) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            print(_help_text(config_fields, doc))
            sys.exit(0)
        argv = _resolve_config_arguments(flags.FLAGS.read_flags_from_files(argv, force_gnu=False))
        given = _config_file(argv) is not None
        _COMMAND_LINE.update(config_given=given)
        if not given and not _COMMAND_LINE["config_required"]:
            # The packaged defaults stand in for the file, so --config.FIELD overrides still parse.
            argv = [argv[0], f"--config={configs.path('default.py')}", *argv[1:]]
        try:
            rest = flags.FLAGS(argv)
            if "config" in flags.FLAGS and flags.FLAGS.config is not None:
                flags.FLAGS.config.keys()  # a config file that failed to load raises only when used
                _COMMAND_LINE["overrides"] = _override_names()
        except flags.Error as error:
            _fail(f"{_clean(str(error))} (see --help)", 2)
        except Exception as error:
            where = _config_file_error(error, _config_file(argv))
            if where is not None:
                _fail(f"the config file cannot be loaded: {where}", 2)
            if not isinstance(error, (AttributeError, KeyError, TypeError, ValueError, OSError)):
                raise  # not the config's fault: keep the traceback
            # Raised by the config file or an override while the flags are parsed.
            _fail(f"invalid --config or --config.FIELD: {_clean(str(error))} (see --help)", 2)
        if len(rest) > 1:
            _fail(f"unexpected arguments {rest[1:]}: every setting is a flag (see --help)", 2)
        return rest

    return parse


def run(
    main: Callable[[list[str]], None],
    config_fields: ml_collections.ConfigDict | None = None,
    doc: str | None = None,
) -> None:
    """``absl.app.run(main)`` with this module's help and flag-error handling.

    Args:
      main: the entry point's main function.
      config_fields: the default config, listed by ``--help``.
      doc: the command's description for ``--help`` (default: the ``__main__`` module's docstring).
    """
    app.run(main, flags_parser=_parser(config_fields, doc))


@contextlib.contextmanager
def readable_errors() -> Iterator[None]:
    """Turns a `USER_ERRORS` exception into one ``error: <message>`` line and exit status 1.

    A full disk (``ENOSPC``, wherever it surfaces) is one line naming the path; Ctrl-C is one line and
    exit status 130, also when it was swallowed on the way (`snnjax.experiment.workdir.interrupts_noticed`).
    """
    try:
        with workdir_lib.interrupts_noticed():
            yield
    except KeyboardInterrupt:
        if flags.FLAGS.debug:
            raise
        _fail("interrupted (files already written are complete; a rerun resumes or rewrites them)", 130)
    except USER_ERRORS as error:
        if flags.FLAGS.debug:
            raise
        at_once = isinstance(error, files.DiskFullError)
        _fail(f"{error} (run with --debug for the traceback)", 1, at_once)
    except OSError as error:
        full = files.disk_full(error)
        if full is None or flags.FLAGS.debug:
            raise
        where = getattr(full, "filename", None) or "a file"
        _fail(
            f"the disk is full: writing {where} failed ({getattr(full, 'strerror', None) or full}).", 1, True
        )
