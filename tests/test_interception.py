"""Converting users' own Flax models: activations created inside __call__, nn.Sequential, residual blocks.

Each SNN is checked against an independent per-step simulation written here with explicit membranes.
Weights, inputs, thresholds and BatchNorm statistics are dyadic (BatchNorm with ε = 0 and variances
whose square roots are powers of two), so every sum is exact in float32 and the checks are bitwise.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import snnjax
from snnjax import io as interop
from snnjax.core import activations, surrogates

QCFS4 = functools.partial(activations.qcfs, levels=4)
V0 = 0.5


class InsideCall(nn.Module):
    """Conv → BatchNorm → activation created inside __call__ (auto-named) → avg-pool → flatten → Dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=0.0)(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))  # batch-only flatten
        return nn.Dense(3)(x)


def sequential():
    act = functools.partial(snnjax.ThresholdActivation, fn=QCFS4, threshold_init=1.0)
    return nn.Sequential([nn.Dense(6), act(), nn.Dense(5), act(), nn.Dense(3)])


class Block(nn.Module):
    """A user-written residual block with named activations and a train flag."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = functools.partial(snnjax.ThresholdActivation, fn=QCFS4, threshold_init=1.0)
        y = nn.Conv(self.features, (3, 3), use_bias=False, name="c1")(x)
        y = act(name="inner")(y)
        y = nn.Conv(self.features, (3, 3), use_bias=False, name="c2")(y)
        return act(name="out")(x + y)


class Residual(nn.Module):
    """Nested modules: a stem, a residual Block submodule, a head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), name="stem")(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0, name="stem_act")(x)
        x = Block(4, name="block")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3, name="head")(x)


def dyadic(tree, seed, scale=4, thresholds=(1.0,)):
    """Replaces every leaf by multiples of 1/8 in [-scale/8, scale/8] (variances 1 or 4)."""
    flat = traverse_util.flatten_dict(tree)
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flat.items():
        if path[-1] == "threshold":
            value = rng.choice(thresholds, leaf.shape)
        elif path[-1] == "var":
            value = rng.choice([1.0, 4.0], leaf.shape)
        elif path[-1] == "scale":
            value = rng.choice([0.5, 1.0, 2.0], leaf.shape)
        else:
            value = rng.integers(-scale, scale + 1, leaf.shape) / 8.0
        out[path] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(out)


def build(model, input_shape, seed=0, batch=2, thresholds=(1.0,)):
    variables = model.init(jax.random.key(0), jnp.zeros((batch, *input_shape)))
    variables = {
        c: dyadic(tree, seed + i, thresholds=thresholds) for i, (c, tree) in enumerate(variables.items())
    }
    pixels = np.random.default_rng(seed + 7).integers(0, 9, (batch, *input_shape)) / 8.0
    images = jnp.asarray(pixels, jnp.float32)
    return variables, images


def if_step_ref(v, z, theta):
    m = v + z
    out = np.where(m >= theta, theta, 0.0).astype(np.float32)
    return m - out, out


def conv_ref(x, kernel, bias=None):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return np.asarray(y) if bias is None else np.asarray(y) + np.asarray(bias)


