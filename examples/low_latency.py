"""Low latency without retraining: multi-spike neurons, a network pre-run and calibration, side by side.

Shows: the same converted SNN run with other neurons by name, ``snnjax.spiking_model(ann,
neuron="burst", neuron_options={"max_spikes": 2})`` and the like (layer mode), and a training-free
bias calibration (``snnjax.calibrate_snn``, on training images only). Each is read at the first few
steps, where the plain IF SNN is furthest from its ANN; a pre-run adds its steps to the latency,
which the table counts. Run: ``python examples/low_latency.py`` (about 20 s on a 2-core CPU).
"""

import functools

import _digits
import flax.linen as nn

import snnjax

QCFS = functools.partial(
    snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=4), threshold_init=2.0
)


class CNN(nn.Module):
    """[B, 8, 8, 1] → (conv → QCFS → 2×2 average pool) × 2 → dense → logits [B, 10]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits of images ``x`` (``train`` is unused: the model has no BatchNorm)."""
        for width in (16, 32):
            x = nn.avg_pool(QCFS()(nn.Conv(width, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


dataset = _digits.load()
images, labels = dataset.test_images, dataset.test_labels
ann = CNN()
variables = _digits.train(ann, dataset)
snn_variables = snnjax.convert_variables(variables)
plain = snnjax.spiking_model(ann, v0=0.5)
ann_accuracy = float(_digits.accuracy(ann.apply(variables, images), labels))

# Bias calibration: a per-channel bias per layer that makes the SNN's mean output over T_cal = 4 steps
# match the ANN's activation, fitted layer by layer on training batches `[B, H, W, C]`.
calibrated_variables, info = snnjax.calibrate_snn(
    plain, snn_variables, ann, variables, [dataset.train_images[:256]], num_steps=4, kind="bias"
)

# name: (SNN, its variables, steps before the first readout step: the pre-run)
methods = {
    "plain IF": (plain, snn_variables, 0),
    "burst, m=2 spikes/step": (
        snnjax.spiking_model(ann, v0=0.5, neuron="burst", neuron_options={"max_spikes": 2}),
        snn_variables,
        0,
    ),
    "group, m=4 members": (
        snnjax.spiking_model(ann, v0=0.5, neuron="group", neuron_options={"max_spikes": 4}),
        snn_variables,
        0,
    ),
    "COS, network pre-run ρ=2": (
        snnjax.spiking_model(ann, v0=0.5, neuron="cos_network", neuron_options={"prerun": 2}),
        snn_variables,
        2,
    ),
    "bias calibration, T_cal=4": (plain, calibrated_variables, 0),
}
steps = (1, 2, 4, 8)
print(f"ANN: {100 * ann_accuracy:.2f} %   SNN accuracy (%) after t readout steps; latency = pre-run + t")
print(f"{'method':>26} " + " ".join(f"{f't={t}':>6}" for t in steps) + "  latency")
results = {}
for name, (snn, snn_vars, prerun) in methods.items():
    logits = snnjax.spiking_apply(snn, snn_vars, images, num_steps=max(steps))  # the readout window
    accuracy = _digits.accuracy(snnjax.cumulative_mean_logits(logits), labels)
    results[name] = [float(accuracy[t - 1]) for t in steps]
    row = " ".join(f"{100 * a:6.2f}" for a in results[name])
    print(f"{name:>26} {row}  {f'{prerun} + t' if prerun else 't'}")

# A group of m = L members fires QCFS's quantization in a single step: the ANN's accuracy at t = 1.
assert abs(results["group, m=4 members"][0] - ann_accuracy) < 0.02
