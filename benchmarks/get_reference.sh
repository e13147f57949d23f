#!/usr/bin/env bash
# Clones the two QCFS reference repositories that `python -m benchmarks.vs_reference` runs side by side
# with snnjax, at the commits it was written against, into benchmarks/reference/ (git-ignored).
# Their code has no license: it is run from these checkouts, never copied into snnjax.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p reference
clone() {  # clone NAME COMMIT
  local dir="reference/$1"
  if [ ! -d "$dir/.git" ]; then
    git clone --quiet "https://github.com/putshua/$1.git" "$dir"
  fi
  git -C "$dir" checkout --quiet "$2"
  echo "$dir at $(git -C "$dir" rev-parse --short HEAD)"
}
clone ANN_SNN_QCFS eca136bd085087567013240ee14fb6159a2b6da7
clone SNN_conversion_QCFS c27a446dee1240eee7a0e7021e0fa614883b8020