def reference_inside_call(v, x, steps):
    p, s = v["params"], v["batch_stats"]
    theta = float(p["ThresholdActivation_0"]["threshold"])
    membrane, logits = None, []
    for _ in range(steps):
        y = conv_ref(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
        y = (y - s["BatchNorm_0"]["mean"]) / np.sqrt(s["BatchNorm_0"]["var"]) * p["BatchNorm_0"]["scale"] + p[
            "BatchNorm_0"
        ]["bias"]
        membrane = np.full_like(y, V0 * theta) if membrane is None else membrane
        membrane, spikes = if_step_ref(membrane, y, theta)
        pooled = spikes.reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4))
        logits.append(pooled.reshape(2, -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return np.stack(logits)


def reference_sequential(v, x, steps):
    p = v["params"]
    membranes, logits = [None, None], []
    for _ in range(steps):
        h = x
        for i, (dense, act) in enumerate((("layers_0", "layers_1"), ("layers_2", "layers_3"))):
            z = np.asarray(h @ p[dense]["kernel"] + p[dense]["bias"])
            theta = float(p[act]["threshold"])
            membranes[i] = np.full_like(z, V0 * theta) if membranes[i] is None else membranes[i]
            membranes[i], h = if_step_ref(membranes[i], z, theta)
        logits.append(h @ p["layers_4"]["kernel"] + p["layers_4"]["bias"])
    return np.stack(logits)


def reference_residual(v, x, steps):
    p = v["params"]
    m = {}
    logits = []

    def act(name, z, theta):
        m.setdefault(name, np.full_like(z, V0 * theta))
        m[name], out = if_step_ref(m[name], z, theta)
        return out

    for _ in range(steps):
        h = act(
            "stem", conv_ref(x, p["stem"]["kernel"], p["stem"]["bias"]), float(p["stem_act"]["threshold"])
        )
        b = p["block"]
        y = act("inner", conv_ref(h, b["c1"]["kernel"]), float(b["inner"]["threshold"]))
        y = conv_ref(y, b["c2"]["kernel"])
        h = act("out", h + y, float(b["out"]["threshold"]))
        logits.append(h.mean(axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"])
    return np.stack(logits)


CASES = {
    "inside_call": (InsideCall, (8, 8, 1), reference_inside_call),
    "sequential": (sequential, (4,), reference_sequential),
    "residual": (Residual, (4, 4, 2), reference_residual),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["layer", "step"])
def test_user_model_snn_equals_an_independent_per_step_simulation(case, mode):
    factory, input_shape, reference = CASES[case]
    ann = factory()
    variables, images = build(ann, input_shape)
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann, v0=V0, mode=mode)
    logits = snnjax.spiking_apply(snn, snn_variables, images, 6)
    expected = reference(jax.tree.map(np.asarray, snn_variables), np.asarray(images), 6)
    np.testing.assert_array_equal(np.asarray(logits), expected)


def test_layer_and_step_modes_agree_and_the_run_is_not_trivial():
    ann = Residual()
    variables, images = build(ann, (4, 4, 2), seed=3)
    snn_variables = snnjax.convert_variables(variables)
    layer = snnjax.spiking_apply(snnjax.spiking_model(ann), snn_variables, images, 5)
    step = snnjax.spiking_apply(snnjax.spiking_model(ann, mode="step"), snn_variables, images, 5)
    np.testing.assert_array_equal(layer, step)
    _, record = snnjax.spiking_model(ann).apply_recorded(
        snn_variables, jnp.broadcast_to(images, (5, *images.shape))
    )
    assert list(record) == ["stem_act", "block/inner", "block/out"]
    assert all(0 < float(jnp.mean(y != 0)) < 1 for _, y in record.values())  # neurons fire, not all


def test_reports_run_on_a_user_model_with_a_batch_only_flatten():
    ann = InsideCall()
    variables, images = build(ann, (8, 8, 1), batch=4)  # 4 fake devices
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann, v0=V0)
    batches = [(np.asarray(images), np.zeros(4, np.int32), np.ones(4, bool))]
    report = snnjax.spiking_layer_report(ann, variables, snn, snn_variables, batches, (2, 4), V0)
    assert [layer["name"] for layer in report["layers"]] == ["ThresholdActivation_0"]
    costs = snnjax.linear_layer_costs(ann, variables, (8, 8, 1))
    assert [c["name"] for c in costs] == ["Conv_0", "Dense_0"] and costs[1][
        "fed_by"
    ] == "ThresholdActivation_0"
    assert costs[0]["macs"] == 8 * 8 * 4 * 9 and costs[1]["macs"] == 64 * 3


def test_time_major_images_on_the_static_path_are_refused():
    ann = InsideCall()
    variables, images = build(ann, (8, 8, 1))
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann)
    sequence = jnp.broadcast_to(images, (3, *images.shape))
    with pytest.raises(ValueError, match=r"reads rank 4.*shape \(3, 2, 8, 8, 1\).*spiking_apply_sequence"):
        snnjax.spiking_apply(snn, snn_variables, sequence, 3)
    # The explicit sequence path gives the static result for a constant sequence.
    np.testing.assert_array_equal(
        snnjax.spiking_apply_sequence(snn, snn_variables, sequence),
        snnjax.spiking_apply(snn, snn_variables, images, 3),
    )


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_non_finite_pixels_give_nan_outputs_not_a_silent_class(mode):
    """A NaN membrane never reaches v >= θ: the poisoned example must come out NaN, as from the ANN."""
    ann = InsideCall()
    variables, images = build(ann, (8, 8, 1), batch=3)
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann, mode=mode)
    clean = snnjax.spiking_apply(snn, snn_variables, images, 4)
    bad = images.at[0, 3, 3, 0].set(jnp.nan).at[1].set(jnp.inf)
    out = jax.jit(lambda x: snnjax.spiking_apply(snn, snn_variables, x, 4))(bad)
    assert np.isnan(np.asarray(ann.apply(variables, bad[:1]))).all()  # the ANN's answer
    assert np.isnan(out[:, :2]).all()
    np.testing.assert_array_equal(out[:, 2], clean[:, 2])  # the clean example is untouched
    # A sequence: NaN from the step the bad input arrives on, finite before.
    sequence = jnp.broadcast_to(images, (4, *images.shape)).at[2, 1, 0, 0, 0].set(jnp.nan)
    out = snnjax.spiking_apply_sequence(snn, snn_variables, sequence)
    assert np.isfinite(out[:2]).all() and np.isnan(out[2:, 1]).all()
    assert np.isfinite(out[:, [0, 2]]).all()


