"""Conversion toolkit: SpikeConverter identity, balancing forms, max-pool policy, reports, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from helpers import QCFS4, init, randomize_variables, tiny_resnet

import snnjax
from snnjax import conversion
from snnjax.analysis import reports
from snnjax.conversion import recording
from snnjax.core import activations
from snnjax.nn.models import ConvNet, spiking_max_pool_gate

IMAGE_SHAPE = (8, 8, 3)
RELU = functools.partial(snnjax.Activation, fn=activations.relu)
# Test-only chain with two convs, a pool and a hidden dense layer (the weight-balancing path).
SmallChain = functools.partial(ConvNet, layers=(4, "P", 6), hidden=(8,))


def uniform_images(batch=4, seed=1):
    return jax.random.uniform(jax.random.key(seed), (batch, *IMAGE_SHAPE), minval=0.0, maxval=2.0)


def dyadic_variables(variables, seed=0):
    """Folded-BN variables whose every value is a small multiple of 1/8 (thresholds 1 or 2).

    All sums the ANN and SNN compute are then exact in float32, so identities must hold bit for bit.
    """
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variables)
    out = {}
    for path, value in flat.items():
        if path[-1] == "threshold":
            out[path] = jnp.asarray(rng.choice([1.0, 2.0], size=value.shape), jnp.float32)
        else:
            out[path] = jnp.asarray(rng.integers(-6, 9, size=value.shape) / 8, jnp.float32)
    return traverse_util.unflatten_dict(out)


def folded_tree(model, seed=0):
    """SNN-ready variables of ``model`` with BN folded (``FoldedBatchNorm`` layout)."""
    variables = randomize_variables(init(model, IMAGE_SHAPE, seed), seed)
    return conversion.convert_variables(variables, fold_bn=True)


# --- SpikeConverter --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [snnjax.nn.models.TinyCNN, tiny_resnet, SmallChain], ids=["cnn", "resnet", "chain"]
)
@pytest.mark.parametrize("window", [1, 4, 8])
def test_spikeconverter_snn_equals_quantized_ann_layer_by_layer(build, window):
    # ANN: QCFS with L = T and φ = v0; SNN: integrate-then-fire with the same θ over a window of T.
    ann_activation = functools.partial(
        snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=window, shift=0.5)
    )
    ann = build(num_classes=3, activation=ann_activation).clone(norm=snnjax.FoldedBatchNorm)
    variables = dyadic_variables(init(ann, IMAGE_SHAPE))
    images = jnp.round(uniform_images() * 8) / 8
    snn = conversion.spiking_model(ann, v0=0.5, neuron="integrate_then_fire")

    ann_layers = recording.record_activations(ann, variables, images)
    snn_layers = recording.record_activations(
        snn, variables, jnp.broadcast_to(images, (window, *images.shape))
    )
    assert len(ann_layers) >= 2 and list(ann_layers) == list(snn_layers)
    for name, (_, ann_out) in ann_layers.items():
        np.testing.assert_array_equal(jnp.mean(snn_layers[name][1], axis=0), ann_out, err_msg=name)
    logits = conversion.spiking_apply(snn, variables, images, window)
    np.testing.assert_array_equal(jnp.mean(logits, axis=0), ann.apply(variables, images))


def test_spikeconverter_identity_with_float_weights_and_batchnorm():
    # Real-valued weights and unfolded BN: equal up to float rounding (rare floor ties aside).
    ann_activation = functools.partial(
        snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=4)
    )
    ann = tiny_resnet(ann_activation)
    variables = randomize_variables(init(ann, IMAGE_SHAPE), threshold=0.7)
    snn = conversion.spiking_model(ann, neuron="integrate_then_fire")
    logits = jnp.mean(conversion.spiking_apply(snn, variables, uniform_images(8), 4), axis=0)
    np.testing.assert_allclose(logits, ann.apply(variables, uniform_images(8)), atol=1e-4)


def test_windowed_and_signed_neurons_refuse_step_mode():
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    for neuron in ("integrate_then_fire", "signed_if", "multi_spike_if", "srp"):
        with pytest.raises(
            ValueError, match=f"step mode runs only the neuron 'if'; neuron '{neuron}' needs mode='layer'"
        ):
            conversion.spiking_model(ann, mode="step", neuron=neuron)
    with pytest.raises(ValueError, match="neuron 'lif' is unknown; allowed: if, integrate_then_fire"):
        conversion.spiking_model(ann, neuron="lif")


def test_signed_neuron_network_runs_and_differs_from_if():
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    variables = randomize_variables(init(ann, IMAGE_SHAPE))
    outputs = {}
    for neuron in ("if", "signed_if"):
        snn = conversion.spiking_model(ann, neuron=neuron)
        layers = recording.record_activations(
            snn, variables, jnp.broadcast_to(uniform_images(), (8, 4, *IMAGE_SHAPE))
        )
        outputs[neuron] = np.asarray(layers["act0"][1])
    # The first layer's input is constant, so no negative spike is ever needed there.
    np.testing.assert_array_equal(outputs["if"], outputs["signed_if"])
    assert set(np.unique(outputs["signed_if"])) <= {0.0, 1.0}


# --- activation the converter does not know ---------------------------------------------------------


class Gelu(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.gelu(x)


def test_unknown_activation_is_refused_not_skipped():
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=Gelu)
    with pytest.raises(ValueError, match="not one the converter knows"):
        conversion.spiking_model(ann)


# --- threshold balancing: threshold form vs weight form ----------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("build", [snnjax.nn.models.TinyCNN, SmallChain], ids=["cnn", "chain"])
def test_weight_balancing_equals_threshold_balancing(build, per_channel):
    ann = build(num_classes=3, activation=RELU)
    variables = randomize_variables(init(ann, IMAGE_SHAPE))
    calibrated = conversion.calibrate_thresholds(
        ann, variables, uniform_images(16, seed=3), 99.0, per_channel
    )
    # Powers of two keep the rescaling exact, so the spikes must be identical.
    calibrated = jax.tree_util.tree_map_with_path(
        lambda path, x: 2.0 ** jnp.round(jnp.log2(x)) if path[-1].key == "threshold" else x, calibrated
    )
    threshold_form = conversion.convert_variables(calibrated, fold_bn=True)
    weight_form = conversion.balance_weights(threshold_form)
    flat = traverse_util.flatten_dict(weight_form["params"])
    assert all(np.all(v == 1.0) for k, v in flat.items() if k[-1] == "threshold")

    snn = conversion.spiking_model(ann, fold_bn=True, per_channel=per_channel, v0=0.5)
    inputs = jnp.broadcast_to(uniform_images(), (8, 4, *IMAGE_SHAPE))
    by_threshold = recording.record_activations(snn, threshold_form, inputs)
    by_weight = recording.record_activations(snn, weight_form, inputs)
    for name in by_threshold:
        np.testing.assert_array_equal(by_threshold[name][1] > 0, by_weight[name][1] > 0, err_msg=name)
    np.testing.assert_allclose(
        conversion.spiking_apply(snn, weight_form, uniform_images(), 8),
        conversion.spiking_apply(snn, threshold_form, uniform_images(), 8),
        rtol=1e-5,
        atol=1e-5,
    )


def test_weight_balancing_refuses_resnets_and_unfolded_batchnorm():
    resnet = tiny_resnet(QCFS4)
    with pytest.raises(ValueError, match="identity shortcuts"):
        conversion.balance_weights(conversion.convert_variables(init(resnet, IMAGE_SHAPE), fold_bn=True))
    cnn = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    with pytest.raises(ValueError, match="fold_bn=True"):
        conversion.balance_weights(conversion.convert_variables(init(cnn, IMAGE_SHAPE)))


def test_per_channel_calibration_is_the_channel_percentile():
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=RELU)
    variables = randomize_variables(init(ann, IMAGE_SHAPE))
    images = uniform_images(16, seed=3)
    calibrated = conversion.calibrate_thresholds(ann, variables, images, 90.0, per_channel=True)
    act0 = recording.record_activations(ann, variables, images)["act0"][1]
    expected = np.percentile(np.asarray(act0).reshape(-1, 4), 90.0, axis=0)
    expected = np.where(expected > 0, expected, np.percentile(np.asarray(act0), 90.0))
    np.testing.assert_allclose(calibrated["params"]["act0"]["threshold"], expected, rtol=1e-6)


# --- max-pool policy -----------------------------------------------------------------------------


def test_spiking_max_pool_gate_hand_example():
    # One 2×2 window, 3 steps. Cumulative counts: t1 a=1 (wins); t2 a=1, d=1 (tie: a, first) → a's 0;
    # t3 d=2 > a=1 → d's spike.
    a, b, c, d = [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1]
    x = jnp.array([[[[a[t]], [b[t]]], [[c[t]], [d[t]]]] for t in range(3)], jnp.float32)  # [T, 2, 2, 1]
    np.testing.assert_array_equal(spiking_max_pool_gate(x[:, None])[:, 0, 0, 0, 0], [1.0, 0.0, 1.0])


def test_max_pool_ann_converts_with_either_policy():
    ann = SmallChain(num_classes=3, activation=QCFS4, pooling="max")
    variables = randomize_variables(init(ann, IMAGE_SHAPE))
    for pooling in ("avg", "max_gate"):
        snn = conversion.spiking_model(ann).clone(pooling=pooling)
        logits = conversion.spiking_apply(snn, conversion.convert_variables(variables), uniform_images(), 4)
        assert logits.shape == (4, 4, 3) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match="no 2×2 pooling"):
        snnjax.create_model("resnet20", 10, QCFS4, pooling="max")


# --- reports ---------------------------------------------------------------------------------------


def test_linear_layer_costs_hand_counts_and_energy():
    ann = snnjax.nn.models.TinyCNN(
        num_classes=3, activation=QCFS4
    )  # conv 3×3 (1→4) on 8×8, pool, dense 64→8→3
    costs = reports.linear_layer_costs(ann, init(ann, (8, 8, 1)), (8, 8, 1))
    assert costs == [
        {"name": "conv_bn0/conv", "fed_by": None, "inputs": 64, "macs": 8 * 8 * 4 * 9},
        {"name": "fc0", "fed_by": "act0", "inputs": 64, "macs": 64 * 8},
        {"name": "head", "fed_by": "fc_act0", "inputs": 8, "macs": 8 * 3},
    ]
    # 100 spikes into fc0 (fan-out 8) and 10 into the head (fan-out 3).
    energy = reports.energy_report(costs, {"act0": 100.0, "fc_act0": 10.0}, pj_per_mac=4.0, pj_per_ac=1.0)
    assert (energy["ann_macs"], energy["snn_macs"], energy["snn_sops"]) == (2840, 2304, 830.0)
    assert energy["ann_energy_uj"] == pytest.approx(2840 * 4e-6)
    assert energy["snn_energy_uj"] == pytest.approx((2304 * 4 + 830) * 1e-6)


def test_projection_shortcut_is_fed_by_the_block_input():
    ann = tiny_resnet(QCFS4)
    fed_by = {
        c["name"]: c["fed_by"] for c in reports.linear_layer_costs(ann, init(ann, IMAGE_SHAPE), IMAGE_SHAPE)
    }
    assert fed_by["stage1_block0/shortcut/conv"] == "stage0_block0/act2"
    assert fed_by["stage1_block0/conv_bn1/conv"] == "stage0_block0/act2"
    assert fed_by["stage1_block0/conv_bn2/conv"] == "stage1_block0/act1"
    assert fed_by["stem/conv"] is None


def test_layer_report_matches_numpy_recomputation():
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    variables = randomize_variables(init(ann, IMAGE_SHAPE), threshold=0.8)
    snn = conversion.spiking_model(ann, v0=0.5)
    images = uniform_images(8)
    mask = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)  # padding images must not count
    report = reports.spiking_layer_report(
        ann, variables, snn, variables, [(images, np.zeros(8, np.int32), mask)], (4, 6), v0=0.5
    )
    assert [layer["name"] for layer in report["layers"]] == ["act0", "fc_act0"]
    z, y = map(
        np.asarray,
        recording.record_activations(snn, variables, jnp.broadcast_to(images, (6, *images.shape)))["fc_act0"],
    )
    a = np.asarray(recording.record_activations(ann, variables, images)["fc_act0"][1])
    z, y, a = z[:, :4], y[:, :4], a[:4]
    layer = report["layers"][1]
    t, theta = 4, 0.8
    rate, zbar = y[:t].mean(0), z[:t].mean(0)
    quantized = theta / t * np.clip(np.floor(t * zbar / theta + 0.5), 0, t)
    expected = {
        "mae": np.abs(rate - a).mean(),
        "relative_l2": np.linalg.norm(rate - a) / np.linalg.norm(a),
        "clipping": np.abs(np.maximum(zbar, 0) - np.clip(zbar, 0, theta)).mean(),
        "quantization": np.abs(np.clip(zbar, 0, theta) - quantized).mean(),
        "unevenness": np.abs(rate - quantized).mean(),
        "negative_residual": (0.5 * theta + z[:t].sum(0) - y[:t].sum(0) < 0).mean(),
    }
    for key, value in expected.items():
        assert layer["errors"]["4"][key] == pytest.approx(value, abs=1e-6), key
    spikes = (y > 0).sum()
    assert layer["spikes_per_image"] == pytest.approx(spikes / 4)
    assert layer["mean_rate"] == pytest.approx(spikes / y.size)
    assert layer["fraction_silent"] == pytest.approx((~(y > 0).any(0)).mean())
    # QCFS Theorem 1 on the analog first layer: at t = L the SNN equals the ANN exactly.
    assert report["layers"][0]["errors"]["4"]["mae"] == 0.0
    assert report["layers"][0]["errors"]["4"]["unevenness"] == 0.0


@pytest.mark.parametrize(
    "build", [snnjax.nn.models.TinyCNN, tiny_resnet, SmallChain], ids=["cnn", "resnet", "chain"]
)
@pytest.mark.parametrize("neuron", ["if", "integrate_then_fire", "signed_if"])
def test_time_folded_layer_mode_keeps_images_and_steps_apart(build, neuron):
    # Layer mode runs each synaptic layer once on a [T·B] batch and unfolds the result; a fold and
    # an unfold that disagreed on the order of T and B would mix images and steps. One image at a
    # time (B = 1) folds trivially, so the batched run must equal the runs image by image.
    ann = build(num_classes=3, activation=QCFS4)
    variables = conversion.convert_variables(randomize_variables(init(ann, IMAGE_SHAPE)))
    snn = conversion.spiking_model(ann, neuron=neuron)
    if build is SmallChain:
        snn = snn.clone(pooling="max_gate")
    images = uniform_images()
    batched = conversion.spiking_apply(snn, variables, images, 6)  # [T, B, classes]
    one_by_one = jnp.concatenate(
        [conversion.spiking_apply(snn, variables, x[None], 6) for x in images], axis=1
    )
    assert len(images) > 1
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6, atol=1e-6)
