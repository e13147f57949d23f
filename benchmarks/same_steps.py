r"""snnjax's training steps against the QCFS reference code's, from the same weights on the same batches.

The reference's own ResNet-20 (``Models/ResNet.py``), ``MyFloor`` (``replace_activation_by_floor``),
optimizer groups (``regular_set``) and ``SGD(lr, momentum 0.9, weight decay)`` take K steps on K batches
of CIFAR-10 (JPEG) pixels (no augmentation); snnjax's ResNet-20 (QCFS ``floor_clip``, the unbiased
running variance PyTorch keeps) starts from the reference's initial weights, rounded to float32 on both
sides, and takes the same steps with `snnjax.experiment.training.train_step`. After each step the
command prints both losses and the largest difference of the two codes' parameter updates (relative to
the update's largest value, per variable), in float64 and in float32, and, as a control, the same for
the reference against itself on one PyTorch thread instead of two (float32)::

    python -m benchmarks.same_steps --data_dir=../shared/data/cifar10-jpeg --steps=40 --name=cpu

In float64 the two follow one trajectory (a difference at float32's resolution: the reference's
variables pass through the float32 importer to be compared). In float32 the codes sum in different
orders; a unit whose pre-activation lands on the other side of a QCFS level boundary moves the λ
gradient, and within a few steps the runs are as far apart as two seeds. The reference does the same
to itself when PyTorch's thread count changes its summation order. Same-recipe comparisons of the two
codes (``benchmarks.same_recipe``) are therefore comparisons of seed distributions.

Needs PyTorch and the reference checkout (``bash benchmarks/get_reference.sh``); says what is missing
otherwise. Writes ``benchmarks/results/same_steps_<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import RESULTS, same_recipe, write_rows
from snnjax.configs import cifar10jpeg_resnet20_qcfs
from snnjax.experiment import methods, training
from snnjax.io import data as data_lib, import_torch_state_dict

PAIRS = ("snnjax", "reference_1_thread")
_, MEAN, STD = (np.asarray(v) for v in data_lib.NORMALIZATION["cifar10"])  # the reference's constants


def missing(args: argparse.Namespace) -> list[str]:
    """What keeps the comparison from running (empty when it can)."""
    lacking = same_recipe.torch_or_checkout_missing(args.reference)
    if not os.path.isfile(os.path.join(args.pixels, "train_y.npy")):
        script = os.path.join(args.reference_tools, "cache_cifar10jpeg.py")
        if not (args.data_dir and os.path.isfile(script)):
            lacking.append(
                f"decoded pixels in --pixels={args.pixels}, or --data_dir and {script} to make them"
            )
    return lacking


def reference_code(directory: str):
    """The reference's ``resnet20`` and ``utils`` module, imported from its checkout.

    Its top-level ``Models``, ``utils`` and ``modules`` are names the other QCFS checkout
    (``benchmarks.vs_reference``) uses too: earlier imports are dropped so that these are the ones read.
    """
    for name in [n for n in sys.modules if n.split(".")[0] in ("Models", "utils", "modules")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(directory))
    try:
        return importlib.import_module("Models.ResNet").resnet20, importlib.import_module("utils")
    finally:
        sys.path.remove(os.path.abspath(directory))


def update_differences(reference: dict, other: dict) -> tuple[float, str]:
    """The largest ``max|Δ_other − Δ_ref| / max|Δ_ref|`` over variables, and that variable's path."""
    worst = (0.0, "")
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(other),
        jax.tree_util.tree_leaves_with_path(reference),
        strict=True,
    ):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(
            worst, (float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)), jax.tree_util.keystr(path))
        )
    return worst


class ReferenceTrainer:
    """The reference's ResNet-20 and SGD from ``start`` (float32 weights), in ``dtype`` on ``threads``.

    ``code`` is `reference_code`'s ``(resnet20, utils)``.
    """

    def __init__(self, args: argparse.Namespace, code, start: dict, dtype: str, threads: int):
        import torch

        self.torch, self.threads = torch, threads
        resnet20, utils = code
        model = utils.replace_activation_by_floor(resnet20(num_classes=10), t=args.levels)
        model.load_state_dict(start)
        self.model = model.double() if dtype == "float64" else model
        groups = utils.regular_set(self.model)  # λ, conv/linear, BN: weight decay on all three
        self.optimizer = torch.optim.SGD(
            [{"params": p, "weight_decay": args.weight_decay} for p in groups], lr=args.lr, momentum=0.9
        )
        self.before = {k: v.detach().double().clone() for k, v in self.model.state_dict().items()}

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        """One SGD step on ``images [B, H, W, C]``; returns the loss before it."""
        torch = self.torch
        torch.set_num_threads(self.threads)  # PyTorch's summation order depends on it
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def update(self) -> dict:
        """What the steps so far changed, in snnjax's layout (float64 differences, imported as float32)."""
        change = {
            k: (v.detach().double() - self.before[k]).numpy() for k, v in self.model.state_dict().items()
        }
        return import_torch_state_dict(change, "resnet20", 10, "qcfs_original")[0]


