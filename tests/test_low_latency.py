"""Low-latency neurons and forward calibration: hand-stepped neurons, identities, whole-network checks.

Every expected value below is worked out by hand in the comments (θ = 1, v0 = ½ unless stated).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snnjax
from snnjax.conversion import calibration, low_latency
from snnjax.conversion.neuron_registry import NEURONS
from snnjax.core import activations, neurons

QCFS4 = functools.partial(activations.qcfs, levels=4)
# Each low-latency neuron with its mechanism switched off: the IF neuron.
MECHANISM_OFF = [
    ("burst", {"max_spikes": 1}),
    ("group", {"max_spikes": 1}),
    ("cos", {"prerun": 0}),
    ("cos_network", {"prerun": 0}),
    ("srp", {"prerun": 0}),
]


def column(*values):
    """One neuron's input over time, ``[T, 1]``."""
    return jnp.asarray(values, jnp.float32)[:, None]


def test_burst_neuron_hand_stepped():
    # m=2, v(0)=0.5: 2.5 → 2 spikes (v 0.5); 0.75 → 0; 3.75 → 2 (capped, v 1.75); 1.75 → 1 (v 0.75).
    out = low_latency.burst_neuron(column(2.0, 0.25, 3.0, 0.0), 1.0, 0.5, max_spikes=2)
    np.testing.assert_array_equal(out[:, 0], [2.0, 0.0, 2.0, 1.0])


def test_group_neuron_hand_stepped():
    # m=4 members, quantum 0.25, v(0) = 0.5·0.25 = 0.125.
    # 0.725 ≥ 0.25, 0.5 (not 0.75) → 2 spikes = 0.5, v 0.225; 0.325 → 1 = 0.25, v 0.075;
    # 1.275 ≥ 0.25..1.0 → 4 = 1.0, v 0.275.
    out = low_latency.group_neuron(column(0.6, 0.1, 1.2), 1.0, 0.5, max_spikes=4)
    np.testing.assert_array_equal(out[:, 0], [0.5, 0.25, 1.0])


@pytest.mark.parametrize("members,steps", [(2, 4), (4, 8)])
def test_group_neuron_constant_input_is_qcfs_with_m_times_t_levels(members, steps):
    """Constant z ∈ [0, θ]: the potential stays in [0, θ/m), so the count is floor(mT·z/θ + ½)."""
    z = jnp.linspace(0.0, 1.0, 129, dtype=jnp.float32)  # multiples of 1/128: every sum is exact
    out = low_latency.group_neuron(jnp.broadcast_to(z, (steps, 129)), 1.0, 0.5, max_spikes=members)
    expected = activations.qcfs(z, 1.0, levels=members * steps)
    np.testing.assert_array_equal(jnp.mean(out, axis=0), expected)
    # and the IF neuron (m = 1) is QCFS with T levels, the seed identity
    plain = low_latency.group_neuron(jnp.broadcast_to(z, (steps, 129)), 1.0, 0.5, max_spikes=1)
    np.testing.assert_array_equal(jnp.mean(plain, axis=0), activations.qcfs(z, 1.0, levels=steps))


def test_offset_calibrated_membrane_hand_stepped():
    z = jnp.asarray(
        [
            # A: 1.1 fires (v 0.1), −0.2 silent: residual < 0 with a spike → down by max(1, 1.1−0.999) = 1
            # B: 0.7 silent, 3.2 fires (v 2.2 ≥ 1): too few → up by max(1, 1.001−0.7) = 1
            # C: 0.8 silent, 1.1 fires (v 0.1): no offset, keeps 0.5
            # D: 3.0 fires (v 2.0), −0.2 silent: down by max(1, 3.0−0.999) = 2.001
            # E: never fires, ends at 0.5−0.6 < 0 but without a spike: keeps 0.5
            [0.6, 0.2, 0.3, 2.5, -0.3],
            [-0.3, 2.5, 0.3, -2.2, -0.3],
        ],
        jnp.float32,
    )
    shifted = low_latency.offset_calibrated_membrane(z, 1.0, 0.5)
    np.testing.assert_allclose(shifted, [-0.5, 1.5, 0.5, 0.5 - 2.001, 0.5], rtol=1e-6)
    # θ = 2 scales every potential: the same inputs doubled give twice the membrane
    np.testing.assert_allclose(
        low_latency.offset_calibrated_membrane(2 * z, 2.0, 0.5), 2 * shifted, rtol=1e-6
    )