def test_sequence_input_is_checked_against_the_first_layer_and_num_steps():
    ann = InsideCall()
    variables, images = build(ann, (8, 8, 1), batch=2)
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann)
    with pytest.raises(ValueError, match=r"reads rank 4\); got steps of shape \(8, 8, 1\).*spiking_apply"):
        snnjax.spiking_apply_sequence(snn, snn_variables, images)  # a static batch
    with pytest.raises(ValueError, match=r"reads rank 4 with a last axis of 1\); got steps of shape"):
        snnjax.spiking_apply_sequence(snn, snn_variables, jnp.zeros((3, 2, 8, 8, 2)))
    batch_major = jnp.zeros((2, 3, 8, 8, 1))  # [B, T, ...] with B = 2, T = 3
    with pytest.raises(ValueError, match=r"leading \(time\) axis is 2, not num_steps=3.*swapaxes"):
        snnjax.spiking_apply_sequence(snn, snn_variables, batch_major, num_steps=3)
    assert snnjax.spiking_apply_sequence(snn, snn_variables, batch_major, num_steps=2).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"last axis of 1\), repeated every step; got shape \(2, 8, 8, 3\)"):
        snnjax.spiking_apply(snn, snn_variables, jnp.zeros((2, 8, 8, 3)), 2)


class StrayFunction(nn.Module):
    """snnjax layers plus an activation written as a function, inside a submodule."""

    function: object = nn.relu

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(x)
        x = nn.Sequential([nn.Conv(4, (3, 3)), self.function], name="tail")(x)
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_a_stray_relu_function_is_a_site_refused_until_calibrated_then_converted():
    for function in (nn.relu, jax.nn.relu):
        ann = StrayFunction(function)
        variables, images = build(ann, (8, 8, 1))
        snn_variables = snnjax.convert_variables(variables)
        for mode in ("layer", "step"):
            snn = snnjax.spiking_model(ann, mode=mode)
            with pytest.raises(ValueError, match=r"site .tail/relu_0. has no threshold θ.*calibrate"):
                snnjax.spiking_apply(snn, snn_variables, images, 2)
        calibrated = snnjax.calibrate_thresholds(ann, variables, images)
        assert set(calibrated["sites"]) == {"tail"} and set(calibrated["sites"]["tail"]) == {"relu_0"}
        snn_variables = snnjax.convert_variables(calibrated)
        layer, step = (
            snnjax.spiking_apply(snnjax.spiking_model(ann, mode=mode), snn_variables, images, 3)
            for mode in ("layer", "step")
        )
        np.testing.assert_allclose(layer, step, rtol=1e-5, atol=1e-5)


