"""Converting models of every frontend: Linen with ReLU functions, Flax NNX (snnjax layers or ReLU
functions), and plain JAX functions.

Each frontend writes the same two networks (a Conv → BatchNorm → activation → avg-pool → Dense chain,
and a residual model); the SNN is checked against an independent per-step simulation written here with
explicit membranes, in layer and step mode. Weights, inputs, thresholds and BatchNorm statistics are
dyadic (ε = 0, variances 1 or 4), so every sum is exact in float32 and the checks are bitwise.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

import snnjax
import snnjax.nnx as snx
from snnjax.core import surrogates

QCFS4 = functools.partial(snnjax.qcfs, levels=4)
V0 = 0.5
SHAPE = {"chain": (8, 8, 1), "residual": (4, 4, 2)}


def pixels(case, seed=7, batch=2):
    values = np.random.default_rng(seed).integers(0, 9, (batch, *SHAPE[case])) / 8.0
    return jnp.asarray(values, jnp.float32)


def dyadic_value(name, shape, rng):
    if name == "var":
        return rng.choice([1.0, 4.0], shape)
    if name == "scale":
        return rng.choice([0.5, 1.0, 2.0], shape)
    if name == "threshold":
        return np.ones(shape)
    return rng.integers(-4, 5, shape) / 8.0


def dyadic_tree(tree, seed):
    flat = traverse_util.flatten_dict(tree)
    rng = np.random.default_rng(seed)
    names = sorted(flat, key=str)
    return traverse_util.unflatten_dict(
        {k: jnp.asarray(dyadic_value(k[-1], flat[k].shape, rng), jnp.float32) for k in names}
    )


# --- The independent simulation. ---


def conv_ref(x, kernel, bias=None):
    y = np.asarray(
        jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
    return y if bias is None else y + np.asarray(bias)


class Neurons:
    """IF neurons by site name: inclusive threshold, soft reset, v(0) = ½θ."""

    def __init__(self):
        self.v = {}

    def __call__(self, name, z, theta):
        v = self.v.setdefault(name, np.full_like(z, V0 * theta)) + z
        out = np.where(v >= theta, theta, 0.0).astype(np.float32)
        self.v[name] = v - out
        return out


def reference(case, w, x, steps, theta=1.0):
    """Per-step logits ``[T, B, 3]`` of the case's network with weights ``w`` (a flat dict)."""
    neurons, logits = Neurons(), []
    for _ in range(steps):
        if case == "chain":
            y = conv_ref(x, w["conv_k"], w["conv_b"])
            y = (y - w["bn_mean"]) / np.sqrt(w["bn_var"]) * w["bn_scale"] + w["bn_bias"]
            h = neurons("act", y, theta)
            h = h.reshape(2, 4, 2, 4, 2, 4).mean(axis=(2, 4)).reshape(2, -1)
        else:
            h = neurons("stem", conv_ref(x, w["stem_k"], w["stem_b"]), theta)
            y = neurons("inner", conv_ref(h, w["c1_k"]), theta)
            h = neurons("out", h + conv_ref(y, w["c2_k"]), theta)
            h = h.mean(axis=(1, 2))
        logits.append(h @ np.asarray(w["head_k"]) + np.asarray(w["head_b"]))
    return np.stack(logits)


# --- The networks, one per frontend. ---


class LinenChain(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=0.0, name="bn")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        return nn.Dense(3, name="head")(x)


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = jax.nn.relu(nn.Conv(4, (3, 3), use_bias=False, name="c1")(x))
        return nn.relu(x + nn.Conv(4, (3, 3), use_bias=False, name="c2")(y))


class LinenResidual(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = LinenBlock(name="block")(x)
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def nnx_activation(layers):
    """A snnjax NNX layer (``"qcfs"``, or ``"relu"``: parameter-free) or None (an ``nnx.relu`` call)."""
    if layers == "qcfs":
        return snx.ThresholdActivation(QCFS4, threshold_init=1.0)
    return snx.Activation(snnjax.relu) if layers == "relu" else None


class NNXChain(nnx.Module):
    def __init__(self, rngs, layers=None, epsilon=0.0):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, epsilon=epsilon, rngs=rngs)
        self.act = nnx_activation(layers)
        self.head = nnx.Linear(64, 3, rngs=rngs)

    def __call__(self, x):
        x = self.bn(self.conv(x))
        x = self.act(x) if self.act is not None else nnx.relu(x)
        x = nnx.avg_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        return self.head(x)


