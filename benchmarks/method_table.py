r"""ANN vs SNN accuracy for every conversion method on one config: the conversion toolkit's tables.

Sections (``--sections``, comma-separated):

* ``ann``: one ANN per training method (QCFS, SlipReLU c = 0.5, ReLU + 99.9 % balancing,
  SpikeConverter, and a max-pool ReLU ANN converted with both max-pool policies), each converted and
  simulated in float32 and bfloat16.
* ``low_latency``: every training-free low-latency method (``config.post_conversion``: burst and group
  neurons, COS in the reference and the network-wide schedule, SRP, bias / potential / per-step-bias
  calibration) on the config's own ANN, plus the light calibration pipeline on the ReLU ANN (needs
  ``ann``), reported against **total latency** (pre-run steps included) with one plot per data set.
* ``slip_sweep``: SlipReLU over (c, L), SNN accuracy at T = 1 (the paper's headline claim).

::

    python -m benchmarks.method_table --config configs/quickstart.py --name quickstart_cpu
    python -m benchmarks.method_table --config configs/mnist_cnn_qcfs.py \\
        --config.data_dir=../shared/data/mnist --name mnist_h100

Writes ``benchmarks/results/method_table_<name>.json`` (rows per section: accuracy by readout t, total
latency by t, spike alphabet, spikes and energy per image, calibration data),
``method_table_<name>_latency.png`` (accuracy vs total latency, one line per method) and the per-run
workdirs under ``--workdir_root``.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import RESULTS
from snnjax.experiment import pipeline as evaluation, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base experiment config.", lock_config=True)
flags.DEFINE_string("name", None, "Result name, e.g. quickstart_cpu.")
flags.DEFINE_string("workdir_root", "runs/method_table", "Where the per-method workdirs go.")
flags.DEFINE_list("sections", ["ann", "low_latency"], "ann, low_latency, slip_sweep (see the docstring).")
flags.mark_flags_as_required(["config", "name"])

# (label, ANN overrides, conversion overrides); every conversion also runs in bfloat16.
VARIANTS = (
    ("qcfs", {"method": "qcfs"}, {}),
    ("slip_relu c=0.5", {"method": "slip_relu", "slip_c": 0.5}, {}),
    ("relu + 99.9% balancing", {"method": "relu"}, {}),
    ("spikeconverter", {"method": "spikeconverter"}, {}),
    ("relu, max-pool ANN → avg-pool SNN", {"method": "relu", "pooling": "max"}, {"snn_max_pool": "avg"}),
    (
        "relu, max-pool ANN → spiking max gate",
        {"method": "relu", "pooling": "max"},
        {"snn_max_pool": "max_gate"},
    ),
)


# (label, conversion overrides) of the low-latency section, all on the config's own ANN.
LOW_LATENCY = (
    ("plain IF", {}),
    ("burst m=2", {"post_conversion": "burst", "spikes_per_step": 2}),
    ("group m=2", {"post_conversion": "group", "spikes_per_step": 2}),
    ("group m=4", {"post_conversion": "group", "spikes_per_step": 4}),
    ("COS ρ=2 (reference, layer-wise pre-runs)", {"post_conversion": "cos", "prerun_steps": 2}),
    ("COS ρ=2 (network pre-run, ours)", {"post_conversion": "cos_network", "prerun_steps": 2}),
    ("COS ρ=4 (network pre-run, ours)", {"post_conversion": "cos_network", "prerun_steps": 4}),
    ("SRP τ=2", {"post_conversion": "srp", "prerun_steps": 2}),
    ("SRP τ=4", {"post_conversion": "srp", "prerun_steps": 4}),
    ("bias calibration, T_cal=4", {"post_conversion": "bias_calibration", "post_calibration_steps": 4}),
    (
        "potential calibration, T_cal=4",
        {"post_conversion": "potential_calibration", "post_calibration_steps": 4},
    ),
    (
        "per-step bias (FTBC), T_cal=8",
        {"post_conversion": "step_bias_calibration", "post_calibration_steps": 8},
    ),
)
# The light pipeline's own setting: a ReLU ANN with percentile thresholds, then bias calibration.
RELU_CALIBRATION = (
    "relu ANN + bias calibration, T_cal=4",
    {"method": "relu"},
    {"post_conversion": "bias_calibration", "post_calibration_steps": 4},
)
LATENCY_BUDGETS = (1, 2, 4, 8, 16, 32)


def _trained(ann_overrides: dict) -> tuple:
    """``(config, workdir, train_seconds)`` of the ANN with these overrides, trained or resumed."""
    config = copy.deepcopy(FLAGS.config)
    config.unlock()
    config.update(ann_overrides)
    key = "_".join(f"{k}-{v}" for k, v in sorted(ann_overrides.items())) or "base"
    workdir = os.path.join(FLAGS.workdir_root, FLAGS.name, key)
    start = time.perf_counter()
    training.train_and_evaluate(config, workdir)  # resumes (no-op) when already trained
    return config, workdir, time.perf_counter() - start


def _within(result: dict, budget: int) -> tuple[float | None, int | None]:
    """Accuracy of the longest readout whose total latency is at most ``budget``, and that latency.

    The longest readout that fits, not the best one: picking the best t by its test accuracy would
    flatter every method.
    """
    fits = [t for t in result["snn_accuracy"] if result["latency_steps"][t] <= budget]
    if not fits:
        return None, None
    t = max(fits, key=int)
    return result["snn_accuracy"][t], result["latency_steps"][t]


def low_latency_rows() -> list[dict]:
    """Every post-conversion method on the config's ANN (and the ReLU light pipeline)."""
    rows = []
    own = {"method": FLAGS.config.method}  # the same workdir as the ann section's run of this method
    runs = [(label, own, overrides) for label, overrides in LOW_LATENCY]
    if "ann" in FLAGS.sections:
        runs.append(RELU_CALIBRATION)
    for label, ann_overrides, overrides in runs:
        config, workdir, _ = _trained(ann_overrides)
        config.update(overrides)
        start = time.perf_counter()
        result = evaluation.convert_and_evaluate(config, workdir)
        energy = result["method_energy"] or {**result["energy"], "spikes_per_image": None}
        rows.append(
            {
                "method": label,
                "ann": config.method,
                "post_conversion": result["post_conversion"],
                "neuron_options": result["neuron_options"],
                "num_test_images": result["num_test_images"],
                "ann_accuracy": result["ann_accuracy"],
                "snn_accuracy": result["snn_accuracy"],
                "latency_steps": result["latency_steps"],
                "within_latency": {str(b): _within(result, b) for b in LATENCY_BUDGETS},
                "spike_alphabet": result["spike_alphabet"],
                "extra_state_per_neuron": result["extra_state_per_neuron"],
                "calibration": result["calibration"],
                "spikes_per_image": energy["spikes_per_image"] or result["layers"]["spikes_per_image"],
                "snn_energy_uj": energy["snn_energy_uj"],
                "ann_energy_uj": result["energy"]["ann_energy_uj"],
                "energy_readout_steps": result["layers"]["firing_steps"],
                "convert_seconds": round(time.perf_counter() - start, 1),
            }
        )
    print(
        f"\n{FLAGS.name}: SNN accuracy (%) at the longest readout within a total latency budget "
        f"(simulated steps, pre-run included), {rows[0]['num_test_images']} test images"
    )
    print(
        f"{'method':>42} {'ANN':>6} " + " ".join(f"{'≤' + str(b):>6}" for b in LATENCY_BUDGETS) + "  spikes"
    )
    for row in rows:
        cells = [
            f"{100 * a:6.2f}" if a is not None else f"{'—':>6}"
            for a, _ in (row["within_latency"][str(b)] for b in LATENCY_BUDGETS)
        ]
        print(
            f"{row['method']:>42} {100 * row['ann_accuracy']:6.2f} "
            + " ".join(cells)
            + f"  {row['spikes_per_image']:.0f}"
        )
    return rows


