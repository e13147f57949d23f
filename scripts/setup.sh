#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs snnjax with its test and docs tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "snnjax needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Reinstall only when the project's requirements changed since the last install.
if [ ! -f .venv/.snnjax-installed ] || [ pyproject.toml -nt .venv/.snnjax-installed ]; then
  echo "Installing snnjax and its dependencies into .venv ..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,docs]"
  touch .venv/.snnjax-installed
fi
