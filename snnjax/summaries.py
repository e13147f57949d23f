"""What a conversion run shows a person: the accuracy and layer tables, and the two plots."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "REPORTED_STEPS",
    "format_layer_table",
    "format_table",
    "plot_accuracy",
    "plot_layers",
    "reported_steps",
]

REPORTED_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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
) -> None:
    """Accuracy vs T: the SNN curve (simulated t only) and the ANN as a dashed line.

    With ``latency`` (total latency of each readout t) the x axis is the total latency, pre-run
    steps included, so that methods with a pre-run are drawn where they really stand.
    """
    plt = _pyplot()
    steps = np.arange(1, len(snn_accuracy) + 1)
    simulated = np.isfinite(snn_accuracy)
    x = steps if latency is None else np.asarray([latency.get(int(t), np.nan) for t in steps], float)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(
        x[simulated],
        100 * snn_accuracy[simulated],
        marker="o",
        markersize=3,
        label="SNN (mean logits over 1..t)",
    )
    ax.axhline(100 * ann_accuracy, color="k", linestyle="--", label=f"ANN {100 * ann_accuracy:.2f}%")
    ax.set_xscale("log", base=2)
    ticks = [t for t in REPORTED_STEPS if t <= np.nanmax(x[simulated])]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("time steps t" if latency is None else "total latency (simulated steps, pre-run included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_layers(path: str, layer_report: dict, title: str) -> None:
    """Two panels over the activation layers, in network order.

    Top: relative L2 error (ANN vs SNN rate·θ) at each reported t. Bottom: mean firing rate (spikes per
    neuron per step) and the fraction of silent neurons.
    """
    plt = _pyplot()
    layers = layer_report["layers"]
    names = [layer["name"] for layer in layers]
    index = np.arange(len(layers))
    fig, (ax_error, ax_rate) = plt.subplots(
        2, 1, figsize=(max(6, 0.45 * len(layers) + 2), 7), dpi=120, sharex=True
    )
    for t in layers[0]["errors"]:
        ax_error.plot(
            index, [layer["errors"][t]["relative_l2"] for layer in layers], marker="o", label=f"t = {t}"
        )
    ax_error.set_ylabel("relative L2 error ‖r·θ − a‖/‖a‖")
    ax_error.set_title(title)
    ax_error.grid(True, alpha=0.3)
    ax_error.legend()
    ax_rate.bar(index, [layer["mean_rate"] for layer in layers], color="tab:orange", label="mean firing rate")
    ax_rate.plot(index, [layer["fraction_silent"] for layer in layers], "k.", label="fraction silent")
    ax_rate.set_ylabel(f"spikes/neuron/step, or fraction\n(over t ≤ {layer_report['firing_steps']})")
    ax_rate.set_ylim(0, 1)
    ax_rate.grid(True, axis="y", alpha=0.3)
    ax_rate.legend()
    ax_rate.set_xticks(index, names, rotation=60, ha="right", fontsize=8)
    ax_rate.set_xlabel("activation layer (network order)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    return "\n".join(lines)