# nn.silu is a jax.jit function: inlined while the converter intercepts, it is named by its primitive.
@pytest.mark.parametrize(("function", "name"), [(nn.gelu, "tanh"), (nn.silu, "logistic"), (jnp.tanh, "tanh")])
def test_an_activation_function_left_in_the_snn_is_refused_naming_the_call(function, name):
    ann = StrayFunction(function)
    variables, images = build(ann, (8, 8, 1))
    snn_variables = snnjax.convert_variables(variables)
    for mode in ("layer", "step"):
        snn = snnjax.spiking_model(ann, mode=mode)
        with pytest.raises(ValueError, match=rf"cannot make spiking: {name} \(in module .StrayFunction/tail"):
            snnjax.spiking_apply(snn, snn_variables, images, 2)
    # The same model with the function written as a snnjax layer (θ calibrated) converts.
    layer = StrayFunction(snnjax.Activation(snnjax.relu))
    layer_variables = snnjax.calibrate_thresholds(layer, build(layer, (8, 8, 1))[0], images)
    out = snnjax.spiking_apply(
        snnjax.spiking_model(layer), snnjax.convert_variables(layer_variables), images, 2
    )
    assert np.isfinite(out).all()


def test_calibrating_a_model_without_parameter_free_sites_says_what_to_do():
    ann = StrayFunction(jnp.abs)  # QCFS layers only: nothing to calibrate
    variables, images = build(ann, (8, 8, 1))
    with pytest.raises(ValueError, match=r"no parameter-free activation site.*convert_variables"):
        snnjax.calibrate_thresholds(ann, variables, images)


def test_num_steps_accepts_numpy_ints_and_refuses_traced_values():
    ann = sequential()
    variables, images = build(ann, (4,))
    snn_variables = snnjax.convert_variables(variables)
    snn = snnjax.spiking_model(ann)
    assert snnjax.spiking_apply(snn, snn_variables, images, np.int64(3)).shape == (3, 2, 3)
    with pytest.raises(ValueError, match="must be static"):
        jax.jit(lambda t: snnjax.spiking_apply(snn, snn_variables, images, t))(3)


def test_a_model_without_activation_sites_is_refused():
    ann = nn.Sequential([nn.Dense(4), jnp.abs, nn.Dense(2)])
    variables = ann.init(jax.random.key(0), jnp.zeros((1, 3)))
    variables["params"]["layers_0"]["threshold"] = jnp.ones(())  # convertible variables, no site
    with pytest.raises(ValueError, match="calls no activation the converter can make spiking"):
        snnjax.spiking_apply(snnjax.spiking_model(ann), variables, jnp.zeros((1, 3)), 2)


def test_an_uncalibrated_relu_layer_is_named():
    ann = nn.Sequential([nn.Dense(4), snnjax.Activation(fn=jax.nn.relu), nn.Dense(2)])
    variables = ann.init(jax.random.key(0), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="'layers_1' has no 'threshold'.*calibrate_thresholds"):
        snnjax.spiking_apply(snnjax.spiking_model(ann), variables, jnp.zeros((1, 3)), 2)


# Gradients.