class SnnjaxTrainer:
    """snnjax's ResNet-20 (QCFS ``floor_clip``, unbiased running variance) from ``start``, in ``dtype``."""

    def __init__(self, args: argparse.Namespace, start: dict, dtype: str):
        self.x64 = dtype == "float64"
        config = cifar10jpeg_resnet20_qcfs.get_config()
        config.qcfs_order, config.levels, config.bn_running_var = "floor_clip", args.levels, "unbiased"
        imported, _ = import_torch_state_dict(
            {k: v.numpy() for k, v in start.items()}, "resnet20", 10, "qcfs_original"
        )
        with jax.enable_x64(self.x64):
            self.initial = jax.tree.map(lambda a: jnp.asarray(a, jnp.dtype(dtype)), imported)
            self.state = training.TrainState.create(
                apply_fn=methods.build_ann(config, 10).apply,
                params=self.initial["params"],
                batch_stats=self.initial["batch_stats"],
                tx=training.sgd_coupled_weight_decay(args.lr, 0.9, args.weight_decay),
            )
            self.train_step = jax.jit(training.train_step)

    def step(self, images: np.ndarray, labels: np.ndarray) -> float:
        """One `snnjax.experiment.training.train_step`; returns the loss before it."""
        with jax.enable_x64(self.x64):
            self.state, metrics = self.train_step(self.state, jnp.asarray(images), jnp.asarray(labels))
            return float(metrics["loss"])

    def update(self) -> dict:
        """What the steps so far changed (float64 differences)."""
        now = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        return jax.tree.map(
            lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), now, self.initial
        )


def run(args: argparse.Namespace, pair: str, dtype: str) -> list[dict]:
    """``args.steps`` steps of the reference (``args.threads``) and of ``pair``; one row per step.

    ``pair``: ``"snnjax"``, or ``"reference_1_thread"`` (the reference against itself on one thread).
    """
    import torch

    code = reference_code(args.reference)
    resnet20, utils = code
    torch.manual_seed(args.seed)
    model = utils.replace_activation_by_floor(resnet20(num_classes=10), t=args.levels)
    # Both sides start from the float32 weights (the importer's dtype), copied: torch updates in place.
    start = {
        k: v.float().clone() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()
    }
    reference = ReferenceTrainer(args, code, start, dtype, args.threads)
    if pair == "snnjax":
        other = SnnjaxTrainer(args, start, dtype)
    else:
        other = ReferenceTrainer(args, code, start, dtype, 1)
    x_train = np.load(os.path.join(args.pixels, "train_x.npy"), mmap_mode="r")
    y_train = np.load(os.path.join(args.pixels, "train_y.npy"))
    order = np.random.default_rng(args.seed).permutation(len(y_train))
    rows = []
    for k in range(args.steps):
        index = np.sort(order[k * args.batch : (k + 1) * args.batch])
        images = ((x_train[index] / 255.0 - MEAN) / STD).astype(dtype)
        labels = y_train[index].astype(np.int64)
        losses = reference.step(images, labels), other.step(images, labels)
        difference, where = update_differences(reference.update(), other.update())
        rows.append({
            "pair": pair, "dtype": dtype, "step": k + 1, "loss_reference": losses[0], "loss_other": losses[1],
            "max_relative_update_difference": difference, "where": where,
        })  # fmt: skip
        print(
            f"{pair:>18} {dtype:>8} {k + 1:>4} {losses[0]:>14.10f} {losses[1]:>14.10f} {difference:>10.2e}  "
            f"{where}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs each of ``--runs``; returns the rows (empty when something is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--runs",
        default="snnjax:float64,snnjax:float32,reference_1_thread:float32",
        help="PAIR:DTYPE,...: what the reference is stepped beside (snnjax, or itself on 1 thread)",
    )
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads of the reference")
    parser.add_argument(
        "--seed", type=int, default=0, help="the reference's torch.manual_seed and batch order"
    )
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=5e-4)
    parser.add_argument("--pixels", default="runs/same_recipe/pixels", help="cache_cifar10jpeg.py's output")
    parser.add_argument("--data_dir", default="", help="CIFAR-10 (JPEG) folder, to make --pixels")
    parser.add_argument("--reference", default="benchmarks/reference/SNN_conversion_QCFS")
    parser.add_argument(
        "--reference_tools", default="../shared/reference", help="cache_cifar10jpeg.py's folder"
    )
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    runs = [run_spec.split(":") for run_spec in args.runs.split(",") if run_spec]
    for run_spec in runs:
        if len(run_spec) != 2 or run_spec[0] not in PAIRS or run_spec[1] not in ("float32", "float64"):
            parser.error(
                f"--runs: {':'.join(run_spec)!r} is not PAIR:DTYPE "
                f"(PAIR one of {', '.join(PAIRS)}; DTYPE float32 or float64)"
            )
    lacking = missing(args)
    if lacking:
        print("The comparison does not run; missing: " + "; ".join(lacking))
        return []
    if not os.path.isfile(os.path.join(args.pixels, "train_y.npy")):
        script = os.path.join(args.reference_tools, "cache_cifar10jpeg.py")
        subprocess.run([sys.executable, script, args.data_dir, args.pixels], check=True)
    start = time.perf_counter()
    header = f"{'beside':>18} {'dtype':>8} {'step':>4} {'loss ref':>14} {'loss other':>14} {'max Δupd':>10}"
    print(header + "  variable")
    rows = [row for pair, dtype in runs for row in run(args, pair, dtype)]
    print(f"{time.perf_counter() - start:.0f} s")
    write_rows(rows, args.results_dir, f"same_steps_{args.name}")
    return rows


if __name__ == "__main__":
    main()