def test_cos_neuron_replays_the_input_from_the_shifted_membrane():
    z = column(0.6, -0.3, 0.6, 0.0)
    # plain IF from 0.5: 1.1 fires; −0.2; 0.4; 0.4 → [1, 0, 0, 0]
    np.testing.assert_array_equal(neurons.if_neuron(z, 1.0)[:, 0], [1, 0, 0, 0])
    # pre-run on z[:2] (neuron A above) → v(0) = −0.5: 0.1, −0.2, 0.4, 0.4 → no spike
    np.testing.assert_array_equal(low_latency.cos_neuron(z, 1.0, 0.5, prerun=2)[:, 0], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="first ρ=5 input steps; got only T=4"):
        low_latency.cos_neuron(z, 1.0, 0.5, prerun=5)


def test_cos_network_neuron_prerun_then_restart():
    z = column(0.6, -0.3, 0.6, 0.6)
    # pre-run outputs [1, 0] (as IF); restart from −0.5 on [0.6, 0.6]: 0.1, 0.7 → [0, 0]
    np.testing.assert_array_equal(low_latency.cos_network_neuron(z, 1.0, 0.5, prerun=2)[:, 0], [1, 0, 0, 0])


def test_srp_neuron_masks_by_residual_potential():
    z = jnp.asarray(
        [
            # A: 1.1 fires (v 0.1), −0.4 → residual −0.4 ≤ 1e-3: masked; restart 0.5: 1.1 would fire
            # B: 0.8, 1.1 fires (v 0.1 > 1e-3): kept; restart 0.5: 1.1 fires, 0.7
            # C: 1.0005 fires, residual 0.0005 ≤ 1e-3: masked (the reference's strict '> 1e-3')
            # D: 1.002 fires, residual 0.002: kept; restart: 1.002 fires
            [0.6, 0.3, 0.5005, 0.502],
            [-0.5, 0.3, 0.0, 0.0],
            [0.6, 0.6, 0.5005, 0.502],
            [0.6, 0.6, 0.0, 0.0],
        ],
        jnp.float32,
    )
    out = low_latency.srp_neuron(z, 1.0, 0.5, prerun=2)
    np.testing.assert_array_equal(out[:2], neurons.if_neuron(z[:2], 1.0))  # the pre-run is plain IF
    np.testing.assert_array_equal(out[2:], [[0, 1, 0, 1], [0, 0, 0, 0]])


@pytest.mark.parametrize("neuron,options", MECHANISM_OFF)
def test_mechanism_off_is_the_if_neuron_bit_for_bit(neuron, options):
    z = jax.random.normal(jax.random.key(0), (9, 4, 5)) * 0.7
    theta = jnp.asarray([0.5, 1.0, 1.5, 2.0, 3.0])
    expected = neurons.if_neuron(z, theta, 0.5)
    np.testing.assert_array_equal(NEURONS[neuron].fn(z, theta, 0.5, **options), expected)


def test_total_latency_counts_every_simulated_step():
    assert NEURONS["if"].total_latency(4, spiking_layers=19) == 4
    assert NEURONS["burst"].total_latency(4, spiking_layers=19) == 4
    assert NEURONS["srp"].total_latency(4, spiking_layers=19, prerun=4) == 8
    assert NEURONS["cos_network"].total_latency(2, spiking_layers=19, prerun=4) == 6
    assert NEURONS["cos"].total_latency(2, spiking_layers=19, prerun=4) == 19 * 4 + 2
    assert NEURONS["integrate_then_fire"].total_latency(4, spiking_layers=3) == 16


def test_simulated_steps_include_the_prerun():
    assert NEURONS["srp"].simulated_steps(4, prerun=3) == 7  # network-wide: ρ + T
    assert NEURONS["cos"].simulated_steps(2, prerun=5) == 5  # per layer: max(T, ρ)
    assert NEURONS["cos"].simulated_steps(8, prerun=5) == 8
    assert NEURONS["burst"].simulated_steps(4, prerun=3) == 4


