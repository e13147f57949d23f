"""The conversion theorems of QCFS and SlipReLU, checked on the pure functions.

For a constant input z and soft reset, an IF neuron with v(0) = s·θ emits
``clip(floor((T·z + s·θ)/θ), 0, T)`` spikes in T steps, so with u = z/θ uniform on [0, 1]:
``E[SNN] = θ·(½ + (s − ½)/T)`` and ``E[clip-floor-shift ANN] = θ·(½ + (φ − ½)/L)``. These closed forms
give the expected errors below; the Monte Carlo tolerance is 5 standard errors of the sample mean,
with the per-sample error bounded by θ.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.core.activations import qcfs, slip_relu
from snnjax.core.neurons import if_neuron

THETA = 1.5
NUM_SAMPLES = 200_000


def snn_rate_output(z, theta, num_steps, v0):
    """Mean IF output over T steps of constant input z (shape [N])."""
    return jnp.mean(if_neuron(jnp.broadcast_to(z, (num_steps, *z.shape)), theta, v0), axis=0)


def uniform_inputs(seed):
    return jax.random.uniform(jax.random.key(seed), (NUM_SAMPLES,), maxval=THETA)


def assert_mean_close(error, expected):
    error = np.asarray(error, np.float64)
    tolerance = 5 * max(error.std(), 1e-3 * THETA) / np.sqrt(error.size)
    assert abs(error.mean() - expected) < tolerance, (error.mean(), expected, tolerance)


@pytest.mark.parametrize("levels", [2, 4, 8, 16])
def test_theorem1_clip_floor_equals_if_rate_at_t_equals_l(levels):
    # φ = 0, v(0) = 0, T = L: spike count == floor(z·L/θ) clipped, exactly, for any constant z.
    z = jax.random.uniform(jax.random.key(levels), (50_000,), minval=-0.5 * THETA, maxval=1.5 * THETA)
    distance_to_boundary = jnp.abs(z * levels / THETA - jnp.round(z * levels / THETA))
    z = z[distance_to_boundary > 1e-3]  # stay clear of float rounding at quantization boundaries
    spikes = jnp.sum(if_neuron(jnp.broadcast_to(z, (levels, *z.shape)), THETA, v0=0.0) > 0, axis=0)
    ann_levels = jnp.round(qcfs(z, THETA, levels, shift=0.0) * levels / THETA)
    np.testing.assert_array_equal(spikes, ann_levels)


@pytest.mark.parametrize("num_steps, levels", [(1, 4), (2, 4), (3, 8), (8, 4), (16, 8), (5, 2)])
def test_theorem2_shift_half_is_unbiased_for_any_t(num_steps, levels):
    z = uniform_inputs(num_steps * 100 + levels)
    error = snn_rate_output(z, THETA, num_steps, 0.5) - qcfs(z, THETA, levels, shift=0.5)
    assert_mean_close(error, 0.0)


@pytest.mark.parametrize("num_steps, levels", [(2, 8), (8, 2), (4, 16)])
def test_theorem2_without_shift_is_biased_when_t_differs_from_l(num_steps, levels):
    z = uniform_inputs(num_steps * 100 + levels)
    error = snn_rate_output(z, THETA, num_steps, 0.0) - qcfs(z, THETA, levels, shift=0.0)
    expected = THETA / 2 * (1 / levels - 1 / num_steps)
    assert abs(expected) > 0.05 * THETA
    assert_mean_close(error, expected)


@pytest.mark.parametrize(
    "c, shift2, num_steps, levels",
    [(0.5, 0.0, 2, 4), (0.5, 0.9, 2, 4), (0.2, 0.2, 3, 8), (0.8, 0.7, 16, 4), (0.0, 0.1, 4, 8)],
)
def test_slip_relu_expected_error_formula(c, shift2, num_steps, levels):
    z = uniform_inputs(int(100 * c) + num_steps)
    act = functools.partial(slip_relu, levels=levels, c=c, shift2=shift2)
    error = snn_rate_output(z, THETA, num_steps, shift2) - act(z, THETA)
    expected = THETA * (shift2 - 0.5) * (1 / num_steps - (1 - c) / levels)
    assert_mean_close(error, expected)


@pytest.mark.parametrize("shift2", [0.0, 0.3, 0.9])
def test_slip_relu_unbiased_when_t_is_l_over_one_minus_c(shift2):
    c, levels = 0.5, 4  # T = L / (1 − c) = 8
    z = uniform_inputs(7)
    error = snn_rate_output(z, THETA, 8, shift2) - slip_relu(z, THETA, levels, c, shift2=shift2)
    assert_mean_close(error, 0.0)


@pytest.mark.parametrize("num_steps", [1, 3, 32])
def test_slip_relu_unbiased_for_every_t_when_shift2_is_half(num_steps):
    z = uniform_inputs(num_steps)
    error = snn_rate_output(z, THETA, num_steps, 0.5) - slip_relu(z, THETA, 4, 0.3, shift2=0.5)
    assert_mean_close(error, 0.0)