class NNXBlock(nnx.Module):
    def __init__(self, rngs, layers):
        self.c1 = nnx.Conv(4, 4, (3, 3), use_bias=False, rngs=rngs)
        self.c2 = nnx.Conv(4, 4, (3, 3), use_bias=False, rngs=rngs)
        self.inner, self.out = nnx_activation(layers), nnx_activation(layers)

    def __call__(self, x):
        y = self.c1(x)
        y = self.inner(y) if self.inner is not None else nnx.relu(y)
        y = x + self.c2(y)
        return self.out(y) if self.out is not None else nnx.relu(y)


class NNXResidual(nnx.Module):
    def __init__(self, rngs, layers=None):
        self.stem = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.stem_act = nnx_activation(layers)
        self.block = NNXBlock(rngs, layers)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        x = self.stem_act(x) if self.stem_act is not None else nnx.relu(x)
        return self.head(self.block(x).mean(axis=(1, 2)))


def conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def channels(v, ndim):
    """A per-channel vector ``[C]`` shaped to broadcast over ``[..., C]`` (rank promotion is an error)."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def function_chain(p, x):
    y = conv(x, p["conv_k"]) + channels(p["conv_b"], 4)
    mean, var, scale, bias = (channels(p[k], 4) for k in ("bn_mean", "bn_var", "bn_scale", "bn_bias"))
    y = jax.nn.relu((y - mean) / jnp.sqrt(var) * scale + bias)
    y = nn.avg_pool(y, (2, 2), (2, 2)).reshape((x.shape[0], -1))
    return y @ p["head_k"] + channels(p["head_b"], 2)


def function_residual(p, x):
    h = jax.nn.relu(conv(x, p["stem_k"]) + channels(p["stem_b"], 4))
    y = jax.nn.relu(conv(h, p["c1_k"]))
    h = jax.nn.relu(h + conv(y, p["c2_k"]))
    return h.mean(axis=(1, 2)) @ p["head_k"] + channels(p["head_b"], 2)


FUNCTION_SHAPES = {
    "chain": {"conv_k": (3, 3, 1, 4), "conv_b": (4,), "bn_mean": (4,), "bn_var": (4,), "bn_scale": (4,),
              "bn_bias": (4,), "head_k": (64, 3), "head_b": (3,)},
    "residual": {"stem_k": (3, 3, 2, 4), "stem_b": (4,), "c1_k": (3, 3, 4, 4), "c2_k": (3, 3, 4, 4),
                 "head_k": (4, 3), "head_b": (3,)},
}  # fmt: skip

# Site names of each frontend's model, in call order, and the reference's names for the same neurons.
SITES = {
    ("linen", "chain"): ["relu_0"],
    ("linen", "residual"): ["relu_0", "block/relu_0", "block/relu_1"],
    ("nnx_functions", "chain"): ["relu_0"],
    ("nnx_functions", "residual"): ["relu_0", "block/relu_0", "block/relu_1"],
    ("nnx_layers", "chain"): ["act"],
    ("nnx_layers", "residual"): ["stem_act", "block/inner", "block/out"],
    ("function", "chain"): ["relu_0"],
    ("function", "residual"): ["relu_0", "relu_1", "relu_2"],
}


def set_sites(variables, names, theta=1.0):
    """``variables`` with θ of every named function site (dyadic, instead of a calibrated percentile)."""
    sites = {tuple(name.split("/")): jnp.float32(theta) for name in names}
    return {**variables, "sites": traverse_util.unflatten_dict(sites)}


def weights_of(frontend, case, variables):
    """The flat weight dict the reference reads, from each frontend's variables."""
    if frontend == "function":
        return variables["params"]
    if frontend == "linen":
        p, s = variables["params"], variables.get("batch_stats", {})
    else:
        p = s = nnx.to_pure_dict(variables["nnx"])
    if case == "chain":
        return {"conv_k": p["conv"]["kernel"], "conv_b": p["conv"]["bias"], "bn_mean": s["bn"]["mean"],
                "bn_var": s["bn"]["var"], "bn_scale": p["bn"]["scale"], "bn_bias": p["bn"]["bias"],
                "head_k": p["head"]["kernel"], "head_b": p["head"]["bias"]}  # fmt: skip
    block = p["block"]
    return {"stem_k": p["stem"]["kernel"], "stem_b": p["stem"]["bias"], "c1_k": block["c1"]["kernel"],
            "c2_k": block["c2"]["kernel"], "head_k": p["head"]["kernel"],
            "head_b": p["head"]["bias"]}  # fmt: skip


