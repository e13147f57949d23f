"""snnjax side by side with the PyTorch QCFS reference on this machine: SNN evaluation and training.

    bash benchmarks/get_reference.sh     # once: the two reference checkouts into benchmarks/reference/
    python -m benchmarks.vs_reference    # VGG-16 (batch 16) and ResNet-20 (batch 64), T = 32, float32

**The reference side** runs the reference repositories' own code, imported from their checkouts
(nothing of it is copied into snnjax):

* the network: ``Models.modelpool(arch, "cifar10")`` of ``putshua/ANN_SNN_QCFS`` (the QCFS code that
  has ResNet-20; its VGG-16 is the same network as the original repository's), with its own
  initialization, BatchNorm running statistics drawn at random and each threshold set to the 99.9th
  percentile of its layer's input on the benchmark batch (so layers fire at realistic rates);
* ``step loop``: the SNN evaluation loop of ``putshua/SNN_conversion_QCFS`` (``funcs.eval_snn``): every
  activation replaced by its ``modules.ScaledNeuron`` (spikingjelly's IF node, v(0) = θ/2, reset by
  subtraction), the model called T times on the image, the outputs summed, ``utils.reset_net``;
* ``layer loop``: ANN_SNN_QCFS's own SNN mode (``model.set_T(T)``, its ``IF`` layers loop over T
  inside each layer on the time-batched input, ``model(x).mean(0)`` as in its ``utils.val``);
* ``relu loop``: the same network with every ``IF`` layer replaced by ``torch.nn.ReLU``, called T
  times: the reference's own dense-arithmetic limit at T (what its SNN loop would cost with no IF);
* ``train step``: ANN_SNN_QCFS's training step (QCFS activation with L = 4, ``SGD(lr=0.1,
  momentum=0.9, weight_decay=5e-4)``, cross-entropy, batch 128) on a fixed batch;
* ``augmentation``: its CIFAR-10 training transform on a batch of PIL images — its own
  ``Preprocess/augment.py`` (``CIFAR10Policy``, ``Cutout(1, 16)``) between torchvision's
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip`` and ``ToTensor``/``Normalize``. Where
  torchvision does not import (its CPU wheel for this torch may be missing) the four torchvision steps
  are replaced by a plain array conversion, in the reference's favour (said in the output). Its
  DataLoader workers share the machine's cores with the training step, so the reference's training
  with augmentation is counted as step + augmentation time per batch, as snnjax's on-device
  augmentation is.

Its ``Models/layer.py`` imports ``cv2`` and ``sympy`` without using them; where they are not installed
a placeholder module stands in. Its ``augment.py`` uses ``np.int``, which NumPy removed in 1.24; where it
is missing, ``np.int = int`` stands in (both said in the output).

**The snnjax side** is the same network, imported with `snnjax.import_torch_state_dict`, run as
`snnjax.spiking_apply` in layer and step mode (the faster counts), timed like
`benchmarks.snn_throughput` (compile, warm-up, median), next to its ReLU limit (the same network
with a ReLU, the cheaper of one ``[T·B]`` batch and T calls on ``[B]``) and XLA's peak scratch memory.
Before timing, both sides' T-averaged logits are compared on the benchmark batch (top-1 agreement
and the largest difference; spikes can differ where the two libraries' convolutions round a membrane
potential to either side of the threshold). Training runs snnjax's jitted train step with the
reference augmentation on device (crop, flip, AutoAugment, Cutout) and without; ``ratio`` compares the
two sides with augmentation, ``compute_ratio`` without.

Without PyTorch or the checkouts the snnjax side still runs and the output says what is missing.
Writes ``benchmarks/results/<name>.json`` (rows below) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import platform
import sys
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import snnjax
from benchmarks import RESULTS, write_rows
from benchmarks.snn_throughput import RELU, timed, with_unit_thresholds, without_thresholds
from benchmarks.train_throughput import seconds_per_step
from snnjax import conversion
from snnjax.configs import default as default_config
from snnjax.core import activations
from snnjax.experiment import training
from snnjax.io import augment

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE_DIRS = {
    "ANN_SNN_QCFS": os.environ.get("QCFS_ANN_SNN_DIR", os.path.join(HERE, "reference", "ANN_SNN_QCFS")),
    "SNN_conversion_QCFS": os.environ.get(
        "QCFS_SNN_CONVERSION_DIR", os.path.join(HERE, "reference", "SNN_conversion_QCFS")
    ),
}
# Files each checkout must have (what this benchmark imports from it).
REFERENCE_FILES = {
    "ANN_SNN_QCFS": [
        "Models/__init__.py",
        "Models/layer.py",
        "Models/ResNet.py",
        "Models/VGG.py",
        "Preprocess/augment.py",
    ],  # fmt: skip
    "SNN_conversion_QCFS": ["modules.py", "utils.py", "spikingjelly/clock_driven/neuron.py"],
}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
LEVELS = 4


def missing_reference(dirs: dict[str, str]) -> list[str]:
    """What keeps the reference side from running: one sentence per missing piece (empty: none)."""
    problems = []
    if importlib.util.find_spec("torch") is None:
        problems.append("PyTorch is not installed: `pip install torch==2.13.0` (the CPU wheel).")
    for repo, files in REFERENCE_FILES.items():
        directory = dirs[repo]
        absent = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if absent:
            problems.append(
                f"no {repo} checkout at {directory} (missing {', '.join(absent)}): run "
                f"`bash benchmarks/get_reference.sh` or pass --{repo.lower()}=DIR."
            )
    return problems


class Reference:
    """The reference repositories' modules, imported from their checkouts (see the module docstring)."""

    def __init__(self, dirs: dict[str, str]):
        import torch

        self.torch = torch
        self.placeholders = []
        for name, attribute in (("cv2", "mean"), ("sympy", "print_rcode")):
            if importlib.util.find_spec(name) is None:  # imported by Models/layer.py, never used
                sys.modules[name] = types.SimpleNamespace(**{attribute: None})
                self.placeholders.append(name)
        # Both checkouts have top-level `Models` and `utils`: import one at a time, then restore sys.path.
        self.models = self._import(dirs["ANN_SNN_QCFS"], "Models")
        self.layer = sys.modules["Models.layer"]
        sys.modules.pop("utils", None)  # a `utils` imported earlier must not stand in for the reference's
        self.modules = self._import(dirs["SNN_conversion_QCFS"], "modules")
        self.utils = self._import(dirs["SNN_conversion_QCFS"], "utils")
        if not hasattr(np, "int"):  # augment.py's np.int, removed in NumPy 1.24
            np.int = int
            self.placeholders.append("numpy.int")
        # Loaded by file: its package __init__ imports the data loaders (torchvision datasets).
        spec = importlib.util.spec_from_file_location(
            "qcfs_reference_augment", os.path.join(dirs["ANN_SNN_QCFS"], "Preprocess", "augment.py")
        )
        self.augment = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.augment)
        try:
            from torchvision import transforms

            self.transforms, self.torchvision_problem = transforms, None
        except Exception as error:  # noqa: BLE001 — any import failure means "not available"
            self.transforms, self.torchvision_problem = None, f"{type(error).__name__}: {error}"

    @staticmethod
    def _import(directory: str, name: str):
        sys.path.insert(0, directory)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(directory)

    def network(self, arch: str, images: np.ndarray, seed: int = 0):
        """The reference QCFS network in eval mode, with random BN statistics and calibrated thresholds.

        Args:
          arch: ``vgg16`` or ``resnet20``.
          images: ``[B, H, W, C]`` float32 (NHWC, converted to the reference's NCHW).
          seed: torch seed of the initialization.
        """
        torch = self.torch
        torch.manual_seed(seed)
        model = self.models.modelpool(arch, "cifar10")
        with contextlib.redirect_stdout(io.StringIO()):  # its set_T/set_L print every threshold
            model.set_T(0)
            model.set_L(LEVELS)
        generator = torch.Generator().manual_seed(seed + 1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.data.copy_(1.0 + 0.1 * torch.randn(n, generator=generator))
                module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
        model.eval()

        def calibrate(module, inputs):  # θ from this layer's input, before it runs (later layers see it)
            module.thresh.data.fill_(max(float(torch.quantile(inputs[0].flatten()[:1_000_000], 0.999)), 1e-3))

        neurons = [m for m in model.modules() if isinstance(m, self.layer.IF)]
        hooks = [m.register_forward_pre_hook(calibrate) for m in neurons]
        with torch.no_grad():
            model(torch.from_numpy(nchw(images)))
        for hook in hooks:
            hook.remove()
        return model

    def state_dict(self, model) -> dict[str, np.ndarray]:
        """``model``'s state_dict as NumPy arrays (what `snnjax.import_torch_state_dict` reads)."""
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

    def step_loop(self, model, images: np.ndarray, num_steps: int):
        """``eval_snn``'s loop as a callable returning the T-averaged logits ``[B, classes]``."""
        return self._called_t_times(self._with_scaled_neurons(model), images, num_steps)

    def _called_t_times(self, network, images: np.ndarray, num_steps: int):
        """``network`` called T times on the images, outputs averaged, its neurons reset after."""
        torch = self.torch
        x = torch.from_numpy(nchw(images))

        def run():
            with torch.no_grad():
                total = 0
                for _ in range(num_steps):
                    total = total + network(x)
                self.utils.reset_net(network)
            return total / num_steps

        return run

    def layer_loop(self, model, images: np.ndarray, num_steps: int):
        """ANN_SNN_QCFS's own SNN mode (``set_T(T)``; ``model(x).mean(0)``), as `step_loop`."""
        torch = self.torch
        import copy

        snn = copy.deepcopy(model)
        with contextlib.redirect_stdout(io.StringIO()):
            snn.set_T(num_steps)
        x = torch.from_numpy(nchw(images))

        def run():
            with torch.no_grad():
                return snn(x.clone()).mean(0)  # clone: its add_dimention unsqueezes its input in place

        return run

    def relu_loop(self, model, images: np.ndarray, num_steps: int):
        """The network with ReLUs for its ``IF`` layers, called T times: the reference's dense limit."""
        dense = self._with_neurons(model, lambda child: self.torch.nn.ReLU())
        return self._called_t_times(dense, images, num_steps)

    def _with_scaled_neurons(self, model):
        scaled = self.modules.ScaledNeuron
        return self._with_neurons(model, lambda child: scaled(scale=float(child.thresh.item())))

    def _with_neurons(self, model, make):
        """A copy of ``model`` (eval mode) with every ``IF`` layer replaced by ``make(that layer)``."""
        import copy

        snn = copy.deepcopy(model)

        def swap(parent):
            for name, child in parent.named_children():
                if isinstance(child, self.layer.IF):
                    setattr(parent, name, make(child))
                else:
                    swap(child)

        swap(snn)
        return snn.eval()

    def augmentation(self, images: np.ndarray):
        """A callable applying the reference's CIFAR-10 training transform to every image of the batch.

        Args:
          images: ``[B, H, W, 3]`` uint8 pixels (made into PIL images once, as a dataset holds them).
        """
        from PIL import Image

        torch, augment = self.torch, self.augment
        pil_images = [Image.fromarray(image) for image in images]
        if self.transforms is not None:
            t = self.transforms
            transform = t.Compose([
                t.RandomCrop(32, padding=4), t.RandomHorizontalFlip(), augment.CIFAR10Policy(), t.ToTensor(),
                t.Normalize(CIFAR10_MEAN, CIFAR10_STD), augment.Cutout(n_holes=1, length=16),
            ])  # fmt: skip
        else:
            policy, cutout = augment.CIFAR10Policy(), augment.Cutout(n_holes=1, length=16)
            mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)

            def transform(image):
                pixels = torch.from_numpy(np.asarray(policy(image), np.float32).transpose(2, 0, 1) / 255.0)
                return cutout((pixels - mean) / std)

        def run():
            return torch.stack([transform(image) for image in pil_images]).shape

        return run

    def train_step(self, arch: str, images: np.ndarray, labels: np.ndarray):
        """A callable running one reference training step on the fixed batch."""
        torch = self.torch
        torch.manual_seed(0)
        model = self.models.modelpool(arch, "cifar10")
        with contextlib.redirect_stdout(io.StringIO()):
            model.set_T(0)
            model.set_L(LEVELS)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = torch.from_numpy(nchw(images)), torch.from_numpy(labels.astype(np.int64))

        def run():
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.item()

        return run