def test_if_neuron_gradient_is_zero_without_a_surrogate():
    z = jnp.array([[0.3, 0.9], [0.6, -0.2]])
    grad = jax.grad(lambda z: jnp.sum(snnjax.if_neuron(z, 1.0, 0.5)))(z)
    np.testing.assert_array_equal(grad, np.zeros_like(z))


@pytest.mark.parametrize(
    "surrogate, derivative",
    [
        (surrogates.triangle(1.0), lambda x: max(0.0, 1.0 - abs(x))),
        (surrogates.triangle(0.5), lambda x: max(0.0, 0.5 - abs(x)) / 0.25),
        (surrogates.arctan(2.0), lambda x: 2.0 / (2.0 * (1.0 + (np.pi * 2.0 * x / 2.0) ** 2))),
        (surrogates.straight_through(), lambda x: 1.0),
    ],
    ids=["triangle1", "triangle0.5", "arctan2", "straight_through"],
)
def test_surrogate_gradient_matches_its_formula_by_hand(surrogate, derivative):
    # One neuron, θ = 2, v0 = ½, two steps: v1 = 1 + z1, s1 = H(v1 − 2), out1 = 2·s1, then
    # v2 = v1 − out1 + z2, s2 = H(v2 − 2). With g = the surrogate derivative, by the chain rule:
    # d(out1 + out2)/dz2 = 2·g(x2) and d/dz1 = 2·g(x1) + 2·g(x2)·(1 − 2·g(x1)).
    theta, z = 2.0, jnp.array([1.25, 1.5])
    x1 = 1.0 + 1.25 - theta  # 0.25: fires
    x2 = (1.0 + 1.25 - theta) + 1.5 - theta  # -0.25: silent, but inside every surrogate's support
    grad = jax.grad(lambda z: jnp.sum(snnjax.if_neuron(z, theta, 0.5, surrogate=surrogate)))(z)
    g1, g2 = derivative(x1), derivative(x2)
    np.testing.assert_allclose(grad, [theta * g1 + theta * g2 * (1 - theta * g1), theta * g2], rtol=1e-6)
    # The forward pass is the exact neuron's.
    np.testing.assert_array_equal(
        snnjax.if_neuron(z, theta, 0.5, surrogate=surrogate), snnjax.if_neuron(z, theta, 0.5)
    )


def test_a_converted_user_model_can_be_fine_tuned_with_a_surrogate():
    ann = sequential()
    variables, images = build(ann, (4,))
    snn_variables = snnjax.convert_variables(variables)

    def loss(params, snn):
        logits = snnjax.spiking_apply(snn, {"params": params}, images, 4)
        return jnp.sum(snnjax.cumulative_mean_logits(logits)[-1] ** 2)

    plain = jax.grad(loss)(snn_variables["params"], snnjax.spiking_model(ann))
    assert not np.any(plain["layers_0"]["kernel"])  # no gradient reaches the first layer through spikes
    tuned = jax.grad(loss)(
        snn_variables["params"], snnjax.spiking_model(ann, surrogate=surrogates.triangle())
    )
    assert np.any(tuned["layers_0"]["kernel"]) and np.all(np.isfinite(tuned["layers_0"]["kernel"]))
    for mode in ("layer", "step"):  # both modes carry the surrogate, with the same gradients
        snn = snnjax.spiking_model(ann, surrogate=surrogates.triangle(), mode=mode)
        grads = jax.grad(loss)(snn_variables["params"], snn)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), grads, tuned)


# BatchNorm folding by structure.


