#!/usr/bin/env bash
# Set-up + lint + format check + the documentation build + the test suite (this is what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/docs.sh
.venv/bin/python -m pytest "$@"
