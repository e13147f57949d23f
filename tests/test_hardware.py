"""Hardware bit widths (snnjax.conversion.hardware, core.neurons.fixed_point_if_neuron).

Hand-computed grids, rounding and saturation; and a whole conv network whose SNN logits equal an
integer simulation written here in NumPy, independently of snnjax's simulation.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snnjax
from snnjax.configs import ci_tiny
from snnjax.conversion import hardware
from snnjax.core import activations, neurons
from snnjax.experiment import config as config_lib

QCFS4 = functools.partial(snnjax.ThresholdActivation, fn=functools.partial(activations.qcfs, levels=4))


class DenseChain(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = QCFS4(name="act")(nn.Dense(2, name="fc")(x))
        return nn.Dense(1, name="head")(x)


def dense_chain_variables():
    params = {
        "fc": {"kernel": jnp.asarray([[1.0, -0.5], [0.625, 0.25]]), "bias": jnp.asarray([0.1, -0.2])},
        "act": {"threshold": jnp.asarray(2.0)},
        "head": {"kernel": jnp.asarray([[0.75], [-1.5]]), "bias": jnp.asarray([0.2])},
    }
    return {"params": params}


def test_grid_rounding_and_units_by_hand():
    variables, info = hardware.quantize_for_hardware(
        dense_chain_variables(), model=DenseChain(), inputs=jnp.zeros((1, 2)), weight_bits=4
    )
    p = variables["params"]
    # Balanced: W' = W/θ = [[0.5, −0.25], [0.3125, 0.125]]; 4 bits: Q = 7, p = floor(log2(7/0.5)) = 3;
    # k = round(8·W') = [[4, −2], [2.5 → 2 (half to even), 1]]; bias round(8·b/θ) = [0.4 → 0, −0.8 → −1].
    np.testing.assert_array_equal(p["fc"]["kernel"], [[4, -2], [2, 1]])
    np.testing.assert_array_equal(p["fc"]["bias"], [0, -1])
    assert float(p["act"]["threshold"]) == 8.0  # θ = 2^p in the layer's integer units
    # Head: W·θ = [[1.5], [−3]]: p = floor(log2(7/3)) = 1, k = [[3], [−6]]; spikes arrive valued 2^3.
    np.testing.assert_array_equal(p["head"]["kernel"], np.asarray([[3], [-6]]) / 2 / 8)
    np.testing.assert_array_equal(p["head"]["bias"], np.float32([0.2]))  # the head keeps its float bias
    assert [layer["exponents"] for layer in info["layers"]] == [[3, 3], [1]]
    assert info["layers"][0]["max_level"] == 4
    assert info["layers"][0]["relative_error"] == pytest.approx(0.0625 / 0.5)  # |2/8 − 0.3125| / 0.5


def test_state_bits_cap_the_grid_and_saturate_the_bias():
    variables = dense_chain_variables()
    variables["params"]["fc"]["bias"] = jnp.asarray([20.0, -0.2])  # b/θ = 10: 40 units at p = 2
    out, info = hardware.quantize_for_hardware(
        variables, model=DenseChain(), inputs=jnp.zeros((1, 2)), weight_bits=4, state_bits=6
    )
    # 6-bit membrane: p ≤ 6 − 1 − 3 = 2; k = round(4·W') = [[2, −1], [1.25 → 1, 0.5 → 0]].
    np.testing.assert_array_equal(out["params"]["fc"]["kernel"], [[2, -1], [1, 0]])
    np.testing.assert_array_equal(out["params"]["fc"]["bias"], [31, 0])  # saturated at 2^5 − 1
    assert info["layers"][0]["exponent"] == 2 and info["state_bits"] == 6


class DenseChainPerChannel(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = QCFS4(per_channel=True, name="act")(nn.Dense(2, name="fc")(x))
        return nn.Dense(1, name="head")(x)


def test_per_channel_grids_give_each_channel_its_integer_threshold():
    variables = dense_chain_variables()
    variables["params"]["act"]["threshold"] = jnp.asarray([2.0, 2.0])
    out, info = hardware.quantize_for_hardware(
        variables,
        model=DenseChainPerChannel(),
        inputs=jnp.zeros((1, 2)),
        weight_bits=4,
        weight_scale="channel",
    )
    p = out["params"]
    # Channel maxima of W' = W/θ: 0.5 and 0.25, so p_c = [3, 4]: k = round([8·W'_0, 16·W'_1]).
    assert info["layers"][0]["exponents"] == [3, 4]
    np.testing.assert_array_equal(p["fc"]["kernel"], [[4, -4], [2, 2]])  # 2.5 → 2; 0.125·16 = 2
    np.testing.assert_array_equal(p["act"]["threshold"], [8, 16])
    np.testing.assert_array_equal(p["fc"]["bias"], [0, -2])  # round([0.4, −1.6])
    # The head reads channel c's spikes valued 2^p_c: its rows carry 2^−p_c.
    np.testing.assert_array_equal(p["head"]["kernel"], np.asarray([[3], [-6]]) / 2 / np.asarray([[8], [16]]))
    with pytest.raises(ValueError, match="holds one threshold: build the model with per-channel"):
        hardware.quantize_for_hardware(
            dense_chain_variables(),
            model=DenseChain(),
            inputs=jnp.zeros((1, 2)),
            weight_bits=4,
            weight_scale="channel",
        )


def test_fixed_point_neuron_by_hand():
    # 6-bit membrane [−32, 31], θ = 8, v(0) = 4.
    z = jnp.asarray([2.5, 30.0, -70.0, 7.6])[:, None]
    out = neurons.fixed_point_if_neuron(z, 8.0, 0.5, bits=6)
    # m: 4 + 2 (2.5 rounds to even) = 6 → silent; 6 + 30 = 36 → 31 (saturated) → fires, v = 23;
    # 23 − 70 = −47 → −32; −32 + 8 = −24 → silent.
    np.testing.assert_array_equal(out[:, 0], [0, 8, 0, 0])
    # v(0) = round(0.3·5) = round(1.5) = 2 (an integer register): 2 + 3 = 5 fires at t = 1.
    np.testing.assert_array_equal(
        neurons.fixed_point_if_neuron(jnp.asarray([[3.0]]), 5.0, 0.3, bits=8), [[5]]
    )
    with pytest.raises(ValueError, match="bits must be an int in 2..24"):
        neurons.fixed_point_if_neuron(z, 8.0, bits=32)


class ConvChain(nn.Module):
    """conv → IF → 2×2 average pool → conv → IF → flatten → dense: a pool feeds a spiking layer."""

    @nn.compact
    def __call__(self, x):
        x = QCFS4(name="act0")(nn.Conv(3, (3, 3), padding="VALID", name="conv0")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = QCFS4(name="act1")(nn.Conv(4, (2, 2), padding="VALID", name="conv1")(x))
        return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))


def _grid(weights, cap=None):
    """Independent: the power-of-two exponent and 8-bit integers of ``weights``."""
    p = np.floor(np.log2(127 / np.abs(weights).max()))
    p = min(p, cap) if cap is not None else p
    return p, np.clip(np.round(weights * 2.0**p), -127, 127).astype(np.int64)


def _conv_valid(x, k):
    """``[B, H, W, C] ⊛ [kh, kw, C, O]`` in integer (or float64) arithmetic, no padding."""
    kh, kw = k.shape[:2]
    out = np.zeros((x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1, k.shape[-1]), np.result_type(x, k))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.einsum("bhwc,hwco->bo", x[:, i : i + kh, j : j + kw], k)
    return out


def integer_simulation(x, params, num_steps, state_bits):
    """The chip's computation in NumPy integers: saturating integer IF layers reading spike counts."""
    cap = state_bits - 4
    theta0, theta1 = float(params["act0"]["threshold"]), float(params["act1"]["threshold"])
    p0, k0 = _grid(np.asarray(params["conv0"]["kernel"], np.float64) / theta0, cap)
    b0 = np.round(np.asarray(params["conv0"]["bias"], np.float64) / theta0 * 2.0**p0).astype(np.int64)
    # conv1 reads a 2×2 sum pool of act0's spikes: its balanced weights W·θ0/θ1 divided by the area 4.
    p1, k1 = _grid(np.asarray(params["conv1"]["kernel"], np.float64) * theta0 / theta1 / 4, cap)
    b1 = np.round(np.asarray(params["conv1"]["bias"], np.float64) / theta1 * 2.0**p1).astype(np.int64)
    p2, k2 = _grid(np.asarray(params["head"]["kernel"], np.float64) * theta1)
    low, high = -(2 ** (state_bits - 1)), 2 ** (state_bits - 1) - 1
    current0 = np.round(_conv_valid(x.astype(np.float64), k0.astype(np.float64)) + b0).astype(np.int64)
    v0 = np.full(current0.shape, int(2 ** (p0 - 1)))
    v1 = None
    logits = []
    for _ in range(num_steps):
        m = np.clip(v0 + current0, low, high)
        s0 = (m >= 2**p0).astype(np.int64)
        v0 = m - s0 * int(2**p0)
        b, h, w, c = s0.shape
        counts = s0.reshape(b, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4))
        current1 = _conv_valid(counts, k1) + b1
        v1 = np.full(current1.shape, int(2 ** (p1 - 1))) if v1 is None else v1
        m = np.clip(v1 + current1, low, high)
        s1 = (m >= 2**p1).astype(np.int64)
        v1 = m - s1 * int(2**p1)
        logits.append((s1.reshape(b, -1) @ k2) * 2.0**-p2 + np.asarray(params["head"]["bias"], np.float64))
    return np.stack(logits)


