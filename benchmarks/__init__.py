"""Benchmarks: scripts that print a table and write JSON under benchmarks/results/."""

import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def write_rows(rows: list[dict], results_dir: str, name: str) -> str:
    """Writes ``rows`` to ``<results_dir>/<name>.json`` (the folder made if needed) and says where."""
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"wrote {path}")
    return path