def plot_latency(rows: list[dict], path: str) -> None:
    """Accuracy vs total latency, one line per method, the ANN(s) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more methods than the default ten colours
    for row in rows:
        points = sorted((row["latency_steps"][t], 100 * a) for t, a in row["snn_accuracy"].items())
        style = "--" if row["ann"] != FLAGS.config.method else "-"
        ax.plot(
            *zip(*points, strict=True), style, marker="o", markersize=2.5, linewidth=1.2, label=row["method"]
        )
    for method, accuracy in {row["ann"]: row["ann_accuracy"] for row in rows}.items():
        ax.axhline(
            100 * accuracy, color="k", linestyle=":", linewidth=1, label=f"{method} ANN {100 * accuracy:.2f}%"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(LATENCY_BUDGETS) + [64, 128], [str(t) for t in list(LATENCY_BUDGETS) + [64, 128]])
    ax.set_xlim(0.8, 64)
    ax.set_xlabel("total latency: simulated steps from the first input to the output (pre-run included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{FLAGS.name}: {FLAGS.config.dataset}, {FLAGS.config.model}, "
        f"{FLAGS.config.method} L={FLAGS.config.levels}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def slip_sweep_rows() -> list[dict]:
    """SlipReLU over (c, L): the SNN's accuracy at T = 1 (and T = L)."""
    rows = []
    for levels in (2, 4, 8):
        for c in (0.0, 0.25, 0.5, 0.75, 1.0):
            config, workdir, _ = _trained({"method": "slip_relu", "slip_c": c, "levels": levels})
            config.snn_num_steps = max(8, levels)
            result = evaluation.convert_and_evaluate(config, workdir)
            rows.append(
                {
                    "c": c,
                    "levels": levels,
                    "ann_accuracy": result["ann_accuracy"],
                    "snn_t1": result["snn_accuracy"]["1"],
                    "snn_t_levels": result["snn_accuracy"][str(levels)],
                }
            )
    print(f"\n{FLAGS.name}: SlipReLU sweep, SNN accuracy (%) at T = 1 (ANN in brackets)")
    print(f"{'L':>3} " + " ".join(f"{'c=' + str(c):>15}" for c in (0.0, 0.25, 0.5, 0.75, 1.0)))
    for levels in (2, 4, 8):
        cells = [
            f"{100 * r['snn_t1']:6.2f} ({100 * r['ann_accuracy']:5.2f})"
            for r in rows
            if r["levels"] == levels
        ]
        print(f"{levels:>3} " + " ".join(f"{cell:>15}" for cell in cells))
    return rows


