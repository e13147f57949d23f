#!/usr/bin/env bash
# Builds the documentation site (mkdocs + mkdocstrings, from docs/ and the docstrings) into site/,
# warnings as errors. `bash scripts/docs.sh serve` previews it live on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about its successor
if [ "${1:-}" = serve ]; then
  exec .venv/bin/mkdocs serve
fi
.venv/bin/mkdocs build --strict --site-dir site
