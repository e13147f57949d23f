"""The structure graph (snnjax.conversion.structure): layers, pooling and the operations between them, read
from one jaxpr of the model, whatever function wrote them."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import QCFS4, init, tiny_resnet

import snnjax
from snnjax.conversion.structure import INPUT, trace_structure


def test_a_resnet_graph_has_its_residual_adds_shortcuts_and_global_mean():
    ann = tiny_resnet(QCFS4)
    x = jnp.zeros((1, 8, 8, 3))
    calls = trace_structure(ann, init(ann, (8, 8, 3)), x)
    index = {c.name: i for i, c in enumerate(calls)}
    by_name = {c.name: c for c in calls}
    # Identity shortcut: the block's second activation adds its BN output to the stem activation.
    # ``x + y`` in the block: the shortcut is read first.
    assert by_name["stage0_block0/act2"].sources == (index["stem_act"], index["stage0_block0/conv_bn2/bn"])
    assert by_name["stage0_block0/act2"].ops == ("add",)
    assert by_name["stage0_block0/act2"].fed_by is None
    # Projection shortcut: a conv reading the previous block's output, added to the main branch.
    assert by_name["stage1_block0/shortcut/conv"].fed_by == index["stage0_block0/act2"]
    assert by_name["stage1_block0/act2"].sources == (
        index["stage1_block0/shortcut/bn"],
        index["stage1_block0/conv_bn2/bn"],
    )
    # The stem activation is read twice (first conv of the block and the shortcut add), a BN's conv once.
    assert by_name["stem_act"].readers == 2 and by_name["stem/conv"].readers == 1
    assert by_name["head"].sources == (index["stage1_block0/act2"],)
    assert by_name["head"].ops == ("reduce_sum", "div")  # the global mean over H, W
    assert calls[0].sources == (INPUT,) and calls[0].kind == "conv"


class Pools(nn.Module):
    """Pooling written four ways: flax's avg_pool, NNX's max_pool, lax.reduce_window sum, padded."""

    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(nn.Conv(2, (3, 3))(x))
        a = nn.avg_pool(x, (2, 2), (2, 2))
        b = nnx.max_pool(x, (2, 2), (2, 2))
        c = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        d = nn.avg_pool(x, (3, 3), (2, 2), padding="SAME")
        e = jax.checkpoint(lambda v: nn.avg_pool(v, (4, 4), (4, 4)))(x)  # inside a remat: read through
        y = jnp.concatenate([a, b, c, d], axis=-1).reshape((x.shape[0], -1))
        return nn.Dense(2)(y) + nn.Dense(2)(e.reshape((x.shape[0], -1)))


def test_pooling_is_read_from_the_jaxpr_whatever_function_wrote_it():
    model, x = Pools(), jnp.zeros((1, 8, 8, 1))
    calls = trace_structure(model, model.init(jax.random.key(0), x), x)
    pools = [(c.kind, c.module["window"], c.module["strides"], c.module["padding"]) for c in calls[2:7]]
    assert pools == [
        ("avg_pool", (2, 2), (2, 2), "VALID"),
        ("max_pool", (2, 2), (2, 2), "VALID"),
        ("sum_pool", (2, 2), (2, 2), "VALID"),
        ("avg_pool", (3, 3), (2, 2), ((0, 1), (0, 1))),
        ("avg_pool", (4, 4), (4, 4), "VALID"),
    ]
    assert all(c.fed_by == 1 for c in calls[2:7])  # every pool reads the activation
    first, second = calls[7:]
    assert first.kind == second.kind == "dense"
    assert first.sources == (2, 3, 4, 5) and first.ops == ("concatenate", "reshape")
    assert second.sources == (6,) and second.ops == ("reshape",)


class Wide(nn.Dense):
    """A Dense subclass that calls its parent's ``__call__``: one layer call, not two."""

    def __call__(self, x):
        return super().__call__(x) * 2.0


class Conditional(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jax.lax.cond(x.sum() > 0, jax.nn.relu, lambda v: v, nn.Dense(3)(x))


def test_a_subclass_call_is_one_node_and_hidden_layers_are_refused_by_name():
    model = nn.Sequential([Wide(3), Wide(2)])
    x = jnp.zeros((1, 4))
    calls = trace_structure(model, model.init(jax.random.key(0), x), x)
    # The subclass's scaling is part of its call, so the second layer reads the first directly.
    assert [(c.name, c.fed_by) for c in calls] == [("layers_0", None), ("layers_1", 0)]
    model = Conditional()
    with pytest.raises(ValueError, match="cannot see layer 'relu_0'.*lax.cond"):
        trace_structure(model, model.init(jax.random.key(0), x), x)


class SharedConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Conv(2, (3, 3), name="shared")(x)
        z = nn.BatchNorm(use_running_average=True, name="norm")(y)
        return snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(z + y)


def test_folding_refuses_a_conv_whose_output_is_also_read_elsewhere_naming_both():
    model, x = SharedConv(), jnp.zeros((1, 4, 4, 1))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"cannot fold BatchNorm \['norm'\]: the output of \['shared'\]"):
        snnjax.fold_batchnorm(variables, model=model, inputs=x)