class DenseBN(nn.Module):
    """Dense → BatchNorm → activation, and a Conv → BatchNorm pair inside a submodule."""

    @nn.compact
    def __call__(self, x):
        x = Encoder(name="encoder")(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(6)(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=0.0)(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(x)
        return nn.Dense(3)(x)


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(2, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=0.0, name="norm")(x)
        return snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(x)


@pytest.mark.parametrize("factory, input_shape", [(InsideCall, (8, 8, 1)), (DenseBN, (4, 4, 1))])
def test_batchnorm_folded_by_structure_equals_unfolded(factory, input_shape):
    ann = factory()
    variables, images = build(ann, input_shape, seed=5)
    unfolded = snnjax.convert_variables(variables)
    folded = snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=images)
    assert "batch_stats" not in folded
    for mode in ("layer", "step"):
        snn = snnjax.spiking_model(ann, mode=mode, fold_bn=True)
        np.testing.assert_array_equal(
            snnjax.spiking_apply(snn, folded, images, 5),
            snnjax.spiking_apply(snnjax.spiking_model(ann), unfolded, images, 5),
        )


def test_structure_walk_finds_layers_whatever_their_names():
    from snnjax.conversion.structure import trace_structure

    ann = DenseBN()
    variables, images = build(ann, (4, 4, 1))
    calls = trace_structure(ann, variables, images)
    assert [(c.name, c.kind) for c in calls] == [
        ("encoder/Conv_0", "conv"),
        ("encoder/norm", "batchnorm"),
        ("encoder/ThresholdActivation_0", "activation"),
        ("Dense_0", "dense"),
        ("BatchNorm_0", "batchnorm"),
        ("ThresholdActivation_0", "activation"),
        ("Dense_1", "dense"),
    ]
    assert [c.fed_by for c in calls] == [None, 0, 1, None, 3, 4, 5]  # the flatten makes a new array


class BatchNormAfterActivation(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(nn.Dense(4)(x))
        x = nn.BatchNorm(use_running_average=True, name="late_bn")(x)
        return nn.Dense(2)(x)


class SharedOutput(nn.Module):
    """The conv output feeds its BatchNorm and also a residual add: folding would change the add."""

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(1, (3, 3))(x)
        z = nn.BatchNorm(use_running_average=True, epsilon=0.0)(y)
        z = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(z + y)
        return nn.Dense(2)(z.reshape((z.shape[0], -1)))


def test_unfoldable_batchnorm_is_named():
    ann = BatchNormAfterActivation()
    variables, images = build(ann, (3,))
    with pytest.raises(ValueError, match=r"cannot fold BatchNorm \['late_bn'\]"):
        snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=images)
    with pytest.raises(ValueError, match="pass model= and inputs="):  # by name: no ConvBN block here
        snnjax.convert_variables(variables, fold_bn=True)
    plain = sequential()
    plain_variables, plain_images = build(plain, (4,))
    with pytest.raises(ValueError, match="has no Conv/Dense → BatchNorm pair"):
        snnjax.fold_batchnorm(plain_variables, model=plain, inputs=plain_images)
    shared = SharedOutput()
    shared_variables, shared_images = build(shared, (4, 4, 1), seed=2)
    with pytest.raises(ValueError, match="changed the ANN's outputs"):
        snnjax.fold_batchnorm(shared_variables, model=shared, inputs=shared_images)


# Weight balancing and operation counts from the structure walk.


def test_weight_balancing_by_structure_keeps_every_spike_of_a_user_chain():
    ann = DenseBN()
    variables, images = build(ann, (4, 4, 1), seed=11, thresholds=(0.5, 2.0))
    folded = snnjax.convert_variables(variables, fold_bn=True, model=ann, inputs=images)
    balanced = snnjax.balance_weights(folded, model=ann, inputs=images)
    thresholds = [
        v for k, v in traverse_util.flatten_dict(balanced["params"]).items() if k[-1] == "threshold"
    ]
    assert thresholds and all(np.all(np.asarray(t) == 1.0) for t in thresholds)
    snn = snnjax.spiking_model(ann, fold_bn=True)
    # Powers of two rescale exactly, so the balanced SNN's logits are bitwise the threshold form's.
    np.testing.assert_array_equal(
        snnjax.spiking_apply(snn, balanced, images, 6), snnjax.spiking_apply(snn, folded, images, 6)
    )


def test_weight_balancing_by_structure_equals_by_name_on_a_convnet():
    from helpers import QCFS4 as QCFS4_LAYER, init, randomize_variables

    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4_LAYER)
    variables = randomize_variables(init(ann, (8, 8, 1)), threshold=1.5)
    folded = snnjax.convert_variables(variables, fold_bn=True)
    images = jnp.zeros((1, 8, 8, 1))
    by_name = snnjax.balance_weights(folded)
    by_structure = snnjax.balance_weights(folded, model=ann, inputs=images)
    jax.tree.map(np.testing.assert_array_equal, by_structure, by_name)


