"""Conversion tests: layer mode vs independent per-timestep simulations, BN folding, thresholds."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QCFS4, init, randomize_variables, tiny_resnet

import snnjax
from snnjax.conversion import simulation
from snnjax.core import activations

IMAGE_SHAPE = (8, 8, 3)
RELU = functools.partial(snnjax.Activation, fn=activations.relu)


def images(batch=4, seed=1):
    return jax.random.uniform(jax.random.key(seed), (batch, *IMAGE_SHAPE), minval=0.0, maxval=2.0)


class SteppedIF(nn.Module):
    """Test-only IF layer advanced one step per call, membrane in the 'membrane' collection."""

    v0: float = 0.5

    @nn.compact
    def __call__(self, x):
        theta = self.param("threshold", nn.initializers.zeros, ())
        membrane = self.variable("membrane", "v", lambda: jnp.full(x.shape, self.v0) * theta)
        potential = membrane.value + x
        out = jnp.where(potential >= theta, theta, 0.0)
        membrane.value = potential - out
        return out


def per_timestep_loop(model, variables, x, num_steps, v0=0.5):
    """The whole network advanced one timestep at a time, membranes carried between calls."""
    stepped = model.clone(activation=functools.partial(SteppedIF, v0=v0))
    logits, membranes = [], {}
    for _ in range(num_steps):
        out, state = stepped.apply(
            {**variables, **({"membrane": membranes} if membranes else {})}, x, mutable=["membrane"]
        )
        membranes = state["membrane"]
        logits.append(out)
    return jnp.stack(logits)


def hand_tiny_cnn_snn(variables, x, num_steps, v0=0.5, eps=1e-5):
    """TinyCNN's SNN written out in NumPy from the raw parameters (no Flax, no scan)."""
    p = jax.tree.map(np.asarray, variables["params"])
    s = jax.tree.map(np.asarray, variables["batch_stats"])
    x = np.asarray(x, np.float64)
    batch, height, width, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = np.stack(
        [padded[:, i : i + height, j : j + width, :] for i in range(3) for j in range(3)], axis=3
    )  # [B, H, W, 9, C]
    kernel = p["conv_bn0"]["conv"]["kernel"].reshape(9, x.shape[-1], -1)
    conv = np.einsum("bhwkc,kco->bhwo", patches, kernel) + p["conv_bn0"]["conv"]["bias"]
    bn, stats = p["conv_bn0"]["bn"], s["conv_bn0"]["bn"]
    current0 = (conv - stats["mean"]) / np.sqrt(stats["var"] + eps) * bn["scale"] + bn["bias"]
    theta0, theta1 = p["act0"]["threshold"], p["fc_act0"]["threshold"]  # scalar or per channel
    v_conv = np.broadcast_to(v0 * theta0, current0.shape).astype(np.float64)
    v_fc = None
    logits = []
    for _ in range(num_steps):
        v_conv = v_conv + current0  # analog input every step → the same current every step
        spikes0 = np.where(v_conv >= theta0, theta0, 0.0)
        v_conv -= spikes0
        pooled = spikes0.reshape(batch, height // 2, 2, width // 2, 2, -1).mean(axis=(2, 4))
        current1 = pooled.reshape(batch, -1) @ p["fc0"]["kernel"] + p["fc0"]["bias"]
        v_fc = (np.broadcast_to(v0 * theta1, current1.shape) if v_fc is None else v_fc) + current1
        spikes1 = np.where(v_fc >= theta1, theta1, 0.0)
        v_fc -= spikes1
        logits.append(spikes1 @ p["head"]["kernel"] + p["head"]["bias"])
    return np.stack(logits)


def tiny_cnn_setup(threshold=0.5):
    model = snnjax.nn.models.TinyCNN(num_classes=5, activation=QCFS4)
    variables = randomize_variables(init(model, IMAGE_SHAPE), threshold=threshold)
    return model, variables


def test_layer_mode_equals_hand_written_numpy_simulation():
    model, variables = tiny_cnn_setup()
    snn_vars = snnjax.convert_variables(variables)
    logits = snnjax.spiking_apply(snnjax.spiking_model(model), snn_vars, images(), 12)
    expected = hand_tiny_cnn_snn(snn_vars, images(), 12)
    assert np.ptp(expected, axis=0).max() > 0.1, "test needs spikes that change over time"
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [tiny_resnet, functools.partial(snnjax.nn.models.TinyCNN, num_classes=3)])
@pytest.mark.parametrize("v0", [0.0, 0.5])
def test_layer_mode_equals_per_timestep_loop(build, v0):
    model = build(activation=QCFS4)
    snn_vars = snnjax.convert_variables(randomize_variables(init(model, IMAGE_SHAPE), threshold=0.7))
    layer_mode = snnjax.spiking_apply(snnjax.spiking_model(model, v0=v0), snn_vars, images(), 10)
    looped = per_timestep_loop(model, snn_vars, images(), 10, v0=v0)
    assert np.ptp(np.asarray(looped), axis=0).max() > 0.1, "test needs spikes that change over time"
    np.testing.assert_allclose(layer_mode, looped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [tiny_resnet, functools.partial(snnjax.nn.models.TinyCNN, num_classes=3)])
