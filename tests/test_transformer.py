"""Exact conversion of a quantized transformer (snnjax.conversion.transformer, snnjax.nn.vit).

The SNN runs the ANN's own code with time folded into the batch; the reference here is an independent
per-step NumPy simulation of the same network (ST-BIF neurons with their membranes and counts,
spike-train products with their accumulators, analog operators with their running sums, biases at
the first step), written from the definitions in snnjax.core.transformer_ops.
"""

from __future__ import annotations

import json
import os
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from snnjax.conversion import interception, transformer
from snnjax.core import activations
from snnjax.core.transformer_ops import signed_quantizer
from snnjax.nn.layers import Product, SignedQCFS, ThresholdActivation
from snnjax.nn.vit import ViT

LEVELS = 4
TINY = {"num_classes": 3, "patch": 2, "dim": 8, "depth": 1, "heads": 2, "mlp_dim": 16, "levels": LEVELS}


def _dyadic_variables(model, images, seed=0):
    """Initialized variables with every weight rounded to a multiple of 1/8 (exact float sums)."""
    variables = model.init(jax.random.key(seed), images)

    def dyadic(path, x):
        if path[-1].key == "threshold":
            return jnp.full_like(x, 1.0)  # λ = 1: θ = ¼ for L = 4 (counts above 1: several steps)
        return jnp.round(x * 8) / 8 + (0.25 if path[-1].key == "scale" else 0.0)

    return jax.tree_util.tree_map_with_path(dyadic, variables)


# --- an independent per-step simulation of the ViT, in NumPy (float64) --------------------------------


class _STBIF:
    def __init__(self, theta, levels, lower):
        self.theta, self.levels, self.lower = theta, levels, lower
        self.v, self.c = None, None

    def __call__(self, z):
        if self.v is None:
            self.v, self.c = np.full(z.shape, 0.5 * self.theta), np.zeros(z.shape, int)
        m = self.v + z
        up = (m >= self.theta) & (self.c < self.levels)
        down = ~up & (m < 0) & (self.c > self.lower)
        out = np.where(up, self.theta, np.where(down, -self.theta, 0.0))
        self.v, self.c = m - out, self.c + up - down
        return out


class _Analog:
    def __init__(self, fn):
        self.fn, self.total, self.previous = fn, 0.0, 0.0

    def __call__(self, z):
        self.total = self.total + z
        value = self.fn(self.total)
        out, self.previous = value - self.previous, value
        return out


class _Product:
    def __init__(self, equation):
        self.equation, self.a, self.b = equation, 0.0, 0.0

    def __call__(self, a, b):
        if isinstance(self.a, float):
            self.a, self.b = np.zeros_like(a), np.zeros_like(b)
        out = np.einsum(self.equation, self.a + a, self.b + b) - np.einsum(self.equation, self.a, self.b)
        self.a, self.b = self.a + a, self.b + b
        return out


