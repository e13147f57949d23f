"""Experiment configs: ``get_config()`` files, installed with snnjax as the package ``snnjax.configs``.

In a checkout they are the files under ``configs/``; an installed snnjax ships the same files, so
``snnjax-train --config quickstart`` (a name) works from any directory, and your own config file can
start from ours with ``from snnjax.configs import default``.
"""

import pathlib

__all__ = ["DIRECTORY", "names", "path"]

DIRECTORY = pathlib.Path(__file__).parent


def names() -> list[str]:
    """The packaged configs' names (file stems), e.g. ``["cifar10_resnet20_qcfs", ..., "quickstart"]``."""
    return sorted(p.stem for p in DIRECTORY.glob("*.py") if p.stem != "__init__")


def path(name: str) -> pathlib.Path:
    """The file of the packaged config ``name`` (``"quickstart"`` or ``"quickstart.py"``).

    Raises:
      FileNotFoundError: no packaged config has that name (the message lists them).
    """
    stem = name.removesuffix(".py")
    if stem not in names():
        raise FileNotFoundError(
            f"no packaged config {name!r}; the packaged configs are: {', '.join(names())}"
        )
    return DIRECTORY / f"{stem}.py"
