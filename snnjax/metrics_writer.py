"""Where training metrics go: the console, ``workdir/metrics.jsonl`` and TensorBoard event files."""

from __future__ import annotations

import json
import os

__all__ = ["MetricsWriter"]


class MetricsWriter:
    """Writes scalar metrics to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/`` (TensorBoard).

    TensorBoard files are written with tensorboardX (no TensorFlow needed); without it installed the
    JSON lines are still written. Values must already be on the host (Python floats).
    """

    def __init__(self, workdir: str):
        self._jsonl = os.path.join(workdir, "metrics.jsonl")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional on machines that ship their own stack (e.g. GPU images)
            self._tensorboard = None
        else:
            self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Records ``scalars`` at ``step``."""
        with open(self._jsonl, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._tensorboard is not None:
            self._tensorboard.close()
