"""Shape and parameter-count tests for the architectures (shape-only for the big ones)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QCFS4, init, randomize_variables, tiny_resnet

import snnjax
from snnjax.core import activations

RELU = functools.partial(snnjax.Activation, fn=activations.relu)


def param_count(model, image_shape):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape))))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize(
    "builder, expected",
    [
        # Published counts of the CIFAR PyTorch definitions (conv+BN weights, no running stats).
        (snnjax.ResNet18, 11_173_962),
        (snnjax.ResNet34, 21_282_122),
        # Hand count: stem 464 + stages 14,016 / 51,648 / 205,696 (1×1 projections) + head 650.
        (snnjax.ResNet20, 272_474),
        # Hand count: 13 convs with bias 14,714,688 + BN 8,448 + head 18,923,530.
        (snnjax.VGG16, 33_646_666),
    ],
)
def test_parameter_counts(builder, expected):
    assert param_count(builder(num_classes=10, activation=RELU), (32, 32, 3)) == expected


def test_each_activation_layer_owns_one_threshold():
    shapes = jax.eval_shape(lambda: init(snnjax.ResNet18(num_classes=10, activation=QCFS4), (32, 32, 3)))
    leaves = jax.tree_util.tree_leaves_with_path(shapes["params"])
    thresholds = [(path, leaf) for path, leaf in leaves if "threshold" in str(path)]
    assert len(thresholds) == 17  # stem + 8 blocks × 2
    assert all(leaf.shape == () for _, leaf in thresholds)


@pytest.mark.parametrize(
    "builder, image_shape",
    [
        (snnjax.VGG16, (32, 32, 3)),
        (snnjax.ResNet20, (32, 32, 3)),
        (snnjax.SmallCNN, (8, 8, 1)),
        (snnjax.nn.models.TinyCNN, (8, 8, 1)),
        (snnjax.VGG16, (224, 224, 3)),  # ImageNet head: flatten 7·7·512
    ],
)
def test_ann_and_time_major_snn_shapes(builder, image_shape):
    model = builder(num_classes=7, activation=QCFS4)
    variables = jax.eval_shape(lambda: init(model, image_shape))
    ann = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((2, *image_shape)))
    assert ann.shape == (2, 7)
    snn_model = snnjax.spiking_model(model)
    snn = jax.eval_shape(
        lambda v, x: snnjax.spiking_apply(snn_model, v, x, 3), variables, jnp.zeros((2, *image_shape))
    )
    assert snn.shape == (3, 2, 7)


def test_imagenet_vgg_first_linear_reads_7x7x512():
    model = snnjax.VGG16(num_classes=1000, activation=RELU)
    variables = jax.eval_shape(lambda: init(model, (224, 224, 3)))
    assert variables["params"]["fc0"]["kernel"].shape == (7 * 7 * 512, 4096)


def test_ann_and_snn_share_one_variable_tree():
    """No second model: the SNN runs the ANN's own variable tree (λ → θ in place) and reads all of it."""
    model = tiny_resnet(QCFS4)
    variables = randomize_variables(init(model, (8, 8, 3)), threshold=0.7)  # a network that fires
    snn_variables = snnjax.convert_variables(variables)
    assert jax.tree.structure(snn_variables) == jax.tree.structure(variables)
    images = jax.random.uniform(jax.random.key(3), (2, 8, 8, 3))
    run = jax.jit(lambda v: snnjax.spiking_apply(snnjax.spiking_model(model), v, images, 4))
    base = run(snn_variables)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(snn_variables)
    for i, (path, _) in enumerate(leaves):  # every leaf changes the SNN's output
        changed = [x + 0.5 if j == i else x for j, (_, x) in enumerate(leaves)]
        assert not np.array_equal(run(jax.tree.unflatten(treedef, changed)), base), path


def test_batchnorm_uses_pytorch_defaults():
    bn = snnjax.BatchNorm()
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)


@pytest.mark.parametrize("name", ["VGG16", "SmallCNN", "TinyCNN", "ResNet18", "ResNet20", "ResNet34"])
def test_model_factories_have_their_own_docstrings(name):
    import inspect

    doc = inspect.getdoc(getattr(snnjax.nn.models, name))
    assert "partial(func" not in doc and "**fields" in doc and "Returns:" in doc