def _layer_norm(p):
    def fn(x):
        mean = x.mean(-1, keepdims=True)
        var = np.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
        return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]

    return fn


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_snn(params, images, num_steps, config):
    """Accumulated logits ``[T, B, C]`` of the ViT's SNN, one step at a time (the image at step 1)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    levels, heads, patch = config["levels"], config["heads"], config["patch"]

    def quant(q, lower):
        return _STBIF(float(q["threshold"]) / levels, levels, lower)

    embed_q = quant(p["embedding_quant"], -levels)
    blocks = []
    for i in range(config["depth"]):
        b = p[f"block{i}"]
        a = b["attention"]
        blocks.append(
            {
                "norm1": _Analog(_layer_norm(b["norm1"])),
                "q": quant(a["query_quant"], -levels),
                "k": quant(a["key_quant"], -levels),
                "v": quant(a["value_quant"], -levels),
                "scores": _Product("bqhd,bkhd->bhqk"),
                "softmax": _Analog(_softmax),
                "probs": quant(a["probs_quant"], 0),
                "mix": _Product("bhqk,bkhd->bqhd"),
                "res1": quant(b["attention_residual"], -levels),
                "norm2": _Analog(_layer_norm(b["norm2"])),
                "hidden": quant(b["mlp_quant"], 0),
                "res2": quant(b["mlp_residual"], -levels),
            }
        )
    final_norm = _Analog(_layer_norm(p["norm"]))
    batch, height, width, channels = images.shape
    patches = images.reshape(batch, height // patch, patch, width // patch, patch, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, -1, patch * patch * channels)
    total, outputs = 0.0, []
    for t in range(num_steps):
        first = t == 0
        x_in = patches if first else np.zeros_like(patches)

        def dense(x, q, first=first):
            return x @ q["kernel"] + (q["bias"] if first else 0.0)

        x = dense(x_in, p["patch_embedding"])
        token = p["class_token"]["token"] if first else np.zeros((1, 1, x.shape[-1]))
        x = np.concatenate([np.broadcast_to(token, (batch, 1, x.shape[-1])), x], axis=1)
        x = x + (p["position"]["embedding"] if first else 0.0)
        x = embed_q(x)
        for i, s in enumerate(blocks):
            b = p[f"block{i}"]
            a = b["attention"]
            h = s["norm1"](x)
            n, d = h.shape[1], h.shape[2]
            split = (batch, n, heads, d // heads)
            q = s["q"](dense(h, a["query"]).reshape(split))
            k = s["k"](dense(h, a["key"]).reshape(split))
            v = s["v"](dense(h, a["value"]).reshape(split))
            scores = s["scores"](q, k) / np.sqrt(d // heads)
            probs = s["probs"](s["softmax"](scores))
            mixed = s["mix"](probs, v).reshape(batch, n, d)
            x = s["res1"](x + dense(mixed, a["out"]))
            hidden = s["hidden"](dense(s["norm2"](x), b["mlp_in"]))
            x = s["res2"](x + dense(hidden, b["mlp_out"]))
        logits = dense(final_norm(x)[:, 0], p["head"])
        total = total + logits
        outputs.append(total)
    return np.stack(outputs)


@pytest.fixture(scope="module")
def tiny_vit():
    model = ViT(**TINY)
    images = jnp.round(jax.random.uniform(jax.random.key(1), (4, 4, 4, 1)) * 8) / 8
    return model, _dyadic_variables(model, images), images


def test_snn_equals_numpy_per_step_simulation_at_every_t(tiny_vit):
    model, variables, images = tiny_vit
    steps = 24
    snn = transformer.spiking_transformer(model)
    accumulated = transformer.accumulated_outputs(
        transformer.transformer_apply(snn, variables, images, steps)
    )
    expected = numpy_snn(variables["params"], np.asarray(images, np.float64), steps, TINY)
    np.testing.assert_allclose(np.asarray(accumulated), expected, atol=1e-5, rtol=0)


def test_snn_equals_quantized_ann_from_a_settling_step_on(tiny_vit):
    model, variables, images = tiny_vit
    steps = 24
    snn = transformer.spiking_transformer(model)
    accumulated = transformer.accumulated_outputs(
        transformer.transformer_apply(snn, variables, images, steps)
    )
    ann = model.apply(variables, images)
    close = np.all(np.abs(np.asarray(accumulated) - np.asarray(ann)[None]) <= 1e-5, axis=(1, 2))  # [T]
    assert close[-1], "the accumulated output never reaches the quantized ANN's"
    settled = int(np.flatnonzero(~close)[-1]) + 2 if not close.all() else 1
    assert 1 < settled < steps  # not equal at once (the neurons need steps to spend their counts)
    assert close[settled - 1 :].all()
    predictions = np.argmax(np.asarray(accumulated), -1)
    star = transformer.settled_step(predictions, np.argmax(np.asarray(ann), -1))
    assert star is not None and star <= settled


def test_settled_step_on_hand_made_predictions():
    ann = np.array([1, 2, 0])
    snn = np.array([[0, 0, 0], [1, 2, 1], [1, 0, 0], [1, 2, 0], [1, 2, 0]])  # [T=5, N=3]
    assert transformer.settled_step(snn, ann) == 4  # t = 3 disagrees on image 1; t = 4, 5 agree
    assert transformer.settled_step(snn[:3], ann) is None  # disagrees at T
    assert transformer.settled_step(snn[3:], ann) == 1


class _TwoLayer(nn.Module):
    """Dense(2) → SignedQCFS(L=4, unsigned, λ = 4: θ = 1) → Dense(1, no bias): counted by hand."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(2, name="fc1")(x)
        h = SignedQCFS(4, 0, threshold_init=4.0, name="quant")(h)
        return nn.Dense(1, use_bias=False, name="fc2")(h)


