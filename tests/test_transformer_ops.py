"""The three primitives of exact transformer conversion (snnjax.core.transformer_ops) and their identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.core.transformer_ops import (
    signed_quantizer,
    spike_train_product,
    st_bif_neuron,
    temporal_difference,
)


def dyadic(shape, seed, scale=8.0):
    """Values k/8 in [−scale, scale]: every sum below is exact in float32."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(-8 * scale, 8 * scale + 1, shape) / 8.0, jnp.float32)


@pytest.mark.parametrize("levels, lower", [(4, 0), (8, -8), (3, -2)])
def test_st_bif_settles_to_the_quantizer_of_its_summed_input(levels, lower):
    theta = 0.5
    arrivals, settle = 5, levels - lower
    # Input spread over the first 5 steps (any signs), then none for levels − lower steps.
    z = jnp.concatenate([dyadic((arrivals, 64, 3), 1, 1.5), jnp.zeros((settle, 64, 3))], axis=0)
    counts = jnp.sum(st_bif_neuron(z, theta, levels, lower), axis=0) / theta
    total = jnp.sum(z, axis=0)
    expected = signed_quantizer(total, theta, levels, lower) / theta
    np.testing.assert_array_equal(counts, expected)
    assert np.any(np.asarray(expected) == levels) and (lower == 0 or np.any(np.asarray(expected) < 0))


def test_st_bif_needs_levels_steps_after_its_input():
    # levels·θ at once: one spike per step, so the count reaches L only after L steps.
    z = jnp.zeros((4, 1)).at[0].set(4.0)
    out = st_bif_neuron(z, 1.0, levels=4)
    np.testing.assert_array_equal(jnp.cumsum(out, axis=0)[:, 0], [1.0, 2.0, 3.0, 4.0])
    # A later negative input takes spikes back (signed spikes), down to the lower bound only.
    z = jnp.asarray([[3.0], [0.0], [-9.0], [0.0], [0.0], [0.0]])
    out = st_bif_neuron(z, 1.0, levels=4, lower=-1)
    np.testing.assert_array_equal(out[:, 0], [1.0, 1.0, -1.0, -1.0, -1.0, 0.0])


def test_st_bif_per_step_by_hand():
    # θ = 1, v(0) = ½: inputs 0.75, −0.5, 0.75: m = 1.25 → +1 (v 0.25); m = −0.25 → −1 (v 0.75);
    # m = 1.5 → +1 (v 0.5).
    out = st_bif_neuron(jnp.asarray([[0.75], [-0.5], [0.75]]), 1.0, levels=2, lower=-2)
    np.testing.assert_array_equal(out[:, 0], [1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: jax.nn.softmax(x, axis=-1),
        lambda x: (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5),
        jax.nn.gelu,
    ],
    ids=["softmax", "layernorm", "gelu"],
)
def test_temporal_difference_accumulates_to_the_function_of_the_accumulated_input(fn):
    z = dyadic((6, 2, 5), 2, 2.0)
    y = temporal_difference(fn, z)
    sums = jnp.cumsum(z, axis=0)
    for t in range(6):
        np.testing.assert_allclose(jnp.sum(y[: t + 1], axis=0), fn(sums[t]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[0], fn(z[0]), rtol=1e-6)  # f(S_0) counts as 0, not f(0)


@pytest.mark.parametrize("form", ["events", "difference"])
def test_spike_train_product_accumulates_to_the_product_of_the_sums(form):
    a = dyadic((5, 2, 3, 4), 3, 1.0)  # [T, B, n, d]
    b = dyadic((5, 2, 4, 3), 4, 1.0)  # [T, B, d, n]
    y = spike_train_product(a, b, form=form)
    for t in range(5):
        want = jnp.matmul(jnp.sum(a[: t + 1], 0), jnp.sum(b[: t + 1], 0))
        np.testing.assert_array_equal(jnp.sum(y[: t + 1], axis=0), want)  # dyadic: exact
    with pytest.raises(ValueError, match="a has 5 steps, b 4"):
        spike_train_product(a, b[:4], form=form)


def test_spike_train_product_forms_agree_and_the_event_form_is_three_products():
    a = dyadic((4, 2, 3), 5, 1.0)
    b = dyadic((4, 3, 2), 6, 1.0)
    np.testing.assert_array_equal(spike_train_product(a, b), spike_train_product(a, b, form="difference"))
    calls = []

    def counted(x, y):
        calls.append(1)
        return x @ y

    spike_train_product(a, b, counted)
    spike_train_product(a, b, counted, form="difference")
    assert len(calls) == 4  # vmapped: one trace per product, 3 + 1
    with pytest.raises(ValueError, match="form='dense'"):
        spike_train_product(a, b, form="dense")


def test_primitives_compose_with_jit_vmap_and_grad():
    z = dyadic((4, 3), 5, 1.0)
    np.testing.assert_array_equal(
        jax.jit(st_bif_neuron, static_argnums=(2, 3))(z, 0.5, 4, -4), st_bif_neuron(z, 0.5, 4, -4)
    )
    batched = jax.vmap(lambda x: temporal_difference(jnp.tanh, x), in_axes=1, out_axes=1)(z)
    np.testing.assert_allclose(batched, temporal_difference(jnp.tanh, z), rtol=1e-6)
    # The quantizer's straight-through gradient: 1 inside [(lower − ½)θ, (L + ½)θ), 0 outside.
    grad = jax.grad(lambda x: jnp.sum(signed_quantizer(x, 0.5, levels=2, lower=-1)))
    np.testing.assert_array_equal(grad(jnp.asarray([-0.8, -0.7, 0.3, 1.2, 1.3])), [0.0, 1.0, 1.0, 1.0, 0.0])