class Net(nn.Module):
    """Conv → act → Conv → act → flatten → Dense → act → Dense."""

    @nn.compact
    def __call__(self, x):
        act = functools.partial(snnjax.ThresholdActivation, fn=QCFS4, threshold_init=1.0)
        x = act()(nn.Conv(4, (3, 3))(x))
        x = act()(nn.Conv(4, (3, 3))(x))
        x = act()(nn.Dense(8)(x.reshape((x.shape[0], -1))))
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def net():
    model = Net()
    images = jax.random.normal(jax.random.key(0), (6, 6, 6, 2))
    variables = model.init(jax.random.key(1), images)
    return model, variables, snnjax.convert_variables(variables), images


@pytest.mark.parametrize("neuron,options", MECHANISM_OFF)
def test_whole_network_method_off_equals_the_if_snn(net, neuron, options):
    model, _, snn_variables, images = net
    expected = snnjax.spiking_apply(snnjax.spiking_model(model), snn_variables, images, 6)
    snn = snnjax.spiking_model(model, neuron=neuron, neuron_options=options)
    np.testing.assert_array_equal(snnjax.spiking_apply(snn, snn_variables, images, 6), expected)


@pytest.mark.parametrize("neuron", ["srp", "cos_network"])
def test_network_prerun_readout_is_the_window_after_the_prerun(net, neuron):
    model, _, snn_variables, images = net
    snn = snnjax.spiking_model(model, neuron=neuron, neuron_options={"prerun": 3})
    readout = snnjax.spiking_apply(snn, snn_variables, images, 5)
    whole = snnjax.spiking_apply_sequence(snn, snn_variables, jnp.broadcast_to(images, (8, *images.shape)))
    assert readout.shape == (5, 6, 3)
    np.testing.assert_array_equal(readout, whole[3:])


def test_cos_readout_shorter_than_prerun_is_the_causal_prefix(net):
    model, _, snn_variables, images = net
    snn = snnjax.spiking_model(model, neuron="cos", neuron_options={"prerun": 4})
    long = snnjax.spiking_apply(snn, snn_variables, images, 6)
    np.testing.assert_array_equal(snnjax.spiking_apply(snn, snn_variables, images, 2), long[:2])


def test_low_latency_neurons_refuse_step_mode_and_foreign_options(net):
    model = net[0]
    with pytest.raises(ValueError, match="step mode runs only the neuron .if."):
        snnjax.spiking_model(model, neuron="srp", mode="step")
    with pytest.raises(ValueError, match=r"\['prerun'\] do not apply to neuron 'burst'"):
        snnjax.spiking_model(model, neuron="burst", neuron_options={"prerun": 2})