def build(frontend, case, seed=0):
    """``(model, ANN variables in the frontend's form, images)`` with dyadic weights."""
    images = pixels(case)
    if frontend == "linen":
        model = {"chain": LinenChain, "residual": LinenResidual}[case]()
        variables = model.init(jax.random.key(0), images)
        return model, {c: dyadic_tree(t, seed + i) for i, (c, t) in enumerate(variables.items())}, images
    if frontend == "function":
        model = {"chain": function_chain, "residual": function_residual}[case]
        rng = np.random.default_rng(seed)
        params = {
            k: jnp.asarray(dyadic_value(k.split("_")[-1], shape, rng), jnp.float32)
            for k, shape in FUNCTION_SHAPES[case].items()
        }
        return model, {"params": params}, images
    cls = {"chain": NNXChain, "residual": NNXResidual}[case]
    model = cls(nnx.Rngs(0), layers="qcfs" if frontend == "nnx_layers" else None)
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, dyadic_tree(nnx.to_pure_dict(state), seed))
    nnx.update(model, state)
    return model, None, images


def snn_variables_of(frontend, case, model, variables):
    if frontend == "nnx_layers":
        return snnjax.convert_variables(model)
    if frontend == "nnx_functions":
        variables = {"nnx": nnx.state(model)}
    return snnjax.convert_variables(set_sites(variables, SITES[(frontend, case)]))


FRONTENDS = ["linen", "nnx_layers", "nnx_functions", "function"]


@pytest.mark.parametrize("case", ["chain", "residual"])
@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("mode", ["layer", "step"])
def test_snn_equals_an_independent_per_step_simulation(frontend, case, mode):
    model, variables, images = build(frontend, case)
    snn_variables = snn_variables_of(frontend, case, model, variables)
    snn = snnjax.spiking_model(model, v0=V0, mode=mode)
    logits = snnjax.spiking_apply(snn, snn_variables, images, 6)
    weights = jax.tree.map(np.asarray, weights_of(frontend, case, snn_variables))
    expected = reference(case, weights, np.asarray(images), 6)
    np.testing.assert_array_equal(np.asarray(logits), expected)
    # The sites are named by module path and call order, and every one of them spikes.
    _, record = snnjax.spiking_model(model, v0=V0).apply_recorded(
        snn_variables, jnp.broadcast_to(images, (6, *images.shape))
    )
    assert list(record) == SITES[(frontend, case)]
    assert all(0 < float(jnp.mean(y != 0)) < 1 for _, y in record.values())


@pytest.mark.parametrize("frontend", ["linen", "nnx_layers", "nnx_functions"])
def test_batchnorm_folded_equals_unfolded(frontend):
    model, variables, images = build(frontend, "chain", seed=3)
    snn_variables = snn_variables_of(frontend, "chain", model, variables)
    folded = snnjax.convert_variables(snn_variables, fold_bn=True, model=model, inputs=images)
    snn = snnjax.spiking_model(model, v0=V0)
    np.testing.assert_array_equal(
        snnjax.spiking_apply(snn, folded, images, 6), snnjax.spiking_apply(snn, snn_variables, images, 6)
    )
    if frontend == "linen":  # Linen's BatchNorm keeps only the folded bias
        assert "batch_stats" not in folded and set(folded["params"]["bn"]) == {"bias"}
        return
    weights, unfolded = weights_of(frontend, "chain", folded), weights_of(frontend, "chain", snn_variables)
    assert not np.array_equal(weights["conv_k"], unfolded["conv_k"])  # the gain went into the kernel
    # NNX keeps its BatchNorm, computing exactly x + bias (ε = 0 here: var = 1, mean = 0, scale = 1).
    np.testing.assert_array_equal(weights["bn_var"], np.ones(4))
    np.testing.assert_array_equal(weights["bn_mean"], np.zeros(4))
    np.testing.assert_array_equal(weights["bn_scale"], np.ones(4))
    assert not np.array_equal(
        np.asarray(weights_of(frontend, "chain", {"nnx": nnx.state(model)})["bn_var"]), np.ones(4)
    )  # the model itself is unchanged


