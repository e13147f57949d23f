"""What a conversion run shows a person: the accuracy and layer tables, the two plots, progress lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

import numpy as np

__all__ = [
    "LAYER_PLOT_NOTE",
    "PROGRESS_EVERY_S",
    "REPORTED_STEPS",
    "ProgressLog",
    "energy_comparison",
    "format_layer_table",
    "format_table",
    "plot_accuracy",
    "plot_layers",
    "reported_steps",
]

REPORTED_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROGRESS_EVERY_S = 30.0  # seconds between two ProgressLog lines in a log file


def reported_steps(num_steps: int, levels: int | None = None) -> list[int]:
    """The t shown in tables: 1, 2, 4, ... up to T, plus T itself and L (when ≤ T)."""
    steps = {t for t in REPORTED_STEPS if t <= num_steps} | {num_steps}
    if levels is not None and levels <= num_steps:
        steps.add(levels)
    return sorted(steps)


def format_table(
    ann_accuracy: float,
    snn_accuracy: np.ndarray,
    levels: int | None = None,
    latency: Mapping[int, int] | None = None,
) -> str:
    """A text table of ANN accuracy and SNN accuracy at T = 1, 2, 4, ... (and T = L).

    Args:
      ann_accuracy: a fraction.
      snn_accuracy: ``[T]`` fractions (NaN where not simulated).
      levels: L, marked in the table.
      latency: total latency (simulated steps) of each readout t; shown as a column when it differs
        from t anywhere.
    """
    steps = [t for t in reported_steps(len(snn_accuracy), levels) if np.isfinite(snn_accuracy[t - 1])]
    show_latency = latency is not None and any(latency[t] != t for t in steps)
    header = f"{'':>10}  {'accuracy':>9}  {'Δ vs ANN':>9}" + ("  total latency" if show_latency else "")
    lines = [header, f"{'ANN':>10}  {100 * ann_accuracy:8.2f}%"]
    for t in steps:
        acc = snn_accuracy[t - 1]
        mark = " (=L)" if t == levels else ""
        row = f"{'SNN T=' + str(t):>10}  {100 * acc:8.2f}%  {100 * (acc - ann_accuracy) + 0.0:+8.2f}"
        lines.append(row + (f"  {latency[t]:>13}" if show_latency else "") + mark)
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(
    path: str,
    ann_accuracy: float,
    snn_accuracy: np.ndarray,
    title: str,
    latency: Mapping[int, int] | None = None,
    levels: int | None = None,
    num_test: int | None = None,
    readout: str = "logits averaged over 1..t",
    settled_step: int | None = None,
) -> None:
    """Accuracy vs T: the SNN curve (simulated t only), the ANN as a dashed line, T = L marked.

    With ``latency`` (total latency of each readout t) the x axis is the total latency, pre-run
    steps included, so that methods with a pre-run are drawn where they really stand. With
    ``num_test`` a band of ±1 test image around the SNN curve shows which differences are noise. A
    caption under the axes says what is plotted.

    Args:
      path: the PNG to write.
      ann_accuracy: the ANN's top-1 accuracy, a fraction.
      snn_accuracy: ``[T]`` fractions; entry ``t-1`` is the accuracy after t steps (NaN: not simulated).
      title: the plot title.
      latency: ``{t: total latency}`` of each readout t, or None to plot against t.
      levels: the ANN's L (marked as T = L), or None.
      num_test: the number of test images (the ±1 image band), or None.
      readout: what the SNN's prediction at t is read from (the legend and caption say it).
      settled_step: T*, the first t from which the SNN predicts as the ANN on every image (marked),
        or None.
    """
    plt = _pyplot()
    steps = np.arange(1, len(snn_accuracy) + 1)
    simulated = np.isfinite(snn_accuracy)
    x = steps if latency is None else np.asarray([latency.get(int(t), np.nan) for t in steps], float)
    fig, ax = plt.subplots(figsize=(6, 4.4), dpi=120)
    ax.plot(
        x[simulated],
        100 * snn_accuracy[simulated],
        marker="o",
        markersize=3,
        label=f"SNN ({readout})",
    )
    one_image = None
    if num_test:
        one_image = 100 / num_test
        ax.fill_between(
            x[simulated],
            100 * snn_accuracy[simulated] - one_image,
            100 * snn_accuracy[simulated] + one_image,
            alpha=0.2,
            label=f"±1 test image (±{one_image:.2f} points)",
        )
    ax.axhline(100 * ann_accuracy, color="k", linestyle="--", label=f"ANN {100 * ann_accuracy:.2f}%")
    if levels is not None and levels <= len(snn_accuracy):
        at = levels if latency is None else latency.get(levels, np.nan)
        if np.isfinite(at):
            ax.axvline(at, color="tab:red", linestyle=":", label=f"T = L = {levels}")
    if settled_step is not None:
        ax.axvline(
            settled_step, color="tab:green", linestyle="-.", label=f"T* = {settled_step}: SNN = ANN after"
        )
    ax.set_xscale("log", base=2)
    ticks = [t for t in REPORTED_STEPS if t <= np.nanmax(x[simulated])]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("time steps t" if latency is None else "total latency (simulated steps, pre-run included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    caption = f"Top-1 test accuracy of the SNN's prediction after t steps ({readout})"
    caption += "; dashed: the ANN it was converted from." if one_image is None else ", ANN dashed."
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)


# Under the layer plot: why the error can vanish at T = L and not at larger T.
LAYER_PLOT_NOTE = (
    "At T = L (with v0 = φθ) an IF neuron fed a constant input fires exactly the L-level QCFS output, so"
    " the error can be 0; at T ≠ L its rate lies on a grid of θ/T, not θ/L, so even a perfect SNN"
    " differs from the L-level ANN (and deeper layers get uneven, not constant, input)."
)


def plot_layers(path: str, layer_report: dict, title: str) -> None:
    """Three panels over the activation layers, in network order.

    Top: relative L2 error ‖r − a‖/‖a‖ between the ANN activation ``a`` and the SNN's mean output
    ``r`` (spikes·θ averaged over t steps; θ is counted once) at each reported t. Middle: mean firing
    rate (spikes per neuron per step). Bottom: the fraction of neurons that never fired. A note under
    the panels says why the error can be 0 at T = L and not at larger T.

    Args:
      path: the PNG to write.
      layer_report: from `snnjax.analysis.reports.spiking_layer_report`.
      title: the plot title.
    """
    plt = _pyplot()
    layers = layer_report["layers"]
    names = [layer["name"] for layer in layers]
    index = np.arange(len(layers))
    firing_steps = layer_report["firing_steps"]
    fig, (ax_error, ax_rate, ax_silent) = plt.subplots(
        3, 1, figsize=(max(6, 0.45 * len(layers) + 2), 8.5), dpi=120, sharex=True
    )
    for t in layers[0]["errors"]:
        ax_error.plot(
            index, [layer["errors"][t]["relative_l2"] for layer in layers], marker="o", label=f"t = {t}"
        )
    ax_error.set_ylabel("relative L2 error\n‖r − a‖/‖a‖, r = mean spikes·θ")
    ax_error.set_title(title)
    ax_error.grid(True, alpha=0.3)
    ax_error.legend()
    ax_rate.bar(index, [layer["mean_rate"] for layer in layers], color="tab:orange")
    ax_rate.set_ylabel(f"firing rate\n(spikes/neuron/step, t ≤ {firing_steps})")
    ax_rate.set_ylim(bottom=0)
    ax_rate.grid(True, axis="y", alpha=0.3)
    ax_silent.bar(index, [layer["fraction_silent"] for layer in layers], color="tab:gray")
    ax_silent.set_ylabel(f"fraction silent\n(no spike in {firing_steps} steps)")
    ax_silent.set_ylim(0, 1)
    ax_silent.grid(True, axis="y", alpha=0.3)
    ax_silent.set_xticks(index, names, rotation=60, ha="right", fontsize=8)
    ax_silent.set_xlabel("activation layer (network order)")
    fig.text(0.5, 0.005, LAYER_PLOT_NOTE, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def energy_comparison(snn_energy_uj: float, ann_energy_uj: float) -> str:
    """One plain sentence comparing the SNN's estimated energy per image with the ANN's."""
    ratio = snn_energy_uj / max(ann_energy_uj, 1e-30)
    verdict = "HIGHER than" if ratio > 1.005 else "lower than" if ratio < 0.995 else "about equal to"
    return (
        f"The SNN's estimated energy is {verdict} the ANN's: {snn_energy_uj:.3f} µJ vs "
        f"{ann_energy_uj:.3f} µJ per image ({ratio:.2f}×)."
    )


def format_neurobench(metrics: Mapping) -> str:
    """One line of NeuroBench's metrics (`snnjax.analysis.neurobench.neurobench_metrics`) by name."""
    ops = metrics["SynapticOperations"]
    return (
        f"NeuroBench ({metrics['num_samples']} test images, T={metrics['num_steps']}, per sample): "
        f"Effective_MACs {ops['Effective_MACs']:.4g}, Effective_ACs {ops['Effective_ACs']:.4g}, "
        f"Dense {ops['Dense']:.4g}, ActivationSparsity {metrics['ActivationSparsity']:.4f}, "
        f"ConnectionSparsity {metrics['ConnectionSparsity']:.4f}, Footprint {metrics['Footprint']} bytes"
    )


