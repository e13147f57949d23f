r"""Same recipe, two codes: snnjax's QCFS training against the reference's on identical pixels.

Trains ResNet-20 with QCFS (L = 4) on CIFAR-10 (JPEG) with the reference recipe (SGD 0.9, lr 0.1 cosine
per epoch, weight decay 5e-4 on everything, batch 128, crop + flip), once per seed and epoch count, in
snnjax and in the reference code (putshua/SNN_conversion_QCFS: its own ResNet-20, ``MyFloor`` /
``ScaledNeuron`` modules, optimizer groups and conversion, driven by ``ref_train_qcfs.py`` on the same
decoded pixels), and prints both curves side by side: ANN accuracy and SNN accuracy at t = 1..32 on the
same uniformly drawn test images, the conversion loss (ANN − SNN) at t = 1, 2, 4, 8, and the spread
over seeds (mean ± sample std)::

    python -m benchmarks.same_recipe --data_dir=../shared/data/cifar10-jpeg --epochs=1,3 \
        --seeds=42,43,44 --reference=benchmarks/reference/SNN_conversion_QCFS --name=same_recipe_cpu
    # one snnjax option against the reference (any config field):
    python -m benchmarks.same_recipe ... --sides=snnjax --set=qcfs_order=floor_clip,param_init=pytorch

The reference side needs PyTorch, a checkout of the reference (``bash benchmarks/get_reference.sh``)
and the two driver scripts of ``--reference_tools`` (``ref_train_qcfs.py``, ``cache_cifar10jpeg.py``;
the project's ``../shared/reference``); without them the snnjax side runs and the command says what is
missing. Writes ``benchmarks/results/same_recipe_<name>.json`` (one row per side, seed and epoch count).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import statistics
import subprocess
import sys

from absl import logging

from benchmarks import RESULTS, write_rows
from snnjax.configs import default as default_config
from snnjax.experiment import pipeline as evaluation, training, workdir as workdir_lib

REPORTED_STEPS = (1, 2, 4, 8, 16, 32)
LOSS_STEPS = (1, 2, 4, 8)


def parse_overrides(items: list[str]) -> dict:
    """``["qcfs_order=floor_clip", "levels=8"]`` → ``{"qcfs_order": "floor_clip", "levels": 8}``."""
    overrides = {}
    for item in items:
        field, _, text = item.partition("=")
        try:
            overrides[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[field] = text
    return overrides


def recipe(args: argparse.Namespace, epochs: int, seed: int, overrides: dict):
    """The snnjax config of one run: the reference recipe (or ``--base_config``) with ``overrides``."""
    config = importlib.import_module(args.base_config).get_config()
    if args.base_config.endswith("cifar10jpeg_resnet20_qcfs"):
        config.augment = "crop,flip"  # the recipe: no Cutout
    if args.data_dir is not None:
        config.data_dir = args.data_dir
    config.num_epochs, config.seed = epochs, seed
    config.test_examples, config.snn_num_steps = args.test_examples, args.snn_num_steps
    config.report_examples = 64  # the layer report is not what this compares
    for field, value in overrides.items():
        config[field] = value
    return config


def as_recorded_now(recorded: dict) -> dict:
    """A recorded config with the fields an older snnjax did not record set to what that run did.

    Training fields added since (`workdir.UNRECORDED_TRAINING_DEFAULTS`) take the behaviour before them;
    any other new field its default, so a run finished before a field existed is read back, not redone.
    """
    defaults = workdir_lib.config_dict(default_config.get_config())
    return {**defaults, **workdir_lib.UNRECORDED_TRAINING_DEFAULTS, **recorded}


def snnjax_row(args: argparse.Namespace, epochs: int, seed: int, overrides: dict) -> dict:
    """Trains and converts one snnjax run; a finished one (same config in its ``snn_eval.json``) is read."""
    config = recipe(args, epochs, seed, overrides)
    tag = "".join(f"_{k}-{v}" for k, v in sorted(overrides.items()))
    workdir = os.path.join(args.workdir_root, f"snnjax_e{epochs}_s{seed}{tag}")
    recorded = os.path.join(workdir, "snn_eval.json")
    result = None
    if os.path.isfile(recorded):  # a finished run with this very config is read, not repeated
        with open(recorded) as f:
            result = json.load(f)
        if as_recorded_now(result.get("config") or {}) != workdir_lib.config_dict(config):
            result = None
    if result is None:
        training.train_and_evaluate(config, workdir)  # resumes (a no-op) when already trained
        result = evaluation.convert_and_evaluate(config, workdir)
    return {
        "side": "snnjax",
        "epochs": epochs,
        "seed": seed,
        "overrides": overrides,
        "test_images": result["num_test_images"],
        "ann": result["ann_accuracy"],
        "snn": {int(t): a for t, a in result["snn_accuracy"].items()},
    }


def torch_or_checkout_missing(reference: str) -> list[str]:
    """PyTorch and the SNN_conversion_QCFS checkout at ``reference``, where absent (empty when present)."""
    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append("PyTorch (pip install torch==2.13.0)")
    if not os.path.isfile(os.path.join(reference, "modules.py")):
        missing.append(f"a reference checkout at --reference={reference} (bash benchmarks/get_reference.sh)")
    return missing


def reference_missing(args: argparse.Namespace) -> list[str]:
    """What keeps the reference side from running (empty when it can)."""
    missing = torch_or_checkout_missing(args.reference)
    for script in ("ref_train_qcfs.py", "cache_cifar10jpeg.py"):
        if not os.path.isfile(os.path.join(args.reference_tools, script)):
            missing.append(f"{script} in --reference_tools={args.reference_tools}")
    if not args.data_dir:
        missing.append("--data_dir (the CIFAR-10 (JPEG) folder)")
    return missing


def reference_row(args: argparse.Namespace, epochs: int, seed: int) -> dict:
    """Runs the reference code on the same pixels (a finished run's JSON is read, not repeated)."""
    cache = os.path.join(args.workdir_root, "pixels")
    if not os.path.isfile(os.path.join(cache, "test_y.npy")):
        script = os.path.join(args.reference_tools, "cache_cifar10jpeg.py")
        subprocess.run([sys.executable, script, args.data_dir, cache], check=True)
    out = os.path.join(args.workdir_root, f"reference_e{epochs}_s{seed}.json")
    if not os.path.isfile(out):  # a finished run is read, not repeated
        command = [
            sys.executable, os.path.join(args.reference_tools, "ref_train_qcfs.py"),
            "--data", cache, "--epochs", str(epochs), "--seed", str(seed),
            "--snn-test-examples", str(args.test_examples), "--subset", str(args.test_examples),
            "--T", str(args.snn_num_steps), "--threads", str(args.threads), "--out", out,
        ]  # fmt: skip
        env = {**os.environ, "REF_QCFS": os.path.abspath(args.reference)}
        subprocess.run(command, check=True, env=env)
    with open(out) as f:
        result = json.load(f)
    return {
        "side": "reference",
        "epochs": epochs,
        "seed": seed,
        "overrides": {},
        "test_images": result["snn_num_test"],
        "ann": result["ann_acc_subset"],
        "snn": {int(t): a for t, a in result["snn_acc"].items()},
    }


def spread(values: list[float]) -> str:
    """Percent, as ``mean±std`` over seeds (sample std; the mean alone for one seed)."""
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f}±{100 * statistics.stdev(values):.2f}"


