"""The im2col convolution equals XLA's convolution in value and gradient, with nn.Conv's variables."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snnjax
from snnjax.core import activations
from snnjax.nn.layers import Conv, conv_hybrid, conv_im2col, conv_xla

RELU = functools.partial(snnjax.Activation, fn=activations.relu)


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [
        ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1))),
        ((2, 9, 8, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1))),  # odd/even sizes, stride 2
        ((3, 8, 8, 4), (1, 1, 4, 7), (2, 2), ((0, 0), (0, 0))),  # 1×1 projection shortcut
        ((1, 2, 2, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1))),  # the tiny maps where XLA:CPU is slow
        ((2, 7, 7, 2), (5, 3, 2, 3), (1, 2), ((2, 2), (1, 1))),  # non-square kernel, mixed strides
    ],
)
def test_im2col_and_hybrid_match_xla_values_and_gradients(shape, kernel, strides, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), kernel)
    cotangent = jax.random.normal(jax.random.key(2), conv_xla(x, k, strides, padding).shape)

    def loss(fn):
        return lambda x, k: jnp.sum(fn(x, k, strides, padding) * cotangent)

    np.testing.assert_allclose(
        conv_im2col(x, k, strides, padding), conv_xla(x, k, strides, padding), atol=1e-4
    )
    np.testing.assert_array_equal(conv_hybrid(x, k, strides, padding), conv_xla(x, k, strides, padding))
    grads_xla = jax.grad(loss(conv_xla), argnums=(0, 1))(x, k)
    for fn in (conv_im2col, conv_hybrid):
        grads = jax.grad(loss(fn), argnums=(0, 1))(x, k)
        for a, b in zip(grads, grads_xla, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_module_has_nn_conv_variables_and_leading_axes():
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 3))
    ours = Conv(4, (3, 3), padding=((1, 1), (1, 1)), implementation="im2col")
    reference = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)))
    v_ours = ours.init(jax.random.key(4), x)
    v_ref = reference.init(jax.random.key(4), x)
    jax.tree.map(np.testing.assert_array_equal, v_ours, v_ref)  # same names, shapes and initial values
    v_ref = jax.tree.map(lambda p: p + 0.1, v_ref)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(v_ref, x), reference.apply(v_ref, x), atol=1e-5)
    time_major = jnp.broadcast_to(x, (3, *x.shape))
    np.testing.assert_allclose(ours.apply(v_ref, time_major)[1], reference.apply(v_ref, x), atol=1e-5)


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="allowed: auto, im2col, xla, hybrid"):
        Conv(4, implementation="winograd").init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


@pytest.mark.parametrize("name", ["resnet20", "vgg16"])
def test_every_convolution_of_a_model_uses_the_chosen_implementation(name):
    # Regression: ResNet's blocks were built without the model's conv_implementation, so only the stem
    # honoured it (and benchmarks of "xla" vs "im2col" ResNets timed the same network).
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, Conv) and context.method_name == "__call__":
            seen.append(context.module.implementation)
        return next_fun(*args, **kwargs)

    model = snnjax.create_model(name, 10, RELU, conv_implementation="im2col")
    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert len(seen) == {"resnet20": 21, "vgg16": 13}[name]
    assert set(seen) == {"im2col"}


def test_unbiased_running_variance_is_pytorchs_update():
    # Three training batches [4, 3, 3, 2]: n = 36 values per channel; the running variance is the EMA
    # (momentum 0.9 in Flax terms, PyTorch's 0.1) of the unbiased batch variance, by hand in NumPy.
    from snnjax.nn.layers import BatchNorm, UnbiasedVarianceBatchNorm

    module = BatchNorm(running_var="unbiased", use_running_average=False)
    assert isinstance(module, UnbiasedVarianceBatchNorm)
    batches = [jax.random.normal(jax.random.key(i), (4, 3, 3, 2)) * (i + 1) + i for i in range(3)]
    variables = module.init(jax.random.key(9), batches[0])
    expected_mean, expected_var = np.zeros(2), np.ones(2)
    for x in batches:
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        variables = {**variables, **updates}
        flat = np.asarray(x, np.float64).reshape(-1, 2)
        expected_mean = 0.9 * expected_mean + 0.1 * flat.mean(0)
        expected_var = 0.9 * expected_var + 0.1 * flat.var(0, ddof=1)
        # Training output: normalized by the biased batch variance, as nn.BatchNorm (and PyTorch).
        plain = BatchNorm(use_running_average=False).apply(variables, x, mutable=["batch_stats"])[0]
        np.testing.assert_allclose(y, plain, rtol=0, atol=0)
    np.testing.assert_allclose(variables["batch_stats"]["mean"], expected_mean, rtol=1e-6)
    np.testing.assert_allclose(variables["batch_stats"]["var"], expected_var, rtol=1e-6)
    # The biased default differs by the factor n/(n−1) = 36/35 on each update's batch term.
    biased = BatchNorm(use_running_average=False)
    stats = biased.init(jax.random.key(9), batches[0])
    for x in batches:
        stats = {**stats, **biased.apply(stats, x, mutable=["batch_stats"])[1]}
    assert np.all(np.asarray(stats["batch_stats"]["var"]) < expected_var - 1e-3)
    # Evaluation reads the running statistics and leaves them as they are.
    evaluating = BatchNorm(running_var="unbiased", use_running_average=True)
    out, updates = evaluating.apply(variables, batches[0], mutable=["batch_stats"])
    np.testing.assert_allclose(
        out[..., 0], (batches[0][..., 0] - expected_mean[0]) / np.sqrt(expected_var[0] + 1e-5), atol=1e-5
    )
    np.testing.assert_array_equal(updates["batch_stats"]["var"], variables["batch_stats"]["var"])
    with pytest.raises(ValueError, match="running_var='mean' is unknown"):
        BatchNorm(running_var="mean")


def test_bn_running_var_option_reaches_the_model():
    from snnjax.configs import ci_tiny
    from snnjax.experiment import methods
    from snnjax.nn.layers import UnbiasedVarianceBatchNorm

    config = ci_tiny.get_config()
    assert methods.build_ann(config, 10).norm is snnjax.nn.layers.BatchNorm
    config.bn_running_var = "unbiased"
    model = methods.build_ann(config, 10)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    captured = []
    with nn.intercept_methods(lambda f, a, k, c: captured.append(type(c.module)) or f(*a, **k)):
        model.apply(variables, x)
    assert UnbiasedVarianceBatchNorm in captured and nn.BatchNorm not in captured
