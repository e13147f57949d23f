r"""A trained SNN through a real NIR reader: snnjax's simulation against sinabs on a whole test set.

Trains (or resumes) a config's ANN with QCFS shift φ = 0, converts it, and runs the test set three
ways: snnjax's IF neuron (v(0) = φθ = 0, one spike per step), snnjax's ``multi_spike_if`` neuron
(sinabs's semantics, v(0) = 0), and sinabs 3.1.3 running the graph ``export_nir(target="sinabs")`` wrote.
Prints the accuracy at each t of the three, the largest per-step logit difference between sinabs and
snnjax's ``multi_spike_if`` and how many predictions differ; writes
``benchmarks/results/nir_readers_<name>.json``::

    python -m benchmarks.nir_readers --config=configs/quickstart.py --workdir=runs/nir_quickstart
    python -m benchmarks.nir_readers --config=configs/mnist_cnn_qcfs.py --workdir=runs/nir_mnist \
        --set=data_dir=../shared/data/mnist --name=mnist

``--forms=float,hardware`` (the default runs both) adds the same pair on the integer hardware form
(`snnjax.conversion.hardware`: ``--weight_bits`` weights per layer, images on the grid
``2^−input_bits``), where every sum is exact in float32: there the two simulations must agree at every
step, not only up to spikes flipped by float rounding at a threshold.

Needs the sinabs extra (``pip install 'snnjax[sinabs]'`` beside the CPU PyTorch wheel); without it
the two snnjax columns are still measured and the command says what is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import snnjax
from benchmarks import RESULTS, write_rows
from benchmarks.same_recipe import parse_overrides
from snnjax import conversion, io as interop
from snnjax.conversion import hardware
from snnjax.experiment import methods, training
from snnjax.io import data as data_lib

STEPS = (1, 2, 4, 8, 16, 32)
FORMS = ("float", "hardware")


def cumulative_accuracy(per_step: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-1 accuracy at every t of the mean of ``per_step [T, N, classes]`` over steps 1..t."""
    means = np.cumsum(per_step, axis=0) / np.arange(1, per_step.shape[0] + 1)[:, None, None]
    return np.mean(np.argmax(means, axis=-1) == labels[None], axis=1)


def run_sinabs(graph, images: np.ndarray, num_steps: int, batch: int) -> np.ndarray | None:
    """Per-step outputs ``[T, N, classes]`` of sinabs running ``graph``; None without sinabs."""
    if importlib.util.find_spec("sinabs") is None or importlib.util.find_spec("torch") is None:
        print("sinabs is not installed (pip install 'snnjax[sinabs]' beside the CPU PyTorch wheel): skipped.")
        return None
    import sinabs  # noqa: PLC0415 (optional)
    import torch  # noqa: PLC0415

    logging.getLogger().setLevel(logging.ERROR)
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        with warnings.catch_warnings():  # sinabs calls nirtorch.load, which nirtorch deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            model = sinabs.from_nir(graph, batch_size=len(chunk))
        x = torch.tensor(chunk.transpose(0, 3, 1, 2))
        x = x[:, None].repeat(1, num_steps, *(1,) * (x.ndim - 1)).reshape(-1, *x.shape[1:])
        with torch.no_grad():
            y = model(x)
        y = y[0] if isinstance(y, tuple) else y
        outputs.append(y.reshape(len(chunk), num_steps, -1).transpose(0, 1).numpy())
    return np.concatenate(outputs, axis=1)


