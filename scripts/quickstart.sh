#!/usr/bin/env bash
# Set-up + train a QCFS CNN on the bundled handwritten digits + convert it to an SNN + print the table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORKDIR="${WORKDIR:-runs/quickstart}"
.venv/bin/python train.py --config configs/quickstart.py --workdir "$WORKDIR" "$@"
.venv/bin/python convert.py --config configs/quickstart.py --workdir "$WORKDIR" "$@"