def nchw(images: np.ndarray) -> np.ndarray:
    """``[B, H, W, C]`` → the reference's ``[B, C, H, W]``."""
    return np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))


def qcfs_model(arch: str):
    """The snnjax model ``arch`` with QCFS activations (L = 4), 10 classes."""
    activation = functools.partial(
        snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=LEVELS)
    )
    return snnjax.create_model(arch, 10, activation)


def evaluation_row(arch: str, batch: int, num_steps: int, repeats: int, reference: Reference | None) -> dict:
    """One side-by-side SNN evaluation row (see the module docstring)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    ann = qcfs_model(arch)
    row: dict[str, Any] = {"kind": "snn_eval", "model": arch, "batch": batch, "T": num_steps}
    row["dtype"] = "float32"
    if reference is not None:
        torch_model = reference.network(arch, images)
        state_dict = reference.state_dict(torch_model)
        variables, _ = snnjax.import_torch_state_dict(state_dict, arch, 10, "qcfs_revised")
    else:
        variables = with_unit_thresholds(ann.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    snn_variables = conversion.convert_variables(variables)
    x = jnp.asarray(images)
    ours = {}
    for mode in ("layer", "step"):
        snn = conversion.spiking_model(ann, mode=mode)
        apply = functools.partial(conversion.spiking_apply, snn, num_steps=num_steps)
        seconds, compile_seconds, temp = timed(apply, snn_variables, x, repeats=repeats)
        ours[mode] = {"seconds": seconds, "temp_bytes": temp, "compile_seconds": compile_seconds}
        row[f"snnjax_{mode}_images_per_second"] = batch / seconds
        row[f"snnjax_{mode}_temp_bytes"] = temp
    best = min(ours, key=lambda m: ours[m]["seconds"])
    row["snnjax_mode"], row["snnjax_seconds"] = best, ours[best]["seconds"]
    row["snnjax_images_per_second"] = batch / ours[best]["seconds"]
    row["snnjax_temp_bytes"] = ours[best]["temp_bytes"]
    # The ReLU limit: the same network's dense arithmetic, the cheaper of one [T·B] batch and T × [B].
    limit_model = snnjax.create_model(arch, 10, RELU)
    limit_variables = without_thresholds(variables)
    stacked = jnp.broadcast_to(x, (num_steps, *x.shape)).reshape(-1, *x.shape[1:])
    folded, _, _ = timed(lambda v, s: limit_model.apply(v, s), limit_variables, stacked, repeats=repeats)
    per_step, _, _ = timed(lambda v, s: limit_model.apply(v, s), limit_variables, x, repeats=repeats)
    row["limit_seconds"] = min(folded, num_steps * per_step)
    row["overhead"] = row["snnjax_seconds"] / row["limit_seconds"] - 1.0
    outputs = conversion.spiking_apply(conversion.spiking_model(ann, mode=best), snn_variables, x, num_steps)
    mean_logits = np.asarray(jnp.mean(outputs, axis=0))
    if reference is None:
        return row
    for loop in ("step_loop", "layer_loop"):
        run = getattr(reference, loop)(torch_model, images, num_steps)
        theirs = run().numpy()  # also the warm-up call
        row[f"reference_{loop}_top1_agreement"] = float(np.mean(theirs.argmax(-1) == mean_logits.argmax(-1)))
        row[f"reference_{loop}_max_abs_logit_difference"] = float(np.max(np.abs(theirs - mean_logits)))
        row[f"reference_{loop}_images_per_second"] = batch / seconds_per_step(run, 1, repeats)
    dense = reference.relu_loop(torch_model, images, num_steps)
    dense()
    row["reference_relu_limit_images_per_second"] = batch / seconds_per_step(dense, 1, repeats)
    faster = max(("step_loop", "layer_loop"), key=lambda loop: row[f"reference_{loop}_images_per_second"])
    row["reference_loop"] = faster
    row["reference_images_per_second"] = row[f"reference_{faster}_images_per_second"]
    row["ratio"] = row["snnjax_images_per_second"] / row["reference_images_per_second"]
    return row


def training_row(arch: str, batch: int, steps: int, repeats: int, reference: Reference | None) -> dict:
    """Training images/s of snnjax (with and without on-device augmentation) and of the reference."""
    rng = np.random.default_rng(1)
    images = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    row: dict[str, Any] = {"kind": "train", "model": arch, "batch": batch}
    config = default_config.get_config()
    config.augment = "crop,flip,autoaugment,cutout"  # the reference CIFAR-10 recipe, in its order
    x, y = jnp.asarray(images), jnp.asarray(labels)
    for name, augmentation in (
        ("snnjax_augmented", augment.from_config(config, CIFAR10_MEAN, CIFAR10_STD)),
        ("snnjax", None),
    ):
        state = training.create_train_state(
            qcfs_model(arch), jax.random.key(0), (32, 32, 3), training.sgd_coupled_weight_decay(0.1)
        )
        step = training.make_train_step(augmentation)
        state, metrics = step(state, x, y)  # compile
        jax.block_until_ready(metrics)

        def one_step(step=step):
            nonlocal state
            state, metrics = step(state, x, y)
            return metrics

        row[f"{name}_images_per_second"] = batch / seconds_per_step(one_step, steps, repeats)
    if reference is not None:
        run = reference.train_step(arch, images, labels)
        run()
        step_seconds = seconds_per_step(run, steps, repeats)
        pixels = np.clip(np.floor((images * CIFAR10_STD + np.asarray(CIFAR10_MEAN)) * 255 + 0.5), 0, 255)
        transform = reference.augmentation(pixels.astype(np.uint8))
        transform()
        augment_seconds = seconds_per_step(transform, steps, repeats)
        row["reference_images_per_second"] = batch / step_seconds
        row["reference_augmentation_seconds"] = augment_seconds
        row["reference_augmentation_torchvision"] = reference.torchvision_problem or "yes"
        row["reference_augmented_images_per_second"] = batch / (step_seconds + augment_seconds)
        augmented = row["reference_augmented_images_per_second"]
        row["ratio"] = row["snnjax_augmented_images_per_second"] / augmented
        row["compute_ratio"] = row["snnjax_images_per_second"] / row["reference_images_per_second"]
    return row


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_tables(rows: list[dict]) -> None:
    """The side-by-side tables: SNN evaluation rows, then training rows."""
    print(f"\n{'SNN evaluation':<16} {'B':>3} {'T':>3} {'snnjax img/s':>13} {'mode':>5} {'ref img/s':>10} "
          f"{'ref loop':>10} {'ratio':>6} {'overhead':>8} {'temp MB':>8} {'agree':>6} "
          f"{'ref ReLU img/s':>15}")  # fmt: skip
    for r in (r for r in rows if r["kind"] == "snn_eval"):
        print(
            f"{r['model']:<16} {r['batch']:>3} {r['T']:>3} {r['snnjax_images_per_second']:13.2f} "
            f"{r['snnjax_mode']:>5} {_fmt(r.get('reference_images_per_second'), '10.2f')} "
            f"{r.get('reference_loop', 'n/a'):>10} {_fmt(r.get('ratio'), '5.2f')}× "
            f"{100 * r['overhead']:7.1f}% "
            f"{r['snnjax_temp_bytes'] / 2**20:8.1f} "
            f"{_fmt(r.get('reference_' + r.get('reference_loop', '') + '_top1_agreement'), '6.3f')} "
            f"{_fmt(r.get('reference_relu_limit_images_per_second'), '15.2f')}"
        )
    print(f"\n{'training':<16} {'B':>3} {'snnjax img/s (aug / none)':>26} {'ref img/s (aug / none)':>23} "
          f"{'ratio (aug / none)':>19}")  # fmt: skip
    for r in (r for r in rows if r["kind"] == "train"):
        print(
            f"{r['model']:<16} {r['batch']:>3} {r['snnjax_augmented_images_per_second']:12.1f} / "
            f"{r['snnjax_images_per_second']:11.1f} "
            f"{_fmt(r.get('reference_augmented_images_per_second'), '10.1f')} / "
            f"{_fmt(r.get('reference_images_per_second'), '10.1f')} "
            f"{_fmt(r.get('ratio'), '8.2f')}× / {_fmt(r.get('compute_ratio'), '5.2f')}×"
        )
    torchvision = {r.get("reference_augmentation_torchvision") for r in rows} - {None, "yes"}
    for problem in torchvision:
        print(f"torchvision did not import ({problem}): the reference's crop/flip/normalize steps left out")


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the side-by-side benchmark (flags: ``--help``) and returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval", default="vgg16:16,resnet20:64", help="model:batch pairs to evaluate")
    parser.add_argument("--train", default="resnet20,vgg16", help="models to train ('' for none)")
    parser.add_argument("--steps", type=int, default=32, help="T")
    parser.add_argument("--train_batch", type=int, default=128)
    parser.add_argument("--train_steps", type=int, default=3, help="steps per timed training window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=f"vs_reference_{jax.default_backend()}")
    parser.add_argument("--results_dir", default=RESULTS, help="where <name>.json goes")
    for repo, directory in REFERENCE_DIRS.items():
        parser.add_argument(f"--{repo.lower()}", default=directory, help=f"{repo} checkout")
    args = parser.parse_args(argv)
    dirs = {repo: getattr(args, repo.lower()) for repo in REFERENCE_DIRS}
    problems = missing_reference(dirs)
    reference = None
    if problems:
        print("The reference side does not run (snnjax's side does):", *problems, sep="\n  ")
    else:
        reference = Reference(dirs)
        if reference.placeholders:
            stand_ins = ", ".join(reference.placeholders)
            print(f"placeholder modules for the reference's unused imports: {stand_ins}")
    rows = []
    for item in filter(None, args.eval.split(",")):
        arch, batch = item.split(":")
        rows.append(evaluation_row(arch, int(batch), args.steps, args.repeats, reference))
        print(json.dumps(rows[-1]), flush=True)
    for arch in filter(None, args.train.split(",")):
        rows.append(training_row(arch, args.train_batch, args.train_steps, args.repeats, reference))
        print(json.dumps(rows[-1]), flush=True)
    machine = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
               "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "jax": jax.__version__, "reference_missing": problems}  # fmt: skip
    if reference is not None:
        machine["torch"] = reference.torch.__version__
        machine["torch_threads"] = reference.torch.get_num_threads()
    for row in rows:
        row.update(machine)
    print_tables(rows)
    write_rows(rows, args.results_dir, args.name)
    return rows


if __name__ == "__main__":
    main()
