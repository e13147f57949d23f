"""Hand-stepped and independently computed tests of the IF neuron."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.core import pallas as experimental
from snnjax.core.activations import qcfs
from snnjax.core.neurons import if_neuron, if_neuron_with_state, integrate_then_fire, signed_if_neuron


def reference_if(z, theta, v0):
    """Plain-Python IF with the reference rule, one neuron at a time (independent of the scan)."""
    z = np.asarray(z, np.float32)
    theta = np.broadcast_to(np.asarray(theta, np.float32), z.shape[1:])
    out = np.zeros_like(z)
    v = (np.float32(v0) * theta).astype(np.float32)
    for t in range(z.shape[0]):
        m = v + z[t]
        fired = m >= theta
        out[t] = np.where(fired, theta, 0)
        v = m - out[t]
    return out, v


def test_hand_stepped_sequence():
    # θ = 1, v(0) = ½: m = 1 (fires, inclusive), .25, 1.125 (fires), -.25, .75.
    z = jnp.array([0.5, 0.25, 0.875, -0.375, 1.0])
    out, v = if_neuron_with_state(z, 1.0, v0=0.5)
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0, 0.0, 0.0])
    assert float(v) == 0.75


def test_exact_threshold_input_fires():
    np.testing.assert_array_equal(if_neuron(jnp.array([2.0, 2.0]), 2.0, v0=0.0), [2.0, 2.0])


@pytest.mark.parametrize("v0, expected", [(0.0, [0, 0, 1, 0]), (0.5, [0, 1, 0, 1])])
def test_initial_membrane_fraction(v0, expected):
    # Constant 0.375, θ = 1. v0=0: .375, .75, 1.125→.125, .5. v0=½: .875, 1.25→.25, .625, 1.0 (fires).
    np.testing.assert_array_equal(if_neuron(jnp.full((4,), 0.375), 1.0, v0=v0), expected)


def test_negative_input_never_fires_and_membrane_goes_negative():
    out, v = if_neuron_with_state(jnp.full((3, 2), -1.0), 1.0, v0=0.5)
    np.testing.assert_array_equal(out, np.zeros((3, 2)))
    np.testing.assert_array_equal(v, [-2.5, -2.5])


def test_large_input_fires_every_step_and_keeps_residual():
    out, v = if_neuron_with_state(jnp.full((4,), 3.0), 1.0, v0=0.0)
    np.testing.assert_array_equal(out, [1.0] * 4)  # at most one spike per step
    assert float(v) == 8.0  # 4 · (3 − 1)


def test_per_channel_threshold():
    out = if_neuron(jnp.ones((4, 2)), jnp.array([1.0, 2.0]), v0=0.0)
    np.testing.assert_array_equal(out, [[1, 0], [1, 2], [1, 0], [1, 2]])


def test_matches_independent_loop_on_random_input():
    z = jax.random.normal(jax.random.key(0), (16, 3, 5, 4)) * 0.7 + 0.2
    theta = jnp.array([0.5, 1.0, 1.5, 2.0])  # per channel
    out, v = if_neuron_with_state(z, theta, v0=0.5)
    ref_out, ref_v = reference_if(z, theta, 0.5)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(v, ref_v, rtol=0, atol=1e-6)


def test_state_continues_a_run():
    z = jax.random.normal(jax.random.key(1), (10, 6))
    full, v_full = if_neuron_with_state(z, 1.0, v0=0.5)
    first, v_mid = if_neuron_with_state(z[:4], 1.0, v0=0.5)
    second, v_end = if_neuron_with_state(z[4:], 1.0, membrane=v_mid)
    np.testing.assert_array_equal(jnp.concatenate([first, second]), full)
    np.testing.assert_array_equal(v_end, v_full)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="T >= 1"):
        if_neuron(jnp.zeros((0, 3)), 1.0)
    with pytest.raises(ValueError, match="T >= 1"):
        if_neuron(jnp.float32(1.0), 1.0)
    with pytest.raises(ValueError, match="per-neuron shape"):
        if_neuron_with_state(jnp.zeros((2, 3)), 1.0, membrane=jnp.zeros((4,)))


# --- SpikeConverter neurons -------------------------------------------------------------------------


def test_integrate_then_fire_hand_sequence():
    # θ = 1, v0 = ½: V = ½ + (2 + 0 − 2 + ½) = 1 → one spike, fired in the first step of the window.
    z = jnp.array([2.0, 0.0, -2.0, 0.5])
    np.testing.assert_array_equal(integrate_then_fire(z, 1.0, v0=0.5), [1.0, 0.0, 0.0, 0.0])
    # The plain IF neuron fires twice on the same input (the early surplus is never taken back).
    np.testing.assert_array_equal(if_neuron(z, 1.0, v0=0.5), [1.0, 1.0, 0.0, 0.0])


def test_integrate_then_fire_inclusive_and_clipped():
    # V = 0 + 2·1 = 2 = 2θ exactly → 2 spikes (inclusive); V = 10θ → T = 3 spikes; V < 0 → none.
    np.testing.assert_array_equal(integrate_then_fire(jnp.array([1.0, 1.0, 0.0]), 1.0, v0=0.0), [1, 1, 0])
    np.testing.assert_array_equal(integrate_then_fire(jnp.full((3,), 10.0), 3.0, v0=0.0), [3, 3, 3])
    np.testing.assert_array_equal(integrate_then_fire(jnp.full((3,), -1.0), 1.0, v0=0.5), [0, 0, 0])


def test_integrate_then_fire_is_order_independent_and_equals_qcfs():
    # Dyadic inputs make every sum exact, so the identity must hold bit for bit.
    rng = np.random.default_rng(0)
    z = rng.integers(-24, 40, size=(8, 5, 7)).astype(np.float32) / 16
    theta = jnp.array([0.5, 1.0, 2.0, 1.0, 4.0, 0.25, 1.0])  # per channel
    out = integrate_then_fire(z, theta, v0=0.5)
    shuffled = integrate_then_fire(z[rng.permutation(8)], theta, v0=0.5)
    np.testing.assert_array_equal(out, shuffled)
    expected = qcfs(jnp.asarray(z.mean(axis=0)), theta, levels=8, shift=0.5)
    np.testing.assert_array_equal(out.mean(axis=0), expected)
    # Spikes come first in the window: non-increasing in k.
    assert np.all(np.diff(np.asarray(out), axis=0) <= 0)


def test_signed_if_takes_back_excess_spikes():
    # θ = 1, v0 = ½: m = 2.5 → +1 (v 1.5); 1.5 → +1 (v .5); −1.5 ≤ −1 with net 2 > 0 → −1 (v −.5); 0.
    z = jnp.array([2.0, 0.0, -2.0, 0.5])
    np.testing.assert_array_equal(signed_if_neuron(z, 1.0, v0=0.5), [1.0, 1.0, -1.0, 0.0])


def test_signed_if_never_goes_net_negative():
    # No positive spike yet → a very negative membrane emits nothing.
    np.testing.assert_array_equal(signed_if_neuron(jnp.full((3,), -5.0), 1.0, v0=0.0), [0, 0, 0])


def test_signed_if_count_within_one_of_the_ideal():
    # Inputs in the first half, zeros in the second (firing continues after integration ends).
    rng = np.random.default_rng(1)
    active = rng.normal(0.3, 1.5, size=(16, 2000)).astype(np.float32)
    z = np.concatenate([active, np.zeros_like(active)])
    net = np.asarray(signed_if_neuron(z, 1.0, v0=0.5)).sum(axis=0)
    ideal = np.clip(np.floor(0.5 + active.sum(axis=0)), 0, 32)
    assert np.all((net - ideal >= 0) & (net - ideal <= 1))
    plain = np.asarray(if_neuron(z, 1.0, v0=0.5)).sum(axis=0)
    # The plain neuron is off by more on the same inputs (this is what signed spikes fix).
    assert np.abs(plain - ideal).mean() > np.abs(net - ideal).mean() + 0.1


@pytest.mark.parametrize("num_steps", [3, 8, 12])
def test_unrolled_scan_is_identical_to_rolled_scan(num_steps):
    z = jax.random.normal(jax.random.key(2), (num_steps, 64, 5))
    auto = if_neuron_with_state(z, 0.7, v0=0.5)  # unrolled for T <= 8
    for unroll in (False, True, 4):
        explicit = if_neuron_with_state(z, 0.7, v0=0.5, unroll=unroll)
        np.testing.assert_array_equal(auto[0], explicit[0])
        np.testing.assert_array_equal(auto[1], explicit[1])


@pytest.mark.parametrize("shape, theta", [((5, 3, 700), 0.7), ((8, 2, 4, 4, 3), jnp.array([0.5, 1.0, 1.5]))])
def test_pallas_kernel_is_identical_to_the_scan(shape, theta):
    # Interpret mode runs the kernel's own code on the CPU; 2100 and 96 neurons exercise the padding.
    z = jax.random.normal(jax.random.key(3), shape)
    np.testing.assert_array_equal(
        experimental.if_neuron_pallas(z, theta, v0=0.5, interpret=True),
        if_neuron_with_state(z, theta, v0=0.5)[0],
    )