@pytest.mark.parametrize("state_bits", [16, 8])
def test_int8_network_equals_an_independent_integer_simulation(state_bits):
    model = ConvChain()
    images = jax.random.uniform(jax.random.key(0), (5, 8, 8, 2))
    variables = model.init(jax.random.key(1), images)
    variables["params"]["act0"]["threshold"] = jnp.asarray(0.6)
    variables["params"]["act1"]["threshold"] = jnp.asarray(0.3)
    variables["params"]["conv0"]["bias"] = jax.random.normal(jax.random.key(2), (3,)) * 0.3
    variables["params"]["conv1"]["bias"] = jax.random.normal(jax.random.key(3), (4,)) * 0.1
    snn_variables = snnjax.convert_variables(variables)
    quantized, info = hardware.quantize_for_hardware(
        snn_variables, model=model, inputs=images, weight_bits=8, state_bits=state_bits
    )
    assert [layer["pool_area"] for layer in info["layers"]] == [1, 4, 1]
    snn = snnjax.spiking_model(model, neuron="fixed_point_if", neuron_options={"bits": state_bits})
    logits = snnjax.spiking_apply(snn, quantized, images, 6)
    expected = integer_simulation(np.asarray(images), jax.device_get(snn_variables["params"]), 6, state_bits)
    assert np.ptp(expected, axis=(0, 1)).min() > 0  # every logit varies over steps and images
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)


