"""Known-answer and gradient tests of the pure activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax.core import activations as act


def grad_x(fn, x):
    return jax.vmap(jax.grad(fn))(jnp.asarray(x, jnp.float32))


class TestQCFSForward:
    # λ = 1, L = 4, φ = ½: a = clip(floor(4x + ½) / 4, 0, 1), worked by hand.
    @pytest.mark.parametrize(
        "x, expected",
        [(-0.2, 0.0), (0.1, 0.0), (0.13, 0.25), (0.6, 0.5), (0.9, 1.0), (2.0, 1.0)],
    )
    @pytest.mark.parametrize("order", ["clip_floor", "floor_clip"])
    def test_hand_values(self, x, expected, order):
        assert float(act.qcfs(jnp.float32(x), 1.0, 4, order=order)) == expected

    def test_threshold_scales_output(self):
        # λ = 2: floor(0.6·4/2 + ½) = floor(1.7) = 1 → 2 · 1/4.
        assert float(act.qcfs(jnp.float32(0.6), 2.0, 4)) == 0.5

    @pytest.mark.parametrize("shift", [0.0, 0.5, 0.9])
    def test_orders_have_identical_forward(self, shift):
        x = jax.random.uniform(jax.random.key(0), (10_000,), minval=-3, maxval=11)
        a = act.qcfs(x, 8.0, 4, shift, order="clip_floor")
        b = act.qcfs(x, 8.0, 4, shift, order="floor_clip")
        np.testing.assert_array_equal(a, b)

    def test_per_channel_threshold_broadcasts(self):
        x = jnp.full((2, 3), 0.6)
        out = act.qcfs(x, jnp.array([1.0, 2.0, 4.0]), 4)
        # Channel by channel: floor(2.4+.5)/4=.5 → .5; floor(1.2+.5)/4 → .25·2; floor(.6+.5)/4 → .25·4.
        np.testing.assert_array_equal(out, jnp.array([[0.5, 0.5, 1.0]] * 2))

    @pytest.mark.parametrize("levels", [0, -1, 2.5])
    def test_bad_levels_rejected(self, levels):
        with pytest.raises(ValueError, match="levels"):
            act.qcfs(jnp.ones(3), 1.0, levels)


class TestQCFSGradients:
    def test_floor_is_straight_through(self):
        np.testing.assert_array_equal(grad_x(act.floor_ste, [0.2, 1.7, -3.4]), [1.0, 1.0, 1.0])

    def test_clip_mask_is_inclusive_at_both_bounds(self):
        g = grad_x(lambda x: act.clip_inclusive(x, 0.0, 1.0), [-0.1, 0.0, 0.5, 1.0, 1.1])
        np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])
        # jnp.clip splits the gradient at the bounds; that is the behaviour we must not have.
        assert float(jax.grad(lambda x: jnp.clip(x, 0.0, 1.0))(0.0)) != 1.0

    def test_clip_floor_gradient_wrt_x(self):
        # Mask on x/λ ∈ [0, 1] (λ = 1), times λ·L/(λ·L) = 1 inside.
        g = grad_x(lambda x: act.qcfs(x, 1.0, 4, order="clip_floor"), [-0.1, 0.0, 0.5, 1.0, 1.05])
        np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])

    def test_floor_clip_gradient_wrt_x(self):
        # Mask on floor(4x + ½)/4 ∈ [0, 1]: -0.1 → floor(0.1)=0 (kept), -0.2 → -1 (clipped),
        # 1.05 → floor(4.7)=4 (kept, = 1 exactly), 1.2 → 5 (clipped).
        g = grad_x(lambda x: act.qcfs(x, 1.0, 4, order="floor_clip"), [-0.2, -0.1, 0.5, 1.05, 1.2])
        np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])

    def test_orders_differ_exactly_where_documented(self):
        x = jnp.array([-0.1, 1.05])  # outside [0, λ] but the floored value is 0 resp. 1
        g_cf = grad_x(lambda v: act.qcfs(v, 1.0, 4, order="clip_floor"), x)
        g_fc = grad_x(lambda v: act.qcfs(v, 1.0, 4, order="floor_clip"), x)
        np.testing.assert_array_equal(g_cf, [0.0, 0.0])
        np.testing.assert_array_equal(g_fc, [1.0, 1.0])

    @pytest.mark.parametrize("order", ["clip_floor", "floor_clip"])
    def test_gradient_wrt_threshold(self, order):
        # Inside: d/dλ [λ·q] with ∂q/∂λ through the STE = q − x/λ; clipped above: q = 1.
        def a(lam, x):
            return act.qcfs(x, lam, 4, order=order)

        assert float(jax.grad(a)(1.0, 0.6)) == pytest.approx(0.5 - 0.6)
        assert float(jax.grad(a)(1.0, 2.0)) == 1.0
        assert float(jax.grad(a)(1.0, -0.5)) == 0.0


class TestThresholdReLU:
    def test_is_clip(self):
        x = jax.random.normal(jax.random.key(1), (1000,)) * 3
        np.testing.assert_array_equal(act.threshold_relu(x, 2.0), jnp.clip(x, 0.0, 2.0))

    def test_gradients(self):
        g = grad_x(lambda x: act.threshold_relu(x, 1.0), [-0.5, 0.0, 0.5, 1.0, 1.5])
        np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])
        glam = jax.vmap(jax.grad(act.threshold_relu, argnums=1), (0, None))(jnp.array([0.5, 1.0, 1.5]), 1.0)
        np.testing.assert_array_equal(glam, [0.0, 0.0, 1.0])

    def test_relu(self):
        np.testing.assert_array_equal(act.relu(jnp.array([-1.0, 0.0, 2.0])), [0.0, 0.0, 2.0])


class TestSlipReLU:
    x = jax.random.uniform(jax.random.key(2), (5000,), minval=-2, maxval=6)

    def test_hand_value(self):
        # c=½: ramp 0.3, step floor(1.2 + ½)/4 = 0.25 → 0.275.
        assert float(act.slip_relu(jnp.float32(0.3), 1.0, 4, 0.5)) == pytest.approx(0.275)

    def test_c0_shift_half_is_qcfs(self):
        np.testing.assert_array_equal(
            act.slip_relu(self.x, 4.0, 4, 0.0, shift2=0.5),
            act.qcfs(self.x, 4.0, 4, 0.5, order="floor_clip"),
        )

    def test_c1_shift0_is_threshold_relu(self):
        np.testing.assert_array_equal(
            act.slip_relu(self.x, 4.0, 4, 1.0, shift1=0.0), jnp.clip(self.x, 0.0, 4.0)
        )

    def test_c0_shift0_is_clip_floor(self):
        np.testing.assert_array_equal(
            act.slip_relu(self.x, 4.0, 4, 0.0, shift2=0.0),
            4.0 * jnp.clip(jnp.floor(self.x * 4 / 4.0) / 4, 0.0, 1.0),
        )

    def test_special_case_gradients_match(self):
        g_slip = grad_x(lambda v: act.slip_relu(v, 4.0, 4, 0.0), self.x)
        g_qcfs = grad_x(lambda v: act.qcfs(v, 4.0, 4, order="floor_clip"), self.x)
        np.testing.assert_array_equal(g_slip, g_qcfs)

    @pytest.mark.parametrize("c", [-0.1, 1.5])
    def test_c_outside_unit_interval_rejected(self, c):
        with pytest.raises(ValueError, match="c must lie in"):
            act.slip_relu(self.x, 1.0, 4, c)


def test_levels_accept_numpy_ints_and_refuse_traced_values():
    x = jnp.linspace(-1.0, 3.0, 9)
    np.testing.assert_array_equal(act.qcfs(x, 2.0, np.int64(4)), act.qcfs(x, 2.0, 4))
    with pytest.raises(ValueError, match="traced value.*must be static"):
        jax.jit(lambda levels: act.qcfs(x, 2.0, levels))(4)
    with pytest.raises(ValueError, match="positive int"):
        act.qcfs(x, 2.0, 2.5)


@pytest.mark.parametrize(
    "fn", [lambda x, t: act.qcfs(x, t, 4), act.threshold_relu, lambda x, t: act.slip_relu(x, t, 4, 0.5)]
)
def test_non_positive_threshold_is_refused_outside_jit(fn):
    x = jnp.linspace(-1.0, 3.0, 9)
    for bad in (0.0, -1.0, jnp.array([1.0, -0.5])):
        with pytest.raises(ValueError, match="threshold λ must be positive"):
            fn(x[..., None] if jnp.ndim(bad) else x, bad)
    # Under jit λ is traced and not inspected (training may pass through λ ≤ 0 with the identity
    # parameterization, as the reference code does).
    assert jnp.all(jnp.isfinite(jax.jit(fn)(x, 1.0)))