def test_operator_report_counts_by_hand():
    model = _TwoLayer()
    x = jnp.array([[1.0, 0.0, 2.0]])
    variables = model.init(jax.random.key(0), x)
    params = {
        "fc1": {"kernel": jnp.array([[1.0, 0.0], [5.0, 5.0], [1.0, 0.5]]), "bias": jnp.array([0.0, 0.0])},
        "quant": {"threshold": jnp.array(4.0)},
        "fc2": {"kernel": jnp.array([[1.0], [1.0]])},
    }
    variables = {"params": params}
    snn = transformer.spiking_transformer(model)
    ann = model.apply(variables, x)  # fc1 = [3, 1]: counts 3 and 1, θ = 1 → 4
    report = transformer.operator_report(snn, variables, x, 8, ann)
    rows = {row["name"]: row for row in report["operators"]}
    assert [row["kind"] for row in report["operators"]] == ["affine", "st_bif", "affine"]
    # fc1: 2 nonzero inputs (the 0 pixel is no event) × 2 outputs, once; the ANN: 3 × 2.
    assert rows["fc1"]["ops_per_image"] == 4 and rows["fc1"]["ann_macs_per_image"] == 6
    assert rows["fc1"]["input"] == "analog"
    # The neuron spends its input 3 and 1 as 3 + 1 spikes (one per step); fc2 takes each as one SOP.
    assert rows["quant"]["spikes_per_image"] == 4 and rows["quant"]["output"] == "spikes {0, +θ}"
    assert rows["fc2"]["input"] == "spikes" and rows["fc2"]["ops_per_image"] == 4
    assert report["synaptic_ops_per_image"] == 4 and report["macs_per_image"] == 4
    assert report["ann_macs_per_image"] == 8 and report["output_max_abs_error"] == 0.0


def test_bias_enters_once():
    model = nn.Dense(2)
    x = jnp.array([[1.0, -2.0]])
    variables = {"params": {"kernel": jnp.array([[1.0, 2.0], [0.5, 1.0]]), "bias": jnp.array([3.0, -1.0])}}
    increments = transformer.SpikingTransformer(model).apply(variables, transformer._first_step_only(x, 3))
    np.testing.assert_array_equal(increments[:, 0], [[3.0, -1.0], [0.0, 0.0], [0.0, 0.0]])


def test_function_sites_intercept_every_spelling_and_restore_them():
    seen = []

    def handler(key, original, x, *args, **kwargs):
        seen.append(interception.site_name(key))
        return original(x, *args, **kwargs) * 0

    x = jnp.array([1.0, 2.0])
    with interception.function_sites(handler):
        assert not jnp.any(jax.nn.softmax(x)) and not jnp.any(nn.softmax(x)) and not jnp.any(nnx.softmax(x))
        assert not jnp.any(jax.nn.gelu(x))
        other = []
        thread = threading.Thread(target=lambda: other.append(jax.nn.softmax(x)))
        thread.start()
        thread.join()
    assert seen == ["softmax_0", "softmax_1", "softmax_2", "gelu_0"]
    np.testing.assert_allclose(other[0], jax.nn.softmax(x))  # another thread's call is untouched
    for namespace in (jax.nn, nn, nnx):
        assert not hasattr(namespace.softmax, "__wrapped__") and not hasattr(namespace.gelu, "__wrapped__")
    assert jax.nn.softmax is nn.softmax is nnx.softmax


class _GeluMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = SignedQCFS(4, -4, name="quant")(nn.Dense(3, name="fc1")(x))
        return nn.Dense(2, name="fc2")(jax.nn.gelu(h) + nn.relu(h))


def test_analog_functions_accumulate_to_the_ann():
    model = _GeluMLP()
    x = jax.random.normal(jax.random.key(0), (5, 4))
    variables = model.init(jax.random.key(1), x)
    snn = transformer.spiking_transformer(model)
    outputs, sites = snn.apply_recorded(variables, transformer._first_step_only(x, 16))
    kinds = {site.name: site.kind for site in sites}
    assert kinds["gelu_0"] == kinds["relu_0"] == "analog"
    np.testing.assert_allclose(
        transformer.accumulated_outputs(outputs)[-1], model.apply(variables, x), atol=1e-5
    )