def format_layer_table(layer_report: dict, energy: dict) -> str:
    """Per-layer error at each reported t, firing statistics, and the operation/energy totals."""
    lines = []
    for t in layer_report["layers"][0]["errors"]:
        lines += [
            f"layer-wise ANN vs SNN at t={t} ({layer_report['images']} test images; rate and silent at "
            f"t={layer_report['firing_steps']}):",
            f"{'layer':>26} {'rel L2':>7} {'cosine':>7} {'clip':>7} {'quant':>7} {'uneven':>7} {'v<0':>5} "
            f"{'rate':>6} {'silent':>6}",
        ]
        for layer in layer_report["layers"]:
            e = layer["errors"][t]
            lines.append(
                f"{layer['name'][-26:]:>26} {e['relative_l2']:7.4f} {e['cosine']:7.4f} {e['clipping']:7.4f} "
                f"{e['quantization']:7.4f} {e['unevenness']:7.4f} {e['negative_residual']:5.2f} "
                f"{layer['mean_rate']:6.3f} {layer['fraction_silent']:6.2f}"
            )
    lines.append(
        f"per image: ANN {energy['ann_macs'] / 1e6:.3f} M MACs = {energy['ann_energy_uj']:.3f} µJ; "
        f"SNN (t={layer_report['firing_steps']}) {energy['snn_macs'] / 1e6:.3f} M MACs + "
        f"{energy['snn_sops'] / 1e6:.3f} M SOPs ({layer_report['spikes_per_image']:.0f} spikes) = "
        f"{energy['snn_energy_uj']:.3f} µJ ({energy['pj_per_mac']} pJ/MAC, {energy['pj_per_ac']} pJ/AC)"
    )
    lines.append(energy_comparison(energy["snn_energy_uj"], energy["ann_energy_uj"]))
    return "\n".join(lines)


