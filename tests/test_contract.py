"""Contract test: every activation and neuron runs under jit, keeps shapes, is finite, traces once."""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest

from snnjax import activations, neurons

FUNCTIONS = {
    "relu": lambda x, lam: activations.relu(x),
    "threshold_relu": activations.threshold_relu,
    "qcfs_clip_floor": functools.partial(activations.qcfs, levels=4, order="clip_floor"),
    "qcfs_floor_clip": functools.partial(activations.qcfs, levels=4, order="floor_clip"),
    "slip_relu": functools.partial(activations.slip_relu, levels=4, c=0.3),
    "if_neuron": neurons.if_neuron,  # x is time-major here: axis 0 is T
    "if_neuron_v0": functools.partial(neurons.if_neuron, v0=0.0),
    "integrate_then_fire": neurons.integrate_then_fire,
    "signed_if_neuron": neurons.signed_if_neuron,
}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("threshold_shape", [(), (5,)])
def test_contract(name, threshold_shape):
    fn = FUNCTIONS[name]
    chex.clear_trace_counter()  # chex counts per code location, across parametrized cases

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value_and_grads(x, lam):
        y = fn(x, lam)
        grads = jax.grad(lambda x, lam: jnp.sum(fn(x, lam)), argnums=(0, 1))(x, lam)
        return y, grads

    lam = jnp.full(threshold_shape, 2.0)
    for seed in range(3):  # several calls, one trace
        x = 3 * jax.random.normal(jax.random.key(seed), (4, 3, 5))
        y, (gx, glam) = value_and_grads(x, lam)
        chex.assert_shape(y, x.shape)
        chex.assert_shape(gx, x.shape)
        chex.assert_shape(glam, lam.shape)
        chex.assert_tree_all_finite((y, gx, glam))