def test_refusals():
    with pytest.raises(TypeError, match="Linen module"):
        transformer.spiking_transformer(lambda p, x: x)

    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ThresholdActivation(activations.threshold_relu, name="act")(x)

    x = jnp.ones((1, 2))
    mixed = Mixed()
    with pytest.raises(ValueError, match="'act' is a snnjax CNN activation layer"):
        transformer.transformer_apply(
            transformer.spiking_transformer(mixed), mixed.init(jax.random.key(0), x), x, 2
        )
    with pytest.raises(ValueError, match="num_steps"):
        transformer.transformer_apply(transformer.spiking_transformer(mixed), {}, x, 0)


class _RawAttention(nn.Module):
    """Linear-between-sites violations: a bare einsum of two activations, a max, an added constant."""

    @nn.compact
    def __call__(self, x):
        q = SignedQCFS(4, -4, name="q")(nn.Dense(4, name="fq")(x))
        k = SignedQCFS(4, -4, name="k")(nn.Dense(4, name="fk")(x))
        scores = jnp.einsum("bi,bj->bij", q, k).sum(-1)
        return scores + jnp.maximum(q, 0.0) + self.param("b", nn.initializers.ones, (1, 4))


def test_nonlinear_operations_between_sites_are_refused_by_name():
    model, x = _RawAttention(), jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), x)
    found = transformer.nonlinear_between_sites(model, variables, x)
    assert found == [
        "bi,bj->bij: dot_general of two activations (make it a snnjax.nn.layers.Product layer)",
        "the top level: max (not linear)",
        "the top level: add of a constant to an activation (it would enter every step)",
    ]
    with pytest.raises(ValueError, match=r"_RawAttention computes 3 operation\(s\).*dot_general of two"):
        transformer.transformer_apply(transformer.spiking_transformer(model), variables, x, 2)
    vit, images = ViT(**TINY), jnp.ones((1, 4, 4, 1))
    assert transformer.nonlinear_between_sites(vit, vit.init(jax.random.key(0), images), images) == []


class _Probe(nn.Module):
    """A learned query (no image in it) into a quantizer and a product: a constant fed every step."""

    @nn.compact
    def __call__(self, x):
        k = SignedQCFS(4, -4, name="k")(nn.Dense(4, name="fk")(x))
        probe = jnp.broadcast_to(self.param("probe", nn.initializers.ones, (1, 4)), k.shape)
        q = SignedQCFS(4, -4, name="q")(probe)
        return Product("bi,bi->b", name="score")(q, k)


class _Tanh(nn.Dense):
    """A Dense subclass that is not affine: not a site, so its tanh is checked."""

    def __call__(self, x):
        return jnp.tanh(super().__call__(x))


class _Casts(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = SignedQCFS(4, -4, name="q")(x)
        padded = jnp.pad(h, ((0, 0), (1, 1)))  # zeros: linear, allowed
        return (
            padded.sum(-1) + h.astype(jnp.int32).sum(-1).astype(jnp.float32) + _Tanh(2, name="t")(h).sum(-1)
        )


def test_the_check_finds_constant_inputs_integer_casts_and_subclassed_layers():
    x = jnp.ones((2, 3))
    probe = _Probe()
    found = transformer.nonlinear_between_sites(probe, probe.init(jax.random.key(0), x), x)
    constant = "a site input that does not depend on the image (a constant would enter every step: add it "
    assert found == [f"q: {constant}through an affine layer)", f"score: {constant}through an affine layer)"]
    casts = _Casts()
    found = transformer.nonlinear_between_sites(casts, casts.init(jax.random.key(0), x), x)
    assert found == [
        "the top level: an activation cast to int32 (not linear)",
        "t/t: add of a constant to an activation (it would enter every step)",  # its bias, not a site's
        "t: tanh (not linear)",
    ]


def test_a_site_input_whose_leading_axis_is_not_the_batch_is_refused():
    class TokenMajor(nn.Module):
        @nn.compact
        def __call__(self, x):  # [B, N, D] → LayerNorm over [N, B, D]
            return nn.LayerNorm(name="norm")(jnp.swapaxes(x, 0, 1))

    model, x = TokenMajor(), jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match="leading axis is not T·B = 4·2: keep the batch axis first"):
        transformer.transformer_apply(
            transformer.spiking_transformer(model), model.init(jax.random.key(0), x), x, 4
        )