def test_nnx_batchnorm_with_epsilon_folds_to_an_exact_bias():
    model = NNXChain(nnx.Rngs(1), layers="qcfs", epsilon=1e-5)
    images = pixels("chain")
    model.bn.mean[...] = jnp.array([0.1, -0.2, 0.3, 0.0])
    model.bn.var[...] = jnp.array([0.5, 2.0, 1.5, 1.0])
    folded = snnjax.convert_variables(model, fold_bn=True, inputs=images)
    bn = nnx.to_pure_dict(folded["nnx"])["bn"]
    assert np.all(bn["var"] + np.float32(1e-5) == np.float32(1.0))  # rsqrt(var + ε) is exactly 1
    snn = snnjax.spiking_model(model)
    np.testing.assert_allclose(
        snnjax.spiking_apply(snn, folded, images, 4),
        snnjax.spiking_apply(snn, snnjax.convert_variables(model), images, 4),
        rtol=1e-5,
        atol=1e-5,
    )


# --- Calibration. ---


class LinenLayersBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = snnjax.Activation(snnjax.relu, name="inner")(nn.Conv(4, (3, 3), use_bias=False, name="c1")(x))
        return snnjax.Activation(snnjax.relu, name="out")(
            x + nn.Conv(4, (3, 3), use_bias=False, name="c2")(y)
        )


class LinenLayers(nn.Module):
    """LinenResidual with its ReLUs written as snnjax.Activation layers (the same weight tree)."""

    @nn.compact
    def __call__(self, x):
        x = snnjax.Activation(snnjax.relu, name="stem_act")(nn.Conv(4, (3, 3), name="stem")(x))
        x = LinenLayersBlock(name="block")(x)
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def site(tree, key):
    return functools.reduce(lambda node, part: node[part], key, tree)


@pytest.mark.parametrize("per_channel", [False, True])
def test_calibrating_relu_functions_gives_the_thresholds_of_activation_layers(per_channel):
    """θ of every ReLU function site, in every frontend, equals θ of the same snnjax.Activation layer."""
    model, variables, images = build("linen", "residual")
    calibrate = functools.partial(snnjax.calibrate_thresholds, percentile=90.0, per_channel=per_channel)
    by_layer = calibrate(LinenLayers(), variables, images)["params"]
    want = [by_layer["stem_act"]["threshold"], by_layer["block"]["inner"]["threshold"],
            by_layer["block"]["out"]["threshold"]]  # fmt: skip
    assert want[0].shape == ((4,) if per_channel else ())
    got = {"linen": [site(calibrate(model, variables, images)["sites"], k) for k in
                     (("relu_0",), ("block", "relu_0"), ("block", "relu_1"))]}  # fmt: skip
    state = nnx_state_from(variables)
    nnx_functions, nnx_layers = NNXResidual(nnx.Rngs(0)), NNXResidual(nnx.Rngs(0), layers="relu")
    for nnx_model in (nnx_functions, nnx_layers):
        nnx.update(nnx_model, state)
    sites = calibrate(nnx_functions, None, images)["sites"]
    got["nnx_functions"] = [site(sites, k) for k in (("relu_0",), ("block", "relu_0"), ("block", "relu_1"))]
    sites = calibrate(nnx_layers, None, images)["sites"]
    got["nnx_layers"] = [site(sites, k) for k in (("stem_act",), ("block", "inner"), ("block", "out"))]
    sites = calibrate(function_residual, weights_of("linen", "residual", variables), images)["sites"]
    got["function"] = [sites["relu_0"], sites["relu_1"], sites["relu_2"]]
    for frontend, thresholds in got.items():
        for have, expected in zip(thresholds, want, strict=True):
            np.testing.assert_array_equal(have, expected, err_msg=frontend)


def nnx_state_from(linen_variables):
    """An NNXResidual state holding a LinenResidual's weights (same names, same layouts)."""
    p = linen_variables["params"]
    state = nnx.state(NNXResidual(nnx.Rngs(0)))
    pure = {"stem": p["stem"], "block": {"c1": p["block"]["c1"], "c2": p["block"]["c2"]}, "head": p["head"]}
    nnx.replace_by_pure_dict(state, pure)
    return state


# --- Refusals. ---


class NNXGelu(nnx.Module):
    def __init__(self, rngs):
        self.layer = nnx.Linear(4, 4, rngs=rngs)
        self.act = snx.ThresholdActivation(QCFS4, threshold_init=1.0)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.gelu(self.act(self.layer(x))))


def test_an_unsupported_function_in_an_nnx_model_is_refused_naming_its_site():
    model = NNXGelu(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"cannot make spiking: (gelu|tanh|erf) \(in module"):
        snnjax.spiking_apply(
            snnjax.spiking_model(model), snnjax.convert_variables(model), jnp.ones((2, 4)), 2
        )