def compare(theirs: np.ndarray, ours: np.ndarray, form: str) -> dict:
    """How two per-step outputs ``[T, N, classes]`` differ.

    Returns:
      The largest |Δ|, the images and image-steps whose logits moved by more than rounding (1e-5), and
      how many predictions of the running sums differ over all t.
    """
    diff = np.abs(theirs - ours)
    touched = np.any(diff > 1e-5, axis=-1)  # [T, N]
    differing = np.argmax(np.cumsum(theirs, 0), -1) != np.argmax(np.cumsum(ours, 0), -1)
    return {
        "form": form,
        "max_abs_logit_difference": float(diff.max()),
        "images_with_a_difference": int(np.sum(np.any(touched, axis=0))),
        "steps_with_a_difference": int(np.sum(touched)),
        "differing_predictions_all_t": int(np.sum(differing)),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the comparison (see the module docstring); returns the rows written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--workdir", default="runs/nir_quickstart")
    parser.add_argument("--set", action="append", default=[], help="config overrides field=value")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--name", default="quickstart")
    parser.add_argument("--forms", default="float,hardware", help=f"comma-separated of {', '.join(FORMS)}")
    parser.add_argument("--weight_bits", type=int, default=8, help="the hardware form's weight bits")
    parser.add_argument("--input_bits", type=int, default=8, help="the hardware form's input grid 2^-bits")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("benchmark_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.qcfs_shift = 0.0  # the QCFS shift that matches v(0) = 0
    for field, value in parse_overrides(args.set).items():
        setattr(config, field, value)
    start = time.perf_counter()
    state = training.train_and_evaluate(config, args.workdir)
    dataset = data_lib.load_dataset(config.dataset, config.data_dir, seed=config.seed)
    ann = methods.build_ann(config, dataset.num_classes)
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
    example = jnp.zeros((1, *dataset.image_shape))
    snn_variables = conversion.convert_variables(
        variables,
        threshold_parameterization=config.threshold_parameterization,
        fold_bn=True,
        model=ann,
        inputs=example,
    )
    images, labels = np.asarray(dataset.test_images), np.asarray(dataset.test_labels)
    forms = args.forms.split(",")
    if not forms or any(form not in FORMS for form in forms):
        raise SystemExit(f"--forms={args.forms!r}: a comma-separated list of {', '.join(FORMS)}.")

    def simulate(neuron, variables, inputs):
        snn, batch = snnjax.spiking_model(ann, neuron=neuron, v0=0.0, fold_bn=True), args.batch
        outputs = [
            np.asarray(snnjax.spiking_apply(snn, variables, jnp.asarray(inputs[i : i + batch]), args.steps))
            for i in range(0, len(inputs), batch)
        ]
        return np.concatenate(outputs, axis=1)

    ms_snn = snnjax.spiking_model(ann, neuron="multi_spike_if", v0=0.0, fold_bn=True)
    per_step, comparison, hardware_info = {}, {}, None
    for form in forms:
        if form == "float":
            variables_f, inputs, prefix = snn_variables, images, ""
            per_step["if"] = simulate("if", variables_f, inputs)
        else:
            variables_f, hardware_info = hardware.quantize_for_hardware(
                snn_variables, model=ann, inputs=example, weight_bits=args.weight_bits
            )
            inputs = np.asarray(hardware.quantize_input(jnp.asarray(images), args.input_bits))
            prefix = f"w{args.weight_bits}/x{args.input_bits} "
        per_step[prefix + "multi_spike_if"] = simulate("multi_spike_if", variables_f, inputs)
        graph = interop.export_nir(ms_snn, variables_f, dataset.image_shape, v0=0.0, target="sinabs")
        sinabs_out = run_sinabs(graph, inputs, args.steps, args.batch)
        if sinabs_out is not None:
            per_step[prefix + "sinabs"] = sinabs_out
            comparison[form] = compare(sinabs_out, per_step[prefix + "multi_spike_if"], form)
    ann_logits = ann.apply(variables, jnp.asarray(images), train=False)
    ann_accuracy = float(np.mean(np.argmax(np.asarray(ann_logits), -1) == labels))
    steps = [t for t in STEPS if t <= args.steps]
    print(
        f"{config.dataset} {config.model}, QCFS L={config.levels} φ=0, {len(images)} test images, "
        f"ANN {100 * ann_accuracy:.2f} %"
    )
    print(f"{'run':>22} " + " ".join(f"{'T=' + str(t):>7}" for t in steps))
    rows = []
    for run, outputs in per_step.items():
        accuracy = cumulative_accuracy(outputs, labels)
        print(f"{run:>22} " + " ".join(f"{100 * accuracy[t - 1]:7.2f}" for t in steps))
        rows.append({"run": run, "accuracy": {t: float(accuracy[t - 1]) for t in steps}})
    for form, numbers in comparison.items():
        print(
            f"{form}: sinabs vs multi_spike_if: max |Δ logit| per step "
            f"{numbers['max_abs_logit_difference']:.3g}; "
            f"{numbers['images_with_a_difference']} of {len(images)} images have a step whose logits "
            f"differ by > 1e-5 ({numbers['steps_with_a_difference']} image-steps"
            + (": spikes flipped by float rounding at the threshold" if form == "float" else "")
            + f"); {numbers['differing_predictions_all_t']} predictions differ over all t"
        )
    rows.append(
        {
            "config": args.config,
            "overrides": args.set,
            "dataset": config.dataset,
            "test_images": len(images),
            "ann_accuracy": ann_accuracy,
            "steps": args.steps,
            "comparison": comparison,
            "forms": forms,
            "hardware": hardware_info and {**hardware_info, "input_bits": args.input_bits},
            "devices": str(jax.devices()[0].device_kind),
            "seconds": time.perf_counter() - start,
        }
    )
    write_rows(rows, args.results_dir, f"nir_readers_{args.name}")
    return rows


if __name__ == "__main__":
    main()