def test_dense_general_macs_count_the_input_features_only():
    model = nn.DenseGeneral((2, 3), name="dg")
    x = jnp.ones((1, 5, 4))
    variables = model.init(jax.random.key(0), x)
    report = transformer.operator_report(
        transformer.SpikingTransformer(model), variables, x, 2, model.apply(variables, x)
    )
    assert report["operators"][0]["ann_macs_per_image"] == 5 * 2 * 3 * 4


def test_signed_qcfs_layer_quantizes_with_its_step_and_learns_lsq_gradient():
    layer = SignedQCFS(4, -4, threshold_init=2.0)  # θ = ½
    x = jnp.array([-3.0, -0.3, 0.2, 0.26, 1.9, 5.0])
    variables = layer.init(jax.random.key(0), x)
    np.testing.assert_array_equal(layer.apply(variables, x), [-2.0, -0.5, 0.0, 0.5, 2.0, 2.0])
    np.testing.assert_array_equal(layer.apply(variables, x), signed_quantizer(x, 0.5, 4, -4))
    # d/dλ of θ·count with θ = λ/L: (count − x/θ)/L inside the range, count/L outside.
    grad = jax.grad(lambda v: jnp.sum(layer.apply(v, jnp.array([0.2]))))(variables)["params"]["threshold"]
    np.testing.assert_allclose(grad, (0 - 0.4) / 4, rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(layer.apply(v, jnp.array([5.0]))))(variables)["params"]["threshold"]
    np.testing.assert_allclose(grad, 4 / 4, rtol=1e-6)


def test_product_layer_is_einsum():
    a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
    out = Product("bij,bjk->bik").apply({}, a, b)
    np.testing.assert_array_equal(out, jnp.full((2, 3, 5), 4.0))


def test_digits_vit_trains_and_converts_end_to_end(tmp_path):
    from snnjax.configs import digits_vit_qcfs
    from snnjax.experiment import pipeline, training

    config = digits_vit_qcfs.get_config()
    config.num_epochs = 2
    config.snn_num_steps = 24
    config.report_examples = 16
    workdir = str(tmp_path / "vit")
    training.train_and_evaluate(config, workdir)
    result = pipeline.convert_and_evaluate(None, workdir)
    with open(os.path.join(workdir, "snn_eval.json")) as f:
        assert json.load(f)["run_id"] == result["run_id"]
    # Equal up to float32 rounding at a quantizer boundary, which may move a count on another CPU's
    # code (one image of 360 allowed to differ).
    one_image = 1 / result["num_test_images"] + 1e-9
    assert result["agreement_with_ann"]["24"] >= 1 - one_image
    assert result["snn_accuracy"]["24"] == pytest.approx(result["ann_accuracy"], abs=one_image)
    assert result["logits_match_fraction"] >= 0.95
    kinds = {row["kind"] for row in result["operators"]["operators"]}
    assert kinds == {"affine", "st_bif", "analog", "product"}
    assert os.path.exists(os.path.join(workdir, "snn_accuracy.png"))
    # The speed benchmark on the same workdir: the same ANN accuracy, T* within its T.
    from benchmarks import transformer_speed

    row = transformer_speed.main(
        ["--workdir", workdir, "--steps=24", "--results_dir", str(tmp_path), "--name=t"]
    )
    assert row["ann_accuracy"] == pytest.approx(result["ann_accuracy"])
    assert row["settled_step"] == result["settled_step"]
    assert row["logits_match_fraction"] == pytest.approx(result["logits_match_fraction"])
    assert row["snn_accuracy"] == pytest.approx(result["snn_accuracy"])
    assert json.loads((tmp_path / "transformer_speed_t.json").read_text()) == [row]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "slip_relu", "config.method must be 'qcfs'"),
        ("snn_mode", "step", "config.snn_mode='step': a transformer"),
        ("export_nir", True, "config.export_nir=True"),
        ("vit_heads", 3, "config.vit_dim=32 is not divisible by config.vit_heads=3"),
        ("vit_depth", 0, "config.vit_depth"),
        ("optimizer", "adam", "config.optimizer"),
    ],
)
def test_transformer_configs_refuse_what_the_conversion_does_not_do(field, value, message):
    from snnjax.configs import digits_vit_qcfs
    from snnjax.experiment.config import validate_config

    config = digits_vit_qcfs.get_config()
    config[field] = value
    with pytest.raises(ValueError, match=message):
        validate_config(config)