def test_an_uncalibrated_relu_site_is_refused_naming_it():
    model, _, images = build("nnx_functions", "residual")
    with pytest.raises(ValueError, match=r"site 'relu_0' has no threshold θ"):
        snnjax.spiking_apply(snnjax.spiking_model(model), {"nnx": nnx.state(model)}, images, 2)


def test_a_function_model_cannot_fold_batchnorm():
    model, variables, images = build("function", "chain")
    calibrated = snnjax.calibrate_thresholds(model, variables, images)
    with pytest.raises(ValueError, match="plain function.*keep fold_bn=False"):
        snnjax.convert_variables(calibrated, fold_bn=True, model=model, inputs=images)


def test_spiking_model_does_not_change_the_nnx_model():
    model, _, _ = build("nnx_layers", "chain")
    assert model.bn.use_running_average is False
    snnjax.spiking_model(model)
    snnjax.convert_variables(model, fold_bn=True, inputs=pixels("chain"))
    assert model.bn.use_running_average is False  # still in training mode: the SNN took an eval twin


# --- Gradients. ---


class OneNeuron(nnx.Module):
    def __init__(self):
        self.act = snx.ThresholdActivation(QCFS4, threshold_init=2.0)

    def __call__(self, x):
        return self.act(x)


@pytest.mark.parametrize(
    ("surrogate", "derivative"),
    [
        (surrogates.triangle(1.0), lambda x: max(0.0, 1.0 - abs(x))),
        (surrogates.straight_through(), lambda x: 1.0),
    ],
    ids=["triangle1", "straight_through"],
)
def test_surrogate_gradient_through_an_nnx_snn_matches_the_formula_by_hand(surrogate, derivative):
    # One neuron, θ = 2, v0 = ½, inputs z1, z2: d(out1 + out2)/dz2 = 2·g(x2) and
    # d/dz1 = 2·g(x1) + 2·g(x2)·(1 − 2·g(x1)) with x1 = v1 − θ, x2 = v2 − θ.
    model = OneNeuron()
    snn = snnjax.spiking_model(model, surrogate=surrogate)
    variables = snnjax.convert_variables(model)
    theta, z = 2.0, jnp.array([1.25, 1.5])
    x1, x2 = 1.0 + 1.25 - theta, (1.0 + 1.25 - theta) + 1.5 - theta

    def total(z):
        return jnp.sum(snnjax.spiking_apply_sequence(snn, variables, z.reshape(2, 1, 1)))

    grad = jax.grad(total)(z)
    g1, g2 = derivative(x1), derivative(x2)
    np.testing.assert_allclose(grad, [theta * g1 + theta * g2 * (1 - theta * g1), theta * g2], rtol=1e-6)


# --- Inner jit functions. ---


@jax.jit
def jitted_hidden(w, x):
    return jax.nn.relu(x @ w)


def apply_with_inner_jit(p, x):
    return jax.nn.relu(jitted_hidden(p["w1"], x) @ p["w2"]) @ p["w3"]


def test_relus_inside_inner_jits_convert_and_leave_the_users_jit_cache_alone():
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w1": jax.random.normal(keys[0], (4, 8)),
        "w2": jax.random.normal(keys[1], (8, 8)),
        "w3": jax.random.normal(keys[2], (8, 3)),
    }
    images, batch = jax.random.normal(keys[3], (2, 4)), jnp.ones((8, 4))  # 8 = T·B below
    ann_before = apply_with_inner_jit(params, batch)  # the inner jit is now cached at [8, 4]
    calibrated = snnjax.calibrate_thresholds(apply_with_inner_jit, params, batch)
    assert set(calibrated["sites"]) == {"relu_0", "relu_1"}  # the cached relu was seen too
    snn = snnjax.spiking_model(apply_with_inner_jit)
    logits = snnjax.spiking_apply(snn, calibrated, images, 4)
    # The same network written without the inner jit: the same spiking logits.
    np.testing.assert_array_equal(
        logits, snnjax.spiking_apply(snnjax.spiking_model(_without_jit), calibrated, images, 4)
    )
    # And the user's ANN still computes its ReLUs, from the same cache, after the conversion.
    np.testing.assert_array_equal(apply_with_inner_jit(params, batch), ann_before)


def _without_jit(p, x):
    return jax.nn.relu(jax.nn.relu(x @ p["w1"]) @ p["w2"]) @ p["w3"]