def test_weight_balancing_refuses_a_residual_model_naming_the_layer():
    ann = Residual()
    variables, images = build(ann, (4, 4, 2))
    with pytest.raises(ValueError, match=r"not a plain chain of layers at 'block/out'"):
        snnjax.balance_weights(snnjax.convert_variables(variables), model=ann, inputs=images)


def test_operation_counts_follow_the_data_flow_of_a_user_residual_block():
    ann = Residual()
    variables, _ = build(ann, (4, 4, 2))
    costs = {c["name"]: c for c in snnjax.linear_layer_costs(ann, variables, (4, 4, 2))}
    assert [(name, c["fed_by"]) for name, c in costs.items()] == [
        ("stem", None),
        ("block/c1", "stem_act"),
        ("block/c2", "block/inner"),
        ("head", "block/out"),
    ]
    assert costs["stem"]["macs"] == 16 * 4 * 2 * 9 and costs["head"]["macs"] == 4 * 3


# NIR export of user models (from the structure graph; a residual add is fan-in) and import back.


@pytest.mark.parametrize(
    "factory, input_shape",
    [(InsideCall, (8, 8, 1)), (sequential, (4,)), (DenseBN, (4, 4, 1)), (Residual, (4, 4, 2))],
)
def test_user_chain_round_trips_through_a_nir_file(tmp_path, factory, input_shape):
    nir = pytest.importorskip("nir")
    ann = factory()
    variables, images = build(ann, input_shape, seed=9, thresholds=(0.5, 1.0, 2.0))
    snn_variables = snnjax.convert_variables(variables)  # BatchNorm is folded by the export
    snn = snnjax.spiking_model(ann, v0=V0)
    graph = interop.export_nir(snn, snn_variables, input_shape, v0=V0, lossy=True)
    nir.write(tmp_path / "user.nir", graph)
    read_snn, read_variables, v0 = interop.import_nir(nir.read(tmp_path / "user.nir"))
    assert v0 == V0
    np.testing.assert_array_equal(
        snnjax.spiking_apply(read_snn, read_variables, images, 6),
        snnjax.spiking_apply(snn, snn_variables, images, 6),
    )


class MaxPooled(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(nn.Conv(2, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(2)(x.reshape((x.shape[0], -1)))


class Scaled(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(nn.Dense(4)(x))
        return nn.Dense(2)(jnp.concatenate([x, x], axis=-1))  # an op NIR export cannot see


class Doubled(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0)(nn.Dense(4)(x))
        return nn.Dense(2)(2.0 * x)  # keeps the shape: only the numerical check can see it


@pytest.mark.parametrize(
    "factory, input_shape, message",
    [
        (Doubled, (3,), r"Doubled computes something between its layers that NIR export cannot see"),
        (MaxPooled, (4, 4, 1), r"a max_pool with padding 'VALID' after 'ThresholdActivation_0'"),
        (Scaled, (3,), r"Dense_1: its input \(8,\) is not what the previous layer gives \(4,\)"),
    ],
)
def test_nir_export_names_what_it_cannot_express(factory, input_shape, message):
    pytest.importorskip("nir")
    ann = factory()
    variables, _ = build(ann, input_shape)
    snn = snnjax.spiking_model(ann)
    with pytest.raises(ValueError, match=message):
        interop.export_nir(snn, snnjax.convert_variables(variables), input_shape, v0=V0, lossy=True)
