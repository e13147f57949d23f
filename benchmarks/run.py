"""The benchmark suite in one command: SNN evaluation vs its arithmetic limit, and training throughput.

    python -m benchmarks.run --quick                 # a few minutes on a 2-core CPU
    python -m benchmarks.run --name=full_cpu         # the whole grid (an hour or more on that CPU)
    python -m benchmarks.run --accelerator --name=h100   # GPU: VGG-16/ResNet-20, T = 4, 32, batch 256

Writes ``benchmarks/results/<name>.json`` (a list of SNN rows, see `benchmarks.snn_throughput`,
each naming the machine), ``<name>_training.json`` (training images/s, see
`benchmarks.train_throughput`), ``<name>.md`` (the tables) and ``<name>_overhead.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform

import jax

from benchmarks import RESULTS, snn_throughput, train_throughput

TARGET_OVERHEAD = 0.15  # issue target at T = 4 and 32, float32, batch 64 (VGG-16, ResNet-20)


def machine() -> str:
    """CPU model and core count, or the accelerator's name."""
    if jax.default_backend() != "cpu":
        return f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def grid(quick: bool, accelerator: bool = False) -> list[tuple]:
    """(model, T, batch, mode, dtype) configurations."""
    if accelerator:  # the GPU/TPU table: CIFAR-size VGG-16 and ResNet-20 at batch 256
        return list(
            itertools.product(
                ["vgg16", "resnet20"], [4, 32], [256], ["layer", "step"], ["float32", "bfloat16"]
            )
        )
    if quick:
        configs = list(
            itertools.product(["small_cnn", "resnet20"], [4, 32], [64], ["layer", "step"], ["float32"])
        )
        return configs + [("resnet20", 4, 64, "layer", "bfloat16")]
    return list(
        itertools.product(
            ["small_cnn", "resnet20", "vgg16"],
            [1, 4, 8, 32],
            [16, 64],
            ["layer", "step"],
            ["float32", "bfloat16"],
        )
    )


def plot_overhead(rows: list[dict], path: str, title: str) -> None:
    """Bar chart of SNN overhead over the ReLU limit per configuration, with the 15 % target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']} T={r['T']} B={r['batch']}\n{r['mode']} {r['dtype']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 4.5), dpi=120)
    colors = ["tab:blue" if r["mode"] == "layer" else "tab:orange" for r in rows]
    ax.bar(range(len(rows)), [100 * r["overhead"] for r in rows], color=colors)
    ax.axhline(100 * TARGET_OVERHEAD, color="k", linestyle="--", label="target 15 %")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("SNN time / ReLU-limit time − 1 (%)")
    ax.set_title(title, fontsize=9)
    ax.bar([0], [0], color="tab:blue", label="layer mode")
    ax.bar([0], [0], color="tab:orange", label="step mode")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Runs the suite, prints the tables, writes JSON, Markdown and the overhead plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, a few minutes on a 2-core CPU")
    parser.add_argument(
        "--name", default=None, help="results name (default quick_<backend> / full_<backend>)"
    )
    parser.add_argument(
        "--accelerator", action="store_true", help="the GPU grid: VGG-16/ResNet-20, batch 256"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-training", action="store_true", help="skip the training-throughput part")
    args = parser.parse_args()
    name = args.name or f"{'quick' if args.quick else 'full'}_{jax.default_backend()}"
    where = machine()
    print(f"benchmarks on {where}\n\nSNN evaluation vs the ReLU limit (same network on the [T·B] batch):")
    print(snn_throughput.HEADER, " TFLOP/s SNN / limit")
    rows = []
    for model, num_steps, batch, mode, dtype in grid(args.quick, args.accelerator):
        row = snn_throughput.measure(model, num_steps, batch, mode, dtype, args.repeats)
        row["machine"] = where
        rows.append(row)
        print(
            snn_throughput.format_row(row),
            f"{row['snn_flops_per_second'] / 1e12:6.2f} / {row['limit_flops_per_second'] / 1e12:6.2f}",
            flush=True,
        )
    training = []
    if not args.no_training:
        print("\ntraining throughput (QCFS, batch 128, auto convolution):")
        models = ["small_cnn", "resnet20"] if args.quick else ["small_cnn", "resnet20", "vgg16"]
        for model in models:
            row = train_throughput.measure(model, "auto", 128, steps=2 if args.quick else 3, repeats=2)
            row["machine"] = where
            training.append(row)
            print(f"{model:>10} {row['images_per_second']:9.1f} img/s", flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(RESULTS, f"{name}_training.json"), "w") as f:
        json.dump(training, f, indent=2)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(
            f"# Benchmark `{name}` on {where}\n\n"
            f"`python -m benchmarks.run {'--quick' if args.quick else ''}`\n\n"
        )
        f.write(
            "```\n"
            + snn_throughput.HEADER
            + "\n"
            + "\n".join(map(snn_throughput.format_row, rows))
            + "\n```\n"
        )
        if training:
            f.write("\nTraining (QCFS, batch 128, auto convolution), images/s:\n\n")
            f.write("\n".join(f"- {r['model']}: {r['images_per_second']:.1f}" for r in training) + "\n")
    plot_overhead(rows, os.path.join(RESULTS, f"{name}_overhead.png"), f"{name}: {where}")
    print(f"\nwrote benchmarks/results/{name}.json, {name}_training.json, {name}.md, {name}_overhead.png")


if __name__ == "__main__":
    main()