def table(rows: list[dict], num_steps: int) -> str:
    """One line per (side and options, epochs): ANN, SNN at the reported t, the loss ANN − SNN."""
    steps = [t for t in REPORTED_STEPS if t <= num_steps]
    losses = [t for t in LOSS_STEPS if t <= num_steps]
    lines = [
        f"{'side':<40} {'ep':>2} {'seeds':>5} {'ANN':>12} "
        + " ".join(f"{f'T={t}':>12}" for t in steps)
        + " | ANN-SNN "
        + " ".join(f"{f't={t}':>12}" for t in losses)
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        label = row["side"] + "".join(f" {k}={v}" for k, v in sorted(row["overrides"].items()))
        groups.setdefault((label, row["epochs"]), []).append(row)
    for (label, epochs), group in groups.items():
        snn = [spread([r["snn"][t] for r in group]) for t in steps]
        loss = [spread([r["ann"] - r["snn"][t] for r in group]) for t in losses]
        lines.append(
            f"{label:<40} {epochs:>2} {len(group):>5} {spread([r['ann'] for r in group]):>12} "
            + " ".join(f"{s:>12}" for s in snn)
            + " |         "
            + " ".join(f"{s:>12}" for s in loss)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the comparison (flags: ``--help``) and returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=None, help="the data folder (CIFAR-10 (JPEG) for the recipe)")
    parser.add_argument("--epochs", default="1", help="comma-separated epoch counts (a schedule each)")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds; the spread is over these")
    parser.add_argument("--sides", default="snnjax,reference")
    parser.add_argument(
        "--set", default="", help="snnjax overrides FIELD=VALUE,... (e.g. qcfs_order=floor_clip)"
    )
    parser.add_argument("--name", default="cpu", help="results/same_recipe_<name>.json")
    parser.add_argument("--results_dir", default=RESULTS)
    parser.add_argument("--workdir_root", default="runs/same_recipe")
    parser.add_argument("--reference", default="benchmarks/reference/SNN_conversion_QCFS")
    parser.add_argument("--reference_tools", default="../shared/reference", help="ref_train_qcfs.py's folder")
    parser.add_argument("--test_examples", type=int, default=2000, help="uniform draw, seed 0 (both sides)")
    parser.add_argument("--snn_num_steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads of the reference side")
    parser.add_argument("--base_config", default="snnjax.configs.cifar10jpeg_resnet20_qcfs")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    sides = [s for s in args.sides.split(",") if s]
    overrides = parse_overrides([s for s in args.set.split(",") if s])
    missing = reference_missing(args) if "reference" in sides else []
    if missing:
        print("The reference side does not run (snnjax's side does); missing: " + "; ".join(missing))
    rows = []
    for epochs in (int(e) for e in args.epochs.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            if "snnjax" in sides:
                rows.append(snnjax_row(args, epochs, seed, overrides))
            if "reference" in sides and not missing:
                rows.append(reference_row(args, epochs, seed))
            print(table(rows, args.snn_num_steps), flush=True)
    write_rows(rows, args.results_dir, f"same_recipe_{args.name}")
    return rows


if __name__ == "__main__":
    main()
