"""Where metrics go: ``workdir/metrics.jsonl`` and TensorBoard event files (training and conversion)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping

from snnjax.io.files import atomic_write

__all__ = ["MetricsWriter", "write_curves"]


def _step_of(line: str) -> int | None:
    """The step of one ``metrics.jsonl`` record (None for a line that is not one, e.g. cut short)."""
    try:
        step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


class MetricsWriter:
    """Writes scalar metrics to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/`` (TensorBoard).

    TensorBoard files are written with tensorboardX (no TensorFlow needed); without it installed the
    JSON lines are still written. Values must already be on the host (Python floats).
    """

    def __init__(self, workdir: str, resume_step: int = 0, active: bool = True):
        """Opens the writers.

        Args:
          workdir: the training workdir.
          resume_step: the step training continues from. Records of later steps (written after the
            last checkpoint by a run that was then interrupted) are dropped, since training writes
            them again, so ``metrics.jsonl`` never holds a step twice; so is a last line cut short.
          active: False makes every call a no-op (the processes other than 0 of a multi-process run,
            which share the workdir).
        """
        self._active = active
        self._tensorboard = None
        if not active:
            return
        self._jsonl = os.path.join(workdir, "metrics.jsonl")
        self._drop_after(resume_step)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional on machines that ship their own stack (e.g. GPU images)
            self._tensorboard = None
        else:
            self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def _drop_after(self, step: int) -> None:
        if not os.path.exists(self._jsonl):
            return
        with open(self._jsonl) as f:
            lines = f.readlines()
        # A line cut short by a kill is no record either: it would glue onto the next one.
        kept = [
            line for line in lines if (s := _step_of(line)) is not None and s <= step and line.endswith("\n")
        ]
        if len(kept) == len(lines):
            return

        def write(path):
            with open(path, "w") as f:
                f.writelines(kept)

        atomic_write(self._jsonl, write)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Records ``scalars`` at ``step``."""
        if not self._active:
            return
        with open(self._jsonl, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._tensorboard is not None:
            self._tensorboard.close()


def write_curves(directory: str, curves: Mapping[str, Mapping[int, float]]) -> bool:
    """Writes curves as TensorBoard scalars (x = the integer key) into one run folder, replacing it.

    Conversion uses it for the SNN's accuracy after every t, so TensorBoard shows the curve next to
    the training run. The folder's previous event files (an earlier conversion with the same
    settings) are removed: they are derived from ``snn_eval.json``, which is replaced too.

    Args:
      directory: the run folder, e.g. ``workdir/tensorboard/snn_if_layer_float32``.
      curves: ``{tag: {x: value}}``.

    Returns:
      False (and writes nothing) when tensorboardX is not installed.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return False
    for old in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        os.remove(old)
    writer = SummaryWriter(directory)
    try:
        for tag, values in curves.items():
            for x, value in sorted(values.items()):
                writer.add_scalar(tag, value, int(x))
    finally:
        writer.close()
    return True