def test_bn_folding_preserves_ann_and_snn_outputs(build):
    model = build(activation=QCFS4)
    variables = randomize_variables(init(model, IMAGE_SHAPE), seed=3, threshold=0.7)
    folded = snnjax.fold_batchnorm(variables)
    assert "batch_stats" not in folded
    relu_model = model.clone(activation=RELU)
    np.testing.assert_allclose(
        relu_model.clone(norm=snnjax.FoldedBatchNorm).apply(folded, images()),
        relu_model.apply(variables, images()),
        rtol=1e-5,
        atol=1e-5,
    )
    snn_plain = snnjax.spiking_apply(
        snnjax.spiking_model(model), snnjax.convert_variables(variables), images(), 8
    )
    snn_folded = snnjax.spiking_apply(
        snnjax.spiking_model(model, fold_bn=True),
        snnjax.convert_variables(variables, fold_bn=True),
        images(),
        8,
    )
    np.testing.assert_allclose(snn_folded, snn_plain, rtol=1e-4, atol=1e-4)


def test_conversion_maps_softplus_parameter_to_threshold():
    activation = functools.partial(QCFS4, threshold_init=3.0, parameterization="softplus")
    model = snnjax.nn.models.TinyCNN(num_classes=3, activation=activation)
    variables = init(model, IMAGE_SHAPE)
    raw = float(variables["params"]["act0"]["threshold"])
    assert raw != pytest.approx(3.0)
    snn_vars = snnjax.convert_variables(variables, threshold_parameterization="softplus")
    assert float(snn_vars["params"]["act0"]["threshold"]) == pytest.approx(3.0, rel=1e-6)
    assert float(snn_vars["params"]["act0"]["threshold"]) == pytest.approx(np.log1p(np.exp(raw)))
    # Everything but the thresholds is carried over unchanged.
    np.testing.assert_array_equal(snn_vars["params"]["head"]["kernel"], variables["params"]["head"]["kernel"])


def test_relu_ann_needs_calibration_and_calibration_uses_percentiles():
    model = snnjax.nn.models.TinyCNN(num_classes=3, activation=RELU)
    variables = randomize_variables(init(model, IMAGE_SHAPE))
    with pytest.raises(ValueError, match="calibrate_thresholds"):
        snnjax.convert_variables(variables)
    calibrated = snnjax.calibrate_thresholds(model, variables, images(16), percentile=100.0)
    # Independent: ReLU of the captured pre-activation (the ConvBN output), reduced by hand.
    _, state = model.apply(variables, images(16), capture_intermediates=True, mutable=["intermediates"])
    act0 = np.maximum(np.asarray(state["intermediates"]["conv_bn0"]["__call__"][0]), 0)
    assert float(calibrated["params"]["act0"]["threshold"]) == pytest.approx(act0.max())
    p99 = snnjax.calibrate_thresholds(model, variables, images(16), percentile=99.0)
    assert float(p99["params"]["act0"]["threshold"]) == pytest.approx(np.percentile(act0, 99.0))
    assert float(p99["params"]["act0"]["threshold"]) < float(calibrated["params"]["act0"]["threshold"])


