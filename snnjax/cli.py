"""The command-line front door of ``train.py`` and ``convert.py``: help, flag errors, readable failures.

* ``--help`` (``-h``, ``--helpshort``, ``--helpfull``) prints the usage, the flags and every config
  field with its default, and exits 0 (absl's own help exits 1).
* A bad flag or config override (``--config.levelz=3``, ``--config.levels=abc``, a missing config
  file) ends in one line naming it, exit status 2.
* An error from bad input (:data:`USER_ERRORS`: an invalid config value, a missing or damaged file, a
  workdir trained with another config, a diverged run) ends in one line with its message, exit
  status 1; ``--debug`` shows the full traceback instead.

Library code never calls this module: it raises, and the caller decides.
"""

from __future__ import annotations

import ast
import contextlib
import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator

import ml_collections
from absl import app, flags

__all__ = ["USER_ERRORS", "readable_errors", "run"]

flags.DEFINE_bool("debug", False, "Show the full Python traceback of an error instead of its message alone.")

# Errors the library raises for bad input; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    FloatingPointError,
    pickle.UnpicklingError,
)
HELP_FLAGS = ("-h", "-?", "--help", "-help", "--helpshort", "--helpfull")


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _clean(message: str) -> str:
    """ml_collections reports an unknown field as the repr of a repr; show the text once, on one line."""
    for _ in range(2):
        if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
            with contextlib.suppress(ValueError, SyntaxError):
                message = ast.literal_eval(message)
    return " ".join(message.split())


def _help_text(config_fields: ml_collections.ConfigDict | None) -> str:
    main = sys.modules["__main__"]
    lines = [(main.__doc__ or "").strip(), flags.FLAGS.main_module_help(), flags.FLAGS.module_help(__name__)]
    if config_fields is not None:
        fields = "  ".join(f"{k}={v!r}" for k, v in config_fields.items())
        lines += [
            "",
            "Config fields (defaults; configs/default.py explains each), set with --config.FIELD=value:",
            textwrap.fill(fields, width=100, initial_indent="  ", subsequent_indent="  "),
        ]
    return "\n".join(lines)


def _parser(config_fields: ml_collections.ConfigDict | None) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        if any(arg in HELP_FLAGS for arg in argv[1:]):
            print(_help_text(config_fields))
            sys.exit(0)
        try:
            rest = flags.FLAGS(argv)
            if "config" in flags.FLAGS and flags.FLAGS.config is not None:
                flags.FLAGS.config.keys()  # a config file that failed to load raises only when used
        except flags.Error as error:
            _fail(f"{_clean(str(error))} (see --help)", 2)
        except (AttributeError, KeyError, TypeError, ValueError, OSError) as error:
            # Raised by the config file or an override while the flags are parsed.
            _fail(f"invalid --config or --config.FIELD: {_clean(str(error))} (see --help)", 2)
        if len(rest) > 1:
            _fail(f"unexpected arguments {rest[1:]}: every setting is a flag (see --help)", 2)
        return rest

    return parse


def run(main: Callable[[list[str]], None], config_fields: ml_collections.ConfigDict | None = None) -> None:
    """``absl.app.run(main)`` with this module's help and flag-error handling.

    Args:
      main: the entry point's main function.
      config_fields: the default config, listed by ``--help``.
    """
    app.run(main, flags_parser=_parser(config_fields))


@contextlib.contextmanager
def readable_errors() -> Iterator[None]:
    """Turns a :data:`USER_ERRORS` exception into one ``error: <message>`` line and exit status 1."""
    try:
        yield
    except USER_ERRORS as error:
        if flags.FLAGS.debug:
            raise
        _fail(f"{error} (run with --debug for the traceback)", 1)