def ann_rows() -> list[dict]:
    """One ANN per training method, converted in float32 and bfloat16."""
    rows = []
    for label, ann_overrides, snn_overrides in VARIANTS:
        config, workdir, train_seconds = _trained(ann_overrides)
        for dtype in ("float32", "bfloat16"):
            config.update(snn_overrides)
            config.snn_dtype = dtype
            start = time.perf_counter()
            result = evaluation.convert_and_evaluate(config, workdir)
            rows.append(
                {
                    "variant": label,
                    "dtype": dtype,
                    "neuron": result["neuron"],
                    "ann_accuracy": result["ann_accuracy"],
                    "snn_accuracy": result["snn_accuracy"],
                    "train_seconds": round(train_seconds, 1),
                    "convert_seconds": round(time.perf_counter() - start, 1),
                }
            )
    steps = ["1", "2", "4", "8", "16", "32"]
    print(
        f"\n{FLAGS.name}: {FLAGS.config.dataset}, {FLAGS.config.model}, L={FLAGS.config.levels}, "
        f"{jax.devices()[0]}"
    )
    print(f"{'variant':>40} {'dtype':>9} {'ANN':>6} " + " ".join(f"{'T=' + t:>6}" for t in steps))
    for row in rows:
        cells = [
            f"{100 * row['snn_accuracy'][t]:6.2f}" if t in row["snn_accuracy"] else f"{'':>6}" for t in steps
        ]
        print(f"{row['variant']:>40} {row['dtype']:>9} {100 * row['ann_accuracy']:6.2f} " + " ".join(cells))
    return rows


def main(argv):
    """Runs the selected sections, prints their tables, writes the JSON and the latency plot."""
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = set(FLAGS.sections) - {"ann", "low_latency", "slip_sweep"}
    if unknown:
        raise app.UsageError(f"--sections: unknown {sorted(unknown)}; allowed: ann, low_latency, slip_sweep.")
    results_dir = RESULTS
    os.makedirs(results_dir, exist_ok=True)
    output = {"device": str(jax.devices()[0]), "config": FLAGS.config.to_dict()}
    if "ann" in FLAGS.sections:
        output["rows"] = ann_rows()
    if "low_latency" in FLAGS.sections:
        output["low_latency"] = low_latency_rows()
        plot_path = os.path.join(results_dir, f"method_table_{FLAGS.name}_latency.png")
        plot_latency(output["low_latency"], plot_path)
        print(f"Wrote {plot_path}")
    if "slip_sweep" in FLAGS.sections:
        output["slip_sweep"] = slip_sweep_rows()
    path = os.path.join(results_dir, f"method_table_{FLAGS.name}.json")
    if os.path.exists(path):
        print(f"note: replacing {path}")
    with open(path, "w") as f:
        json.dump(output, f, indent=2)
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