def test_balancing_refuses_nnx_models_clearly():
    model, _, images = build("nnx_layers", "chain")
    snn_variables = snnjax.convert_variables(model, fold_bn=True, inputs=images)
    with pytest.raises(ValueError, match="balance_weights reads Linen variables"):
        snnjax.balance_weights(snn_variables, model=model, inputs=images)


@pytest.mark.parametrize("case", ["chain", "residual"])
@pytest.mark.parametrize("frontend", ["linen", "nnx_layers", "nnx_functions"])
def test_nir_export_of_every_frontend_reads_back_as_the_same_snn(tmp_path, frontend, case):
    nir = pytest.importorskip("nir")
    from snnjax import io as interop

    model, variables, images = build(frontend, case)
    snn, snn_variables = snnjax.spiking_model(model), snn_variables_of(frontend, case, model, variables)
    graph = interop.export_nir(snn, snn_variables, SHAPE[case], v0=V0, lossy=True)
    # The graph: BatchNorm folded into the conv, the residual add as two edges into one IF node.
    kinds = sorted(type(node).__name__ for node in graph.nodes.values())
    assert "BatchNorm" not in kinds and kinds.count("IF") == len(SITES[(frontend, case)])
    if case == "residual":
        assert max(sum(1 for _, b in graph.edges if b == name) for name in graph.nodes) == 2
    nir.write(tmp_path / "snn.nir", graph)
    read_snn, read_variables, v0 = interop.import_nir(tmp_path / "snn.nir")
    assert v0 == V0
    np.testing.assert_array_equal(  # dyadic weights: every sum is exact, so the spikes are the same
        snnjax.spiking_apply(read_snn, read_variables, images, 6),
        snnjax.spiking_apply(snn, snn_variables, images, 6),
    )


def test_a_function_model_is_refused_by_nir_export():
    pytest.importorskip("nir")
    from snnjax import io as interop

    _, variables, _ = build("function", "chain")
    snn_variables = snnjax.convert_variables(set_sites(variables, SITES[("function", "chain")]))
    with pytest.raises(ValueError, match="function_chain is a plain function"):
        interop.export_nir(snnjax.spiking_model(function_chain), snn_variables, (8, 8, 1), v0=V0, lossy=True)


@pytest.mark.parametrize("case", ["chain", "residual"])
def test_nnx_inputs_are_checked_against_the_first_layer(case):
    model, _, images = build("nnx_layers", case)
    snn, snn_variables = snnjax.spiking_model(model), snnjax.convert_variables(model)
    with pytest.raises(
        ValueError, match=r"first convolution, '(conv|stem)', reads rank 4.*spiking_apply_sequence"
    ):
        snnjax.spiking_apply(snn, snn_variables, jnp.broadcast_to(images, (3, *images.shape)), 3)
    wrong = jnp.zeros((*images.shape[:-1], images.shape[-1] + 1))
    with pytest.raises(ValueError, match=r"with a last axis of \d\), repeated every step"):
        snnjax.spiking_apply(snn, snn_variables, wrong, 3)
    with pytest.raises(ValueError, match=r"got steps of shape .*spiking_apply"):
        snnjax.spiking_apply_sequence(snn, snn_variables, images)  # a static batch as a sequence


# --- NNX ≡ Linen: every neuron, reports, energy counts, export. ---