class ProgressLog:
    """Progress lines for logs (batches done, images/s, ETA), where a TTY progress bar leaves nothing.

    Prints a line at most every ``every_s`` seconds while stdout is not a terminal (a terminal gets
    tqdm's bar instead), and one closing line in both cases.
    """

    def __init__(
        self, desc: str, total: int | None, every_s: float | None = None, stream: TextIO | None = None
    ):
        """Starts the clock.

        Args:
          desc: what is running, e.g. ``"SNN T=32"``.
          total: the number of batches, or None when unknown (no ETA then).
          every_s: seconds between two progress lines (0: one per batch; default
            `PROGRESS_EVERY_S`).
          stream: where to print (default ``sys.stdout``).
        """
        self.desc, self.total = desc, total
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.stream = stream if stream is not None else sys.stdout
        self.batches = self.images = 0
        self.start = self._last = time.perf_counter()
        self.interactive = self.stream.isatty()

    def update(self, images: int) -> None:
        """Counts one batch of ``images`` images; prints a line if ``every_s`` has passed."""
        self.batches += 1
        self.images += images
        now = time.perf_counter()
        if self.interactive or now - self._last < self.every_s:
            return
        self._last = now
        speed = self.images / max(now - self.start, 1e-9)
        done = f"{self.batches}/{self.total}" if self.total else f"{self.batches}"
        eta = ""
        if self.total:
            eta = f", ETA {(self.total - self.batches) * (now - self.start) / self.batches:.0f} s"
        print(f"{self.desc}: {done} batches, {self.images} images, {speed:.1f} img/s{eta}", file=self.stream)
        self.stream.flush()

    def close(self) -> None:
        """Prints the closing line: batches, images, seconds and images/s."""
        elapsed = time.perf_counter() - self.start
        print(
            f"{self.desc}: {self.batches} batches, {self.images} images in {elapsed:.1f} s "
            f"({self.images / max(elapsed, 1e-9):.1f} img/s)",
            file=self.stream,
            flush=True,
        )