class OneLayer(nn.Module):
    """x [B, 2] → identity Dense → activation (λ = 1, QCFS L = 4) → Dense(1)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(
            2, kernel_init=lambda key, shape, dtype=jnp.float32: jnp.eye(2, dtype=dtype), use_bias=False
        )(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0, name="act")(x)
        return nn.Dense(1)(x)


@pytest.fixture(scope="module")
def one_layer():
    model = OneLayer()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2)))
    return model, variables, snnjax.convert_variables(variables)


# Two images; T_cal = 2, θ = 1, v0 = ½.
# Feature 0 (x = 0.3 in both): SNN 0.8 → 0, 1.1 → 1: mean_T y = 0.5; ANN QCFS floor(1.2+0.5)/4 = 0.25.
# Feature 1 (x = 0.9 | 0.1): SNN 1.4 → 1, 1.3 → 1 | 0.6, 0.7 → 0: mean 0.5; ANN 1.0 | 0.0: mean 0.5.
BATCH = np.asarray([[0.3, 0.9], [0.3, 0.1]], np.float32)


def test_bias_calibration_hand_computed(one_layer):
    model, variables, snn_variables = one_layer
    snn = snnjax.spiking_model(model)
    calibrated, info = calibration.calibrate_snn(snn, snn_variables, model, variables, [BATCH], 2, "bias")
    np.testing.assert_allclose(calibrated["calibration"]["act"]["bias"], [0.25, 0.0], atol=1e-7)
    assert info == {"kind": "bias", "steps": 2, "batches": 1, "images": 2}
    # applied: feature 0 receives 0.3 − 0.25 = 0.05 per step: 0.55, 0.6 → no spike; feature 1 unchanged
    _, record = snn.apply_recorded(calibrated, jnp.broadcast_to(BATCH, (2, 2, 2)))
    z, y = record["act"]
    np.testing.assert_array_equal(
        y, neurons.if_neuron(z - jnp.broadcast_to(jnp.asarray([0.25, 0.0]), z.shape), 1.0)
    )
    np.testing.assert_array_equal(y[:, 0, :], [[0, 1], [0, 1]])


def test_potential_calibration_hand_computed(one_layer):
    model, variables, snn_variables = one_layer
    snn = snnjax.spiking_model(model)
    calibrated, _ = calibration.calibrate_snn(snn, snn_variables, model, variables, [BATCH], 2, "potential")
    # T·(mean a − mean y): feature 0: 2·(0.25 − 0.5) = −0.5; feature 1: 0
    np.testing.assert_allclose(calibrated["calibration"]["act"]["membrane"], [-0.5, 0.0], atol=1e-7)
    _, record = snn.apply_recorded(calibrated, jnp.broadcast_to(BATCH, (2, 2, 2)))
    z, y = record["act"]
    start = jnp.broadcast_to(jnp.asarray([0.0, 0.5]), (2, 2))  # v0·θ + membrane
    np.testing.assert_array_equal(y, neurons.if_neuron_with_state(z, 1.0, membrane=start)[0])


def test_step_bias_calibration_hand_computed(one_layer):
    model, variables, snn_variables = one_layer
    snn = snnjax.spiking_model(model)
    calibrated, _ = calibration.calibrate_snn(
        snn, snn_variables, model, variables, [BATCH], 2, "step_bias", alpha=0.5
    )
    # Feature 0, target 0.25. t=0: 0.8 → 0 (mean 0): b0 = 0.5·(0 − 0.25) = −0.125; redo 0.925 → 0.
    # t=1: 0.925+0.3 = 1.225 → 1 (mean 1): b1 = 0.5·(1 − 0.25) = 0.375; redo 0.85 → 0.
    # Feature 1, target 0.5: t=0 mean 0.5 → b0 = 0; t=1 mean 0.5 → b1 = 0.
    np.testing.assert_allclose(
        calibrated["calibration"]["act"]["step_bias"], [[-0.125, 0.0], [0.375, 0.0]], atol=1e-7
    )


def test_calibration_uses_exactly_the_batches_given(one_layer):
    model, variables, snn_variables = one_layer
    snn = snnjax.spiking_model(model)
    drawn = []

    def batches():
        for batch in (BATCH, BATCH[::-1] * 2):
            drawn.append(batch)
            yield batch

    one, _ = calibration.calibrate_snn(snn, snn_variables, model, variables, [BATCH], 2, "bias")
    two, info = calibration.calibrate_snn(snn, snn_variables, model, variables, batches(), 2, "bias")
    assert len(drawn) == 2 and info["batches"] == 2 and info["images"] == 4
    assert not np.allclose(one["calibration"]["act"]["bias"], two["calibration"]["act"]["bias"])
    with pytest.raises(ValueError, match="got no batch"):
        calibration.calibrate_snn(snn, snn_variables, model, variables, [], 2, "bias")


def test_zero_corrections_equal_the_uncalibrated_snn(net):
    model, variables, snn_variables, images = net
    snn = snnjax.spiking_model(model)
    calibrated, _ = calibration.calibrate_snn(snn, snn_variables, model, variables, [images], 3, "bias")
    zeroed = {**calibrated, "calibration": jax.tree.map(jnp.zeros_like, calibrated["calibration"])}
    np.testing.assert_array_equal(
        snnjax.spiking_apply(snn, zeroed, images, 4), snnjax.spiking_apply(snn, snn_variables, images, 4)
    )


def test_calibration_refuses_other_neurons_and_step_mode(net):
    model, variables, snn_variables, images = net
    with pytest.raises(ValueError, match="defined for the 'if' neuron, not 'burst'"):
        calibration.calibrate_snn(
            snnjax.spiking_model(model, neuron="burst"), snn_variables, model, variables, [images], 2
        )
    calibrated, _ = calibration.calibrate_snn(
        snnjax.spiking_model(model), snn_variables, model, variables, [images], 2
    )
    with pytest.raises(ValueError, match="run the calibrated SNN in layer mode"):
        snnjax.spiking_apply(snnjax.spiking_model(model, mode="step"), calibrated, images, 2)


@pytest.mark.parametrize(
    "post, options, alphabet, latency_at_1",
    [
        ("srp", {"prerun_steps": 2}, "binary {0, θ}", 3),
        ("cos", {"prerun_steps": 2}, "binary {0, θ}", None),  # n·ρ + 1, n read from the report
        ("group", {"spikes_per_step": 2}, "up to m spikes {0, θ/m, …, θ}", 1),
        ("step_bias_calibration", {"post_calibration_examples": 40}, "binary {0, θ}", 1),
    ],
)
def test_convert_reports_total_latency_alphabet_and_calibration(
    tiny_workdir, monkeypatch, post, options, alphabet, latency_at_1
):
    from snnjax.configs import ci_tiny
    from snnjax.conversion import calibration as calibration_lib
    from snnjax.experiment import pipeline as evaluation
    from snnjax.io import data

    workdir, _ = tiny_workdir
    config = ci_tiny.get_config()
    config.post_conversion = post
    config.update(options)
    seen = []
    real = calibration_lib.calibrate_snn

    def spy(*args, **kwargs):
        batches = list(args[4])
        seen.extend(batches)
        return real(*args[:4], batches, *args[5:], **kwargs)

    monkeypatch.setattr(calibration_lib, "calibrate_snn", spy)
    result = evaluation.convert_and_evaluate(config, str(workdir))
    assert result["post_conversion"] == post and result["spike_alphabet"] == alphabet
    spiking = result["spiking_layers"]
    expected = latency_at_1 if latency_at_1 is not None else spiking * 2 + 1
    assert result["latency_steps"]["1"] == expected
    assert result["latency_steps"]["8"] == expected + 7
    energy = result["method_energy"]
    steps = energy["readout_steps"]
    assert energy["simulated_steps"] == steps + (2 if post == "srp" else 0)
    if post == "group":  # twice the quanta of an IF neuron's spikes, at least as many spikes
        assert energy["spikes_per_image"] >= result["layers"]["spikes_per_image"]
    if post.endswith("_calibration"):
        assert result["calibration"] == {
            "kind": "step_bias",
            "steps": 8,
            "batches": 1,
            "images": 40,
            "split": "train",
        }
        # the calibration read the first 40 training images, nothing from the test split
        dataset = data.load_dataset(config.dataset, config.data_dir, config.seed, config.image_size)
        np.testing.assert_array_equal(np.concatenate(seen), dataset.train_images[:40])
    else:
        assert result["calibration"] is None and not seen


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"method": "spikeconverter", "post_conversion": "cos"}, "already equals its quantized ANN exactly"),
        ({"post_conversion": "srp", "snn_mode": "step"}, "needs config.snn_mode='layer'"),
        (
            {"post_conversion": "bias_calibration", "balancing": "weights", "fold_bn": True},
            "set config.balancing='threshold'",
        ),
        ({"post_conversion": "srp", "export_nir": True}, "NIR has no counterpart"),
        ({"post_conversion": "srp", "prerun_steps": 0}, "prerun_steps=0 switches 'srp' off"),
        ({"post_conversion": "burst", "spikes_per_step": 0}, "spikes_per_step"),
        ({"post_conversion": "offset"}, "post_conversion"),
    ],
)
def test_config_refuses_combinations_that_make_no_sense(overrides, message):
    from snnjax.configs import ci_tiny
    from snnjax.experiment.config import validate_config

    config = ci_tiny.get_config()
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_convert_on_a_test_subsample_states_how_many(tiny_workdir, capsys):
    from snnjax.configs import ci_tiny
    from snnjax.experiment import pipeline as evaluation

    workdir, _ = tiny_workdir
    config = ci_tiny.get_config()
    config.test_examples = 37
    result = evaluation.convert_and_evaluate(config, str(workdir))
    assert result["num_test_images"] == 37
    assert "37 of 360 images drawn uniformly: config.test_examples" in capsys.readouterr().out
    # accuracies are fractions of 37 images
    assert all(abs(37 * a - round(37 * a)) < 1e-6 for a in result["snn_accuracy"].values())
