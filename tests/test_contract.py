"""Contract test: every activation and neuron runs under jit, keeps shapes, is finite, traces once.

The neurons come from the registry (`snnjax.conversion.neuron_registry.NEURONS`) and the surrogates from
`snnjax.core.surrogates`, so a neuron or surrogate added there is covered without editing this file.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest

from snnjax.conversion.neuron_registry import NEURONS
from snnjax.core import activations, neurons, surrogates, transformer_ops

# Options that switch each low-latency mechanism on for a 4-step input (defaults may exceed T).
NEURON_OPTIONS = {"burst": {"max_spikes": 2}, "group": {"max_spikes": 2}, "cos": {"prerun": 2}}
NEURON_OPTIONS |= {"cos_network": {"prerun": 2}, "srp": {"prerun": 2}}
SURROGATES = {name: getattr(surrogates, name)() for name in surrogates.__all__ if name != "spike"}

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
    "st_bif_neuron": functools.partial(transformer_ops.st_bif_neuron, levels=4),
    **{f"registry_{n}": functools.partial(NEURONS[n].fn, **NEURON_OPTIONS.get(n, {})) for n in NEURONS},
    **{f"if_surrogate_{n}": functools.partial(neurons.if_neuron, surrogate=s) for n, s in SURROGATES.items()},
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


def test_every_registered_neuron_and_surrogate_is_covered():
    assert {f"registry_{n}" for n in NEURONS} <= set(FUNCTIONS)
    assert set(SURROGATES) == {"arctan", "straight_through", "triangle"}
    # Each registry option used above is one the neuron takes (a misspelt one would be a TypeError).
    for name, options in NEURON_OPTIONS.items():
        assert set(options) <= set(NEURONS[name].options), name


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_a_surrogate_passes_gradient_where_the_exact_neuron_passes_none(name):
    x = 3 * jax.random.normal(jax.random.key(0), (4, 3, 5))
    exact = jax.grad(lambda x: jnp.sum(neurons.if_neuron(x, 2.0)))(x)
    smooth = jax.grad(lambda x: jnp.sum(neurons.if_neuron(x, 2.0, surrogate=SURROGATES[name])))(x)
    assert not jnp.any(exact) and jnp.any(smooth)
