"""NeuroBench's metrics (snnjax.analysis.neurobench) on tiny networks counted by hand."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import snnjax
from snnjax.analysis.neurobench import neurobench_metrics

IF = functools.partial(snnjax.ThresholdActivation, fn=functools.partial(snnjax.qcfs, levels=4))


class DenseNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(IF(name="act")(nn.Dense(2, name="fc")(x)))


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = IF(name="act")(nn.Conv(1, (3, 3), padding="SAME", use_bias=False, name="conv")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))  # 3×3 → 1×1
        return nn.Dense(2, name="head")(x.reshape((x.shape[0], -1)))


def metrics(model, params, images, steps, mask=None):
    variables = {"params": params}
    snn = snnjax.spiking_model(model, v0=0.5)
    mask = np.ones(len(images), bool) if mask is None else mask
    return neurobench_metrics(snn, variables, [(images, np.zeros(len(images)), mask)], steps)


DENSE_PARAMS = {
    "fc": {"kernel": jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), "bias": jnp.zeros(2)},
    "act": {"threshold": jnp.float32(2.0)},
    "head": {"kernel": jnp.array([[1.0, 0.0], [2.0, 3.0]]), "bias": jnp.zeros(2)},
}


def test_dense_network_counts_by_hand():
    params = DENSE_PARAMS
    images = jnp.array([[0.5, 3.0, 0.0], [0.5, 0.0, 0.25], [9.0, 9.0, 9.0]])
    # The third example is masked out. fc's inputs are analog: MACs, each nonzero input times the
    # nonzero weights it drives (rows 1, 2, 1): 1 + 2 = 3 and 1 + 1 = 2 per step, over T = 2.
    # The IF (θ = 2, v(0) = 1) gets z = [3.5, 3] and [0.5, 0.25]: every step fires both neurons of
    # example 0, and neuron 0 of example 1 at t = 2 only (1 + 0.5 + 0.5 = 2 ≥ θ). Spikes carry θ = 2,
    # 1 after dividing by θ: ACs, each spike times the nonzero head weights its neuron drives (1, 2).
    got = metrics(DenseNet(), params, images, 2, mask=np.array([True, True, False]))
    ops = got["SynapticOperations"]
    assert ops["Effective_MACs"] == (3 + 2) * 2 / 2
    assert ops["Effective_ACs"] == ((1 + 2) * 2 + 1) / 2
    assert ops["Dense"] == (3 * 2 + 2 * 2) * 2  # all inputs × all weights, per sample over T
    assert got["ActivationSparsity"] == pytest.approx(1 - 5 / 8)  # 5 of 2 neurons × 2 samples × 2 steps
    assert got["ConnectionSparsity"] == 0.3  # 3 zero weights of 10 (biases not counted)
    assert got["Footprint"] == 4 * (6 + 2 + 1 + 4 + 2)  # float32 weights, biases, θ
    assert got["num_samples"] == 2


def test_conv_counts_leave_padding_out_and_pooled_spikes_are_tested_per_window():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 1))},
        "act": {"threshold": jnp.float32(3.0)},
        "head": {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)},
    }
    images = jnp.ones((1, 3, 3, 1))  # 0/1 pixels: the conv's input counts as spikes (ACs)
    got = metrics(ConvNet(), params, images, 1)
    ops = got["SynapticOperations"]
    # In-bounds taps of a 3×3 SAME conv on 3×3: 4 corners × 4 + 4 edges × 6 + 9 = 49 (not 81).
    # All 9 neurons fire at t = 1 (z ≥ 4, v(0) = 1.5, θ = 3), so the 2×2 average of the top-left
    # window is θ, 1 after dividing by θ: a spike; the head's one nonzero weight makes 1 AC; Dense
    # adds 1 input × 2 outputs.
    assert ops == {"Effective_MACs": 0.0, "Effective_ACs": 49.0 + 1.0, "Dense": 49.0 + 2.0}
    # Only the four corner pixels lit: each drives the 4 in-bounds outputs around it (16 ACs). z in
    # the top-left window is 1, 2, 2, 4: the corner neuron stays silent (1.5 + 1 < 3), so the window
    # averages to ¾θ, not a spike: the head's input makes 1 MAC.
    images = jnp.asarray(np.array([1, 0, 1, 0, 0, 0, 1, 0, 1], np.float32).reshape(1, 3, 3, 1))
    ops = metrics(ConvNet(), params, images, 1)["SynapticOperations"]
    assert ops == {"Effective_MACs": 1.0, "Effective_ACs": 16.0, "Dense": 49.0 + 2.0}


def test_an_nnx_model_counts_as_its_linen_twin():
    from flax import nnx

    import snnjax.nnx as snx

    class NNXDense(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
            self.act = snx.ThresholdActivation(functools.partial(snnjax.qcfs, levels=4), threshold_init=2.0)
            self.head = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.head(self.act(self.fc(x)))

    model = NNXDense()
    model.fc.kernel.value = DENSE_PARAMS["fc"]["kernel"]
    model.head.kernel.value = DENSE_PARAMS["head"]["kernel"]
    params = DENSE_PARAMS
    images = np.array([[0.5, 3.0, 0.0], [0.5, 0.0, 0.25]], np.float32)
    batches = [(images, np.zeros(2), np.ones(2, bool))]
    nnx_metrics = neurobench_metrics(snnjax.spiking_model(model), snnjax.convert_variables(model), batches, 3)
    linen_metrics = metrics(DenseNet(), params, images, 3)
    assert nnx_metrics == linen_metrics and nnx_metrics["SynapticOperations"]["Effective_ACs"] > 0