@pytest.mark.parametrize("build", ["cnn", "resnet"])
def test_snnjax_models_fold_through_the_graph_exactly_as_by_their_block_names(build):
    from helpers import randomize_variables

    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4) if build == "cnn" else tiny_resnet(QCFS4)
    variables = randomize_variables(init(ann, (8, 8, 3)), seed=4)
    by_graph = snnjax.fold_batchnorm(variables, model=ann, inputs=jnp.zeros((1, 8, 8, 3)))
    by_name = snnjax.fold_batchnorm(variables)
    assert jax.tree.structure(by_graph) == jax.tree.structure(by_name)
    jax.tree.map(np.testing.assert_array_equal, by_graph, by_name)


class ConvTwice(nn.Module):
    """One conv called twice, a BatchNorm after its first call only."""

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(1, (3, 3), name="shared")
        y = snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(
            nn.BatchNorm(use_running_average=True)(conv(x))
        )
        return conv(y)


class Rescaling(nn.Dense):
    """A Dense that computes more than x·W + b: folding its BatchNorm into W, b would be wrong."""

    def __call__(self, x):
        return super().__call__(x) * 2.0 + 1.0


class RescalingThenNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=True, name="norm")(Rescaling(3, name="dense")(x))


class SownAndKeyword(nn.Module):
    """A statistic of the conv output sown (and dropped by the call), and a BatchNorm given its input
    as a keyword: neither stops the fold."""

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(2, (3, 3), name="conv")(x)
        self.sow("intermediates", "rms", jnp.sqrt(jnp.mean(y**2)))
        y = nn.BatchNorm(use_running_average=True, name="norm")(x=y)
        return snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(y)


def randomized(model, x):
    from helpers import randomize_variables

    return randomize_variables(model.init(jax.random.key(0), x), seed=3)


def test_folding_refuses_a_layer_called_twice_or_computing_more_than_its_weights():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"\['shared'\] is called more than once"):
        snnjax.fold_batchnorm(randomized(ConvTwice(), x), model=ConvTwice(), inputs=x)
    x = jnp.zeros((1, 4))
    with pytest.raises(ValueError, match=r"folding BatchNorm \['norm'\] changed the ANN's outputs"):
        snnjax.fold_batchnorm(randomized(RescalingThenNorm(), x), model=RescalingThenNorm(), inputs=x)


def test_a_dropped_statistic_is_no_reader_and_a_keyword_input_is_a_node():
    model, x = SownAndKeyword(), jnp.zeros((1, 4, 4, 1))
    variables = randomized(model, x)
    calls = trace_structure(model, variables, x)
    assert [(c.name, c.fed_by, c.readers) for c in calls] == [
        ("conv", None, 1),
        ("norm", 0, 1),
        ("ThresholdActivation_0", 1, 1),
    ]
    folded = snnjax.fold_batchnorm(variables, model=model, inputs=x)
    images = jax.random.uniform(jax.random.key(1), (2, 4, 4, 1))
    np.testing.assert_allclose(
        snnjax.conversion.simulation.apply_folded(model, folded, images),
        model.apply(variables, images),
        atol=1e-5,
    )


class NamedLikeAPool(nn.Module):
    """A conv named ``pool2``, after a pooling the export also names ``pool2``."""

    @nn.compact
    def __call__(self, x):
        x = snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(nn.Conv(2, (3, 3))(x))
        x = snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(
            nn.Conv(2, (3, 3), name="pool2")(nn.avg_pool(x, (2, 2), (2, 2)))
        )
        return nn.Dense(2, name="output")(x.reshape((x.shape[0], -1)))


class DenseTwice(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(3, name="shared")
        return dense(snnjax.ThresholdActivation(fn=QCFS4.keywords["fn"])(dense(x)))


def test_nir_export_refuses_clashing_node_names_and_layers_called_twice():
    pytest.importorskip("nir")
    from snnjax import io as interop

    for model, shape, message in [
        (NamedLikeAPool(), (4, 4, 1), "two nodes would be named 'pool2'"),
        (DenseTwice(), (3,), "'shared' is called more than once"),
    ]:
        variables = snnjax.convert_variables(model.init(jax.random.key(0), jnp.zeros((1, *shape))))
        with pytest.raises(ValueError, match=message):
            interop.export_nir(snnjax.spiking_model(model), variables, shape, v0=0.5, lossy=True)