class LinenQCFSChain(nn.Module):
    """LinenChain with a snnjax QCFS layer named like NNXChain's."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=0.0, name="bn")(x)
        x = snnjax.ThresholdActivation(fn=QCFS4, threshold_init=1.0, name="act")(x)
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        return nn.Dense(3, name="head")(x)


def twins():
    """The same QCFS chain as an NNX and a Linen model, with equal weights; and images."""
    model, _, images = build("nnx_layers", "chain", seed=5)
    pure = nnx.to_pure_dict(nnx.state(model))
    stats = {"bn": {"mean": pure["bn"].pop("mean"), "var": pure["bn"].pop("var")}}
    return model, LinenQCFSChain(), {"params": pure, "batch_stats": stats}, images


@pytest.mark.parametrize("neuron", sorted(snnjax.conversion.neuron_registry.NEURONS))
def test_an_nnx_model_runs_every_neuron_as_its_linen_twin(neuron):
    model, linen, linen_variables, images = twins()
    options = {"cos": {"prerun": 2}, "cos_network": {"prerun": 2}, "srp": {"prerun": 2}}.get(neuron, {})
    nnx_logits = snnjax.spiking_apply(
        snnjax.spiking_model(model, neuron=neuron, neuron_options=options),
        snnjax.convert_variables(model),
        images,
        4,
    )
    linen_logits = snnjax.spiking_apply(
        snnjax.spiking_model(linen, neuron=neuron, neuron_options=options),
        snnjax.convert_variables(linen_variables),
        images,
        4,
    )
    np.testing.assert_array_equal(nnx_logits, linen_logits)


def test_reports_energy_and_export_of_an_nnx_model_equal_its_linen_twins(tmp_path):
    model, linen, linen_variables, _ = twins()
    images = pixels("chain", batch=4)  # one per fake device
    batches = [(np.asarray(images), np.zeros(4, np.int32), np.ones(4, bool))]
    runs = {
        "nnx": (model, None, snnjax.spiking_model(model), snnjax.convert_variables(model)),
        "linen": (linen, linen_variables, snnjax.spiking_model(linen),
                  snnjax.convert_variables(linen_variables)),
    }  # fmt: skip
    reports, energies, exported = {}, {}, {}
    for name, (ann, ann_variables, snn, snn_variables) in runs.items():
        reports[name] = snnjax.spiking_layer_report(
            ann, ann_variables, snn, snn_variables, batches, (2, 4), V0
        )
        costs = snnjax.linear_layer_costs(ann, ann_variables, (8, 8, 1))
        spikes = snnjax.analysis.reports.method_spikes_per_image(snn, snn_variables, batches, 4)
        energies[name] = snnjax.energy_report(costs, spikes)
        path = str(tmp_path / name)
        snnjax.export_snn(snn, snn_variables, (8, 8, 1), 4, path)
        exported[name] = snnjax.import_snn(path)(images)
        np.testing.assert_array_equal(exported[name], snnjax.spiking_apply(snn, snn_variables, images, 4))
    assert [layer["name"] for layer in reports["nnx"]["layers"]] == ["act"]
    assert reports["nnx"] == reports["linen"]
    assert energies["nnx"] == energies["linen"] and energies["nnx"]["snn_sops"] > 0
    np.testing.assert_array_equal(exported["nnx"], exported["linen"])


def test_snn_calibration_refuses_nnx_models_clearly():
    from snnjax.conversion.calibration import calibrate_snn

    model, images = twins()[0], pixels("chain")
    with pytest.raises(ValueError, match="calibrate_snn keeps its corrections in the Linen"):
        calibrate_snn(snnjax.spiking_model(model), snnjax.convert_variables(model), model, None, [images], 2)


def test_a_model_class_or_a_non_model_is_refused_naming_it():
    with pytest.raises(TypeError, match="NNXChain is a class: pass a model instance"):
        snnjax.spiking_model(NNXChain)
    with pytest.raises(TypeError, match="cannot convert a int"):
        snnjax.spiking_model(3)


# --- Review findings: hidden batches, NNX transforms, lifted Linen transforms. ---


def test_a_site_inside_vmap_over_examples_is_refused_naming_it():
    def single(p, x):  # one example [4] → [3]
        return jax.nn.relu(x @ p["w"]) @ p["v"]

    def model(p, x):
        return jax.vmap(single, (None, 0))(p, x)

    params = {"w": jnp.ones((4, 8)) / 8, "v": jnp.ones((8, 3))}
    variables = {"params": params, "sites": {"relu_0": jnp.float32(1.0)}}
    for mode in ("layer", "step"):
        with pytest.raises(ValueError, match=r"site 'relu_0' sees an input of shape \(8,\).*not the batch"):
            snnjax.spiking_apply(snnjax.spiking_model(model, mode=mode), variables, jnp.ones((2, 4)), 4)
    with pytest.raises(ValueError, match=r"site 'relu_0' runs inside a JAX transformation"):
        snnjax.calibrate_thresholds(model, params, jnp.ones((2, 4)))


class Remat(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)
        self.act = snx.ThresholdActivation(QCFS4, threshold_init=1.0)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.remat(lambda act, z: act(z))(self.act, self.lin(x))
        return self.head(h)


def test_an_nnx_layer_reached_through_an_nnx_transform_is_refused_not_left_analog():
    model = Remat(nnx.Rngs(0))
    with pytest.raises(ValueError, match="called on a copy of the model's module.*nnx.remat"):
        snnjax.spiking_apply(
            snnjax.spiking_model(model), snnjax.convert_variables(model), jnp.ones((2, 4)), 2
        )


def test_calibration_sees_activation_layers_inside_linen_remat():
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return snnjax.Activation(snnjax.relu)(nn.Dense(4)(x))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.remat(Block)()(x))

    model, x = Model(), jax.random.normal(jax.random.key(0), (8, 4))
    calibrated = snnjax.calibrate_thresholds(model, model.init(jax.random.key(1), x), x, percentile=100.0)
    block = calibrated["params"]["CheckpointBlock_0"]
    hidden = jax.nn.relu(x @ block["Dense_0"]["kernel"] + block["Dense_0"]["bias"][None])
    np.testing.assert_allclose(block["Activation_0"]["threshold"], jnp.max(hidden), rtol=1e-6)


def test_nnx_layers_convert_with_their_own_parameterization():
    layer = snx.ThresholdActivation(QCFS4, threshold_init=2.0, parameterization="softplus")
    assert not np.isclose(float(layer.threshold[...]), 2.0)  # stored as softplus⁻¹(2)
    variables = snnjax.convert_variables(layer)
    # One neuron, θ = 2, v(0) = 1, input 1.5: v = 2.5 fires (v → 0.5), 2.0 fires (≥, v → 0), 1.5 does
    # not. With the stored parameter as θ (softplus⁻¹(2) ≈ 1.85) the outputs would be ≈ 1.85.
    z = jnp.full((3, 1, 1), 1.5)
    out = snnjax.spiking_apply_sequence(snnjax.spiking_model(layer), variables, z)
    np.testing.assert_allclose(out[:, 0, 0], [2.0, 2.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="read from each snnjax.nnx.ThresholdActivation"):
        snnjax.convert_variables(layer, threshold_parameterization="softplus")


def test_an_nnx_model_with_unhashable_static_attributes_converts():
    model, _, images = build("nnx_layers", "chain")
    model.config = {"note": "a dict attribute: static, unhashable"}
    snn = snnjax.spiking_model(model)
    assert hash(snn) is not None
    logits = jax.jit(snnjax.spiking_apply, static_argnums=(0, 3))(
        snn, snnjax.convert_variables(model), images, 2
    )
    assert logits.shape == (2, 2, 3)


# --- One structure graph for every frontend. ---

# (kind, sources, ops between them) of each node; INPUT (None) is the model's input.
GRAPHS = {
    "chain": [
        ("conv", (None,), ()),
        ("batchnorm", (0,), ()),
        ("activation", (1,), ()),
        ("avg_pool", (2,), ()),
        ("dense", (3,), ("reshape",)),
    ],
    "residual": [
        ("conv", (None,), ()),
        ("activation", (0,), ()),
        ("conv", (1,), ()),
        ("activation", (2,), ()),
        ("conv", (3,), ()),
        ("activation", (1, 4), ("add",)),  # the residual add: two sources
        ("dense", (5,), ("reduce_sum", "div")),  # the global mean
    ],
}


@pytest.mark.parametrize("case", ["chain", "residual"])
@pytest.mark.parametrize("frontend", ["linen", "nnx_layers", "nnx_functions"])
def test_every_frontend_gives_the_same_structure_graph(frontend, case):
    from snnjax.conversion.frontends import as_model, as_variables
    from snnjax.conversion.structure import trace_structure

    model, variables, images = build(frontend, case)
    calls = trace_structure(as_model(model), as_variables(model, variables), images)
    assert [(c.kind, c.sources, c.ops) for c in calls] == GRAPHS[case]
    direct = [s[0] if not ops and s != (None,) else None for _, s, ops in GRAPHS[case]]
    assert [c.fed_by for c in calls] == direct


def test_a_plain_function_graph_shows_its_adds_and_pooling():
    from snnjax.conversion.frontends import as_model
    from snnjax.conversion.structure import trace_structure

    _, variables, images = build("function", "chain")
    calls = trace_structure(as_model(function_chain), variables, images)
    assert [(c.name, c.kind, c.sources) for c in calls] == [
        ("relu_0", "activation", (None,)),
        ("avg_pool", "avg_pool", (0,)),
    ]
    assert "conv_general_dilated" in calls[0].ops and calls[1].module["window"] == (2, 2)
    _, variables, images = build("function", "residual")
    calls = trace_structure(as_model(function_residual), variables, images)
    assert [c.sources for c in calls] == [(None,), (0,), (0, 1)]
    assert "add" in calls[2].ops and "conv_general_dilated" in calls[2].ops