def test_cumulative_mean_logits_hand_example():
    logits = jnp.array([[[2.0, 0.0]], [[0.0, 4.0]], [[1.0, 2.0]]])
    np.testing.assert_allclose(
        snnjax.cumulative_mean_logits(logits), [[[2.0, 0.0]], [[1.0, 2.0]], [[1.0, 2.0]]]
    )


@pytest.mark.parametrize("num_steps", [0, -2, 2.0, True])
def test_bad_num_steps_rejected(num_steps):
    model, variables = tiny_cnn_setup()
    with pytest.raises(ValueError, match="num_steps"):
        snnjax.spiking_apply(snnjax.spiking_model(model), variables, images(), num_steps)


def test_per_channel_thresholds_convert():
    activation = functools.partial(QCFS4, per_channel=True)
    model = snnjax.nn.models.TinyCNN(num_classes=5, activation=activation)
    variables = randomize_variables(init(model, IMAGE_SHAPE), threshold=0.5)
    variables["params"]["act0"]["threshold"] = jnp.array([0.3, 0.6, 0.9, 1.2])
    snn_vars = snnjax.convert_variables(variables)
    logits = snnjax.spiking_apply(snnjax.spiking_model(model, per_channel=True), snn_vars, images(), 12)
    np.testing.assert_allclose(logits, hand_tiny_cnn_snn(snn_vars, images(), 12), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [tiny_resnet, functools.partial(snnjax.nn.models.TinyCNN, num_classes=3)])
@pytest.mark.parametrize(
    "fold_bn, per_channel, v0", [(False, False, 0.5), (True, False, 0.0), (False, True, 0.5)]
)
def test_step_mode_equals_layer_mode(build, fold_bn, per_channel, v0):
    model = build(activation=functools.partial(QCFS4, per_channel=per_channel))
    variables = randomize_variables(init(model, IMAGE_SHAPE), seed=5, threshold=0.6)
    snn_vars = snnjax.convert_variables(variables, fold_bn=fold_bn)

    def run(mode, num_steps):
        snn = snnjax.spiking_model(model, v0=v0, fold_bn=fold_bn, per_channel=per_channel, mode=mode)
        return jax.jit(lambda v, x: snnjax.spiking_apply(snn, v, x, num_steps))(snn_vars, images())

    layer, step = run("layer", 9), run("step", 9)
    assert np.ptp(np.asarray(layer), axis=0).max() > 0.1, "test needs spikes that change over time"
    # Same spikes; logits agree to rounding (XLA may sum a [B] and a [T·B] batch in different orders, a
    # difference of ~1 ulp, while one differing spike would move a logit by θ·|w| >> 1e-6).
    np.testing.assert_allclose(step, layer, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run("step", 1), layer[:1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 2, 9])
def test_unrolled_step_mode_is_identical_to_the_rolled_scan(num_steps, monkeypatch):
    # STEP_UNROLL only changes how XLA schedules the time loop; T = 9 leaves a remainder step.
    model = tiny_resnet(activation=QCFS4)
    variables = snnjax.convert_variables(randomize_variables(init(model, IMAGE_SHAPE), seed=6, threshold=0.6))
    snn = snnjax.spiking_model(model, mode="step")
    outputs = {}
    for unroll in (1, 2, 4):
        monkeypatch.setitem(simulation.STEP_UNROLL, "cpu", unroll)
        outputs[unroll] = jax.jit(lambda v, x: snnjax.spiking_apply(snn, v, x, num_steps))(
            variables, images()
        )
    assert num_steps == 1 or np.ptp(np.asarray(outputs[1]), axis=0).max() > 0.1
    np.testing.assert_array_equal(outputs[2], outputs[1])
    np.testing.assert_array_equal(outputs[4], outputs[1])


def test_unknown_simulation_mode_rejected():
    with pytest.raises(ValueError, match="allowed: layer, step"):
        snnjax.spiking_model(snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4), mode="event")