def test_a_residual_model_is_refused_by_name():
    model = snnjax.ResNet20(num_classes=3, activation=QCFS4)
    variables = snnjax.convert_variables(
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False), fold_bn=True, model=model,
        inputs=jnp.zeros((1, 8, 8, 3)),
    )  # fmt: skip
    with pytest.raises(ValueError, match="not a plain chain"):
        hardware.quantize_for_hardware(variables, model=model, inputs=jnp.zeros((1, 8, 8, 3)), weight_bits=8)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hardware_state_bits": 16}, "needs config.hardware_weight_bits"),
        ({"hardware_weight_bits": 8, "fold_bn": False}, "fold_bn=True"),
        ({"hardware_weight_bits": 8, "fold_bn": True, "balancing": "weights"}, "balancing='threshold'"),
        ({"hardware_weight_bits": 1}, "must be 0 .float. or 2..16"),
        ({"hardware_weight_bits": 8, "fold_bn": True, "snn_dtype": "bfloat16"}, "snn_dtype='float32'"),
        ({"snn_neuron": "fixed_point_if"}, "config.snn_neuron='fixed_point_if' is invalid"),
        (
            {"hardware_weight_bits": 8, "fold_bn": True, "hardware_weight_scale": "tensor"},
            "hardware_weight_scale",
        ),
    ],
)
def test_config_refuses_undefined_hardware_forms(overrides, message):
    config = ci_tiny.get_config()
    for field, value in overrides.items():
        config[field] = value
    with pytest.raises(ValueError, match=message):
        config_lib.validate_config(config)


@pytest.mark.slow
def test_convert_reports_the_hardware_form(tiny_workdir):
    from snnjax.experiment import pipeline

    workdir, _ = tiny_workdir
    overrides = {"fold_bn": True, "hardware_weight_bits": 8, "hardware_state_bits": 16, "snn_num_steps": 4}
    result = pipeline.convert_and_evaluate(None, str(workdir), overrides | {"report_examples": 16})
    assert result["neuron"] == "fixed_point_if" and result["neuron_options"] == {"bits": 16}
    assert result["hardware"]["weight_bits"] == 8 and result["hardware"]["layers"][-1]["name"] == "head"
    float_result = pipeline.convert_and_evaluate(None, str(workdir), {"fold_bn": True, "snn_num_steps": 4})
    # 8-bit weights and a 16-bit membrane on a trained network: within a few images of float32.
    assert abs(result["snn_accuracy"]["4"] - float_result["snn_accuracy"]["4"]) <= 0.03


def test_quantize_input_rounds_to_the_dyadic_grid_half_to_even():
    x = jnp.asarray([0.1, -0.3, 1.5 / 256, 2.5 / 256, 3.0, -1e-4], jnp.float32)
    # 0.1·256 = 25.6 → 26; −76.8 → −77; 1.5 → 2 and 2.5 → 2 (half to even); 768 stays; −0.0256 → −0.
    expected = np.asarray([26, -77, 2, 2, 768, 0]) / 256
    np.testing.assert_array_equal(hardware.quantize_input(x, 8), expected)
    assert hardware.quantize_input(x, 8).dtype == jnp.float32
    np.testing.assert_array_equal(hardware.quantize_input(x, 0), [0, -0, 0, 0, 3, -0])
    with pytest.raises(ValueError, match="fraction_bits must be an int in 0..16"):
        hardware.quantize_input(x, 17)
