"""NIR export: strict refusal, file round trip, and the graph run by an independent NumPy interpreter."""

import functools
import inspect
import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QCFS4, conv_nchw, init, randomize_variables, tiny_resnet

import snnjax
from snnjax import conversion, io as interop

nir = pytest.importorskip("nir")

IMAGE_SHAPE = (8, 8, 3)
NoHidden = functools.partial(snnjax.ConvNet, layers=(4, "P", 6), hidden=())  # test-only: head after flatten


class UserResidual(nn.Module):
    """A user's residual network (not a snnjax model): exported from its structure graph, the add as
    fan-in, the global mean as a whole-map AvgPool2d and a Flatten."""

    num_classes: int
    activation: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self.activation(name="stem_act")(nn.Conv(4, (3, 3), name="stem")(x))
        y = nn.BatchNorm(use_running_average=True, name="bn")(nn.Conv(4, (3, 3), name="c1")(x))
        y = nn.Conv(4, (3, 3), name="c2")(self.activation(name="inner")(y))
        x = self.activation(name="out")(y + x)
        return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


BUILDS = {
    "cnn": snnjax.nn.models.TinyCNN,
    "resnet": tiny_resnet,
    "no_hidden": NoHidden,
    "user_residual": UserResidual,
}


def converted(build, per_channel=False, seed=0):
    ann = build(num_classes=3, activation=functools.partial(QCFS4, per_channel=per_channel))
    variables = randomize_variables(init(ann, IMAGE_SHAPE), seed)
    # Distinct thresholds per layer (and per channel): θ in [0.6, 1.4].
    variables = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            jnp.linspace(0.6, 1.4, x.size).reshape(x.shape) + 0.1 * len(str(p)) % 0.3
            if p[-1].key == "threshold"
            else x
        ),
        variables,
    )
    example = jnp.zeros((1, *IMAGE_SHAPE))  # BatchNorm is folded by the structure graph
    snn_variables = conversion.convert_variables(variables, fold_bn=True, model=ann, inputs=example)
    return conversion.spiking_model(ann, fold_bn=True, v0=0.5, per_channel=per_channel), snn_variables


def run_graph(graph, images_nchw, num_steps, v0, semantics="snnjax"):
    """Runs a NIR graph with snnjax's semantics (v ≥ θ, reset by subtraction, v(0) = v0·θ, analog input
    every step), summing the inputs of each node; returns per-step outputs ``[T, B, classes]``.

    ``semantics="sinabs"``: IF nodes as sinabs runs them (v(0) = 0, n = trunc(v/θ) spikes when v > 0,
    v −= n·θ, v floored at −θ, the output is the count n), and SumPool2d nodes."""
    order, incoming = [], {name: [s for s, d in graph.edges if d == name] for name in graph.nodes}
    while len(order) < len(graph.nodes):  # topological order
        order += [n for n in graph.nodes if n not in order and all(s in order for s in incoming[n])]
    membranes, outputs = {}, []
    for _ in range(num_steps):
        values = {}
        for name in order:
            node = graph.nodes[name]
            x = images_nchw if name == "input" else sum(values[s] for s in incoming[name])
            kind = type(node).__name__
            if kind == "Conv2d":
                x = conv_nchw(x, node.weight, int(node.stride[0]), int(node.padding[0]), node.bias)
            elif kind == "SumPool2d":
                k = int(node.kernel_size[0])
                n, c, h, w = x.shape
                x = x.reshape(n, c, h // k, k, w // k, k).sum(axis=(3, 5))
            elif kind == "AvgPool2d":
                k = int(node.kernel_size[0])
                n, c, h, w = x.shape
                x = x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))
            elif kind == "Flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "Affine":
                x = x @ node.weight.T + node.bias
            elif kind == "IF" and semantics == "sinabs":
                theta = node.v_threshold[None]
                v = membranes.get(name, np.zeros_like(x)) + x
                count = (v > 0) * np.trunc(v / theta)
                membranes[name] = np.maximum(v - count * theta + theta, 0) - theta
                x = count
            elif kind == "IF":
                theta = node.v_threshold[None]
                v = membranes.get(name, np.broadcast_to(v0 * theta, x.shape)) + x
                spikes = np.where(v >= theta, theta, 0.0)
                membranes[name] = v - spikes
                x = spikes
            values[name] = x
        outputs.append(values["output"])
    return np.stack(outputs)


def test_export_is_strict_by_default():
    snn, variables = converted(snnjax.nn.models.TinyCNN)
    with pytest.raises(ValueError, match="resets by subtraction.*lossy=True"):
        interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5)


def test_exported_arrays_are_writable():
    # Readers pass them to torch.tensor, which warns on read-only memory (what np.asarray of a jax.Array is).
    snn, variables = converted(snnjax.nn.models.TinyCNN)
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    arrays = [v for node in graph.nodes.values() for v in vars(node).values() if isinstance(v, np.ndarray)]
    assert len(arrays) > 10 and all(array.flags.writeable for array in arrays)


@pytest.mark.parametrize("name, per_channel", [(name, False) for name in BUILDS] + [("cnn", True)])
def test_round_trip_through_a_file_gives_identical_logits(tmp_path, name, per_channel):
    snn, variables = converted(BUILDS[name], per_channel)
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    nir.write(tmp_path / "snn.nir", graph)
    rebuilt, rebuilt_variables, v0 = interop.import_nir(nir.read(tmp_path / "snn.nir"))
    images = jax.random.uniform(jax.random.key(1), (4, *IMAGE_SHAPE), minval=0.0, maxval=2.0)
    np.testing.assert_array_equal(
        conversion.spiking_apply(rebuilt, rebuilt_variables, images, 6),
        conversion.spiking_apply(snn, variables, images, 6),
    )
    assert v0 == 0.5 and graph.metadata["snnjax"]["reset"] == "subtract"


@pytest.mark.parametrize("name", list(BUILDS))
def test_graph_runs_like_the_snn_in_an_independent_interpreter(name):
    snn, variables = converted(BUILDS[name])
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    assert list(graph.nodes["output"].output_type["output"]) == [3]
    images = np.asarray(jax.random.uniform(jax.random.key(2), (2, *IMAGE_SHAPE), minval=0.0, maxval=2.0))
    expected = conversion.spiking_apply(snn, variables, jnp.asarray(images), 6)
    got = run_graph(graph, images.transpose(0, 3, 1, 2), 6, v0=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, per_channel", [(name, False) for name in BUILDS] + [("cnn", True)])
def test_a_graph_for_sinabs_runs_in_its_semantics_as_the_multi_spike_snn(name, per_channel):
    snn, variables = converted(BUILDS[name], per_channel)
    snn = snn.clone(neuron="multi_spike_if", v0=0.0)
    with pytest.raises(ValueError, match="sinabs runs an IF with multi-spike output"):
        interop.export_nir(snn.clone(neuron="if"), variables, IMAGE_SHAPE, v0=0.0, target="sinabs")
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.0, target="sinabs")  # exact: no lossy
    kinds = {type(node).__name__ for node in graph.nodes.values()}
    assert "AvgPool2d" not in kinds and "SumPool2d" in kinds  # every build pools (a global mean too)
    assert graph.metadata["snnjax"]["target"] == "sinabs"
    # Inputs up to 3: several spikes per step, and the membrane floor at −θ binds.
    images = np.asarray(jax.random.uniform(jax.random.key(5), (2, *IMAGE_SHAPE), minval=-1.0, maxval=3.0))
    expected = conversion.spiking_apply(snn, variables, jnp.asarray(images), 6)
    got = run_graph(graph, images.transpose(0, 3, 1, 2), 6, v0=0.0, semantics="sinabs")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="written for sinabs.*sinabs.from_nir"):
        interop.import_nir(graph)


def test_target_difference_measures_what_the_sinabs_semantics_change():
    snn, variables = converted(snnjax.nn.models.TinyCNN)
    images = jax.random.uniform(jax.random.key(6), (8, *IMAGE_SHAPE), minval=0.0, maxval=2.0)
    labels = np.arange(8) % 3
    got = interop.target_difference(snn, variables, images, 5, labels=labels)
    # By hand from the two simulations: predictions of the mean output over steps 1..t.
    own = np.cumsum(conversion.spiking_apply(snn, variables, images, 5), axis=0)
    target = snn.clone(neuron="multi_spike_if", v0=0.0)
    theirs = np.cumsum(conversion.spiking_apply(target, variables, images, 5), axis=0)
    agreement = np.mean(np.argmax(own, -1) == np.argmax(theirs, -1), axis=1)
    np.testing.assert_allclose(got["agreement"], agreement)
    target_accuracy = np.mean(np.argmax(theirs, -1) == labels[None], axis=1)
    np.testing.assert_allclose(got["accuracy"]["target"], target_accuracy)
    assert got["max_abs_difference"] > 0  # v(0) = ½θ and one spike per step against v(0) = 0, several
    same = interop.target_difference(target, variables, images, 5)
    assert same["max_abs_difference"] == 0.0 and same["agreement"] == [1.0] * 5


def test_folded_thresholds_export_unit_thresholds_and_same_spikes():
    snn, variables = converted(snnjax.nn.models.TinyCNN)
    graph = interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, fold_thresholds=True, lossy=True)
    assert all(np.all(n.v_threshold == 1.0) for n in graph.nodes.values() if type(n).__name__ == "IF")
    images = np.asarray(jax.random.uniform(jax.random.key(3), (2, *IMAGE_SHAPE), minval=0.0, maxval=2.0))
    np.testing.assert_allclose(
        run_graph(graph, images.transpose(0, 3, 1, 2), 6, v0=0.5),
        conversion.spiking_apply(snn, variables, jnp.asarray(images), 6),
        rtol=1e-4,
        atol=1e-4,
    )


def test_graphs_not_from_snnjax_are_refused():
    graph = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([2])}), "output": nir.Output({"output": np.array([2])})},
        edges=[("input", "output")],
    )
    with pytest.raises(ValueError, match="not written by snnjax"):
        interop.import_nir(graph)


def test_convert_writes_a_nir_file_that_reads_back(tiny_workdir):
    from snnjax.configs import ci_tiny
    from snnjax.experiment import pipeline as evaluation

    workdir, _ = tiny_workdir  # ci_tiny trained once per session (conftest)
    config = ci_tiny.get_config()
    config.export_nir = True
    config.report_examples = 64
    evaluation.convert_and_evaluate(config, str(workdir))
    snn, variables, v0 = interop.import_nir(nir.read(workdir / "snn.nir"))
    images = jnp.zeros((4, 8, 8, 1))
    assert conversion.spiking_apply(snn, variables, images, 3).shape == (3, 4, 10) and v0 == 0.5


# import_nir checks the graph it reads: an edited file is refused, naming the node (and the file).


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``{name: path}`` of the NIR files export_nir writes for the TinyCNN and the tiny ResNet."""
    paths = {}
    for name in ("cnn", "resnet"):
        snn, variables = converted(BUILDS[name])
        paths[name] = tmp_path_factory.mktemp(name) / "snn.nir"
        nir.write(paths[name], interop.export_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True))
    return paths


def insert_node(nodes, edges):  # an IF on the edge act0 → pool1
    nodes["extra"] = nir.IF(r=np.ones((4, 8, 8), np.float32), v_threshold=np.ones((4, 8, 8), np.float32))
    edges[edges.index(("act0", "pool1"))] = ("act0", "extra")
    edges.append(("extra", "pool1"))


def lif_for_if(nodes, edges):
    theta = nodes["act0"].v_threshold
    nodes["act0"] = nir.LIF(
        tau=np.ones_like(theta), r=np.ones_like(theta), v_leak=0 * theta, v_threshold=theta
    )


def remove_edge(nodes, edges):
    edges.remove(("act0", "pool1"))


def redirect_residual(nodes, edges):  # the block's add reads act1 instead of the block input
    edges[edges.index(("stem_act", "stage0_block0.act2"))] = ("stage0_block0.act1", "stage0_block0.act2")


def five_channels(nodes, edges):  # conv_bn0 writes 5 channels where act0 reads 4
    old = nodes["conv_bn0"]
    weight, bias = np.concatenate([old.weight, old.weight[:1]]), np.concatenate([old.bias, old.bias[:1]])
    nodes["conv_bn0"] = nir.Conv2d((8, 8), weight, 1, 1, 1, 1, bias)


def scaled_input(nodes, edges):
    nodes["fc_act0"] = nir.IF(r=2 * nodes["fc_act0"].r, v_threshold=nodes["fc_act0"].v_threshold)


EDITS = {
    "inserted node": (
        "cnn",
        insert_node,
        r"node 'extra' \(IF; edges 'act0' → 'extra', 'extra' → 'pool1'\) is not part of the network",
    ),
    "LIF for IF": (
        "cnn",
        lif_for_if,
        r"node 'act0' is a nir.LIF, which snnjax cannot run; it runs only Input, Conv2d, IF, AvgPool2d, "
        r"Flatten, Affine, Output",
    ),
    "edge removed": ("cnn", remove_edge, r"lacks the network's edge 'act0' → 'pool1'"),
    "residual redirected": (
        "resnet",
        redirect_residual,
        r"the edge 'stage0_block0.act1' → 'stage0_block0.act2' is not in the network, where "
        r"'stage0_block0.act2' reads only \['stage0_block0.conv_bn2', 'stem_act'\]",
    ),
    "shape mismatch": (
        "cnn",
        five_channels,
        r"node 'conv_bn0' \(Conv2d\): its weight shape is \(5, 3, 3, 3\) where the network has "
        r"\(4, 3, 3, 3\)",
    ),
    "IF scales its input": ("cnn", scaled_input, r"node 'fc_act0' \(IF\): r is not 1"),
}


def as_written(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` without NIR's type inference (nir >= 1.0.5 infers types on read and
    construction unless told not to; nir 1.0.4, the newest the sinabs extra allows, never does)."""
    if "type_check" in inspect.signature(fn).parameters:
        return fn(*args, **kwargs, type_check=False)
    return fn(*args, **kwargs)


def edited(written, tmp_path, build, edit):
    """The path of a copy of ``written[build]`` with ``edit(nodes, edges)`` applied."""
    graph = as_written(nir.read, written[build])
    edit(graph.nodes, graph.edges)
    path = tmp_path / "edited.nir"
    nir.write(path, as_written(nir.NIRGraph, nodes=graph.nodes, edges=graph.edges, metadata=graph.metadata))
    return path


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_graphs_are_refused_naming_the_node(written, tmp_path, case):
    build, edit, message = EDITS[case]
    path = edited(written, tmp_path, build, edit)
    with pytest.raises(ValueError, match=message + r".*re-export the network with export_nir"):
        interop.import_nir(as_written(nir.read, path))  # the graph as written, no NIR inference


def test_from_a_path_errors_name_the_file_and_snnjax_files_load(written, tmp_path):
    path = edited(written, tmp_path, "cnn", insert_node)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: node 'extra'"):
        interop.import_nir(path)
    (tmp_path / "junk.nir").write_bytes(b"not HDF5")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(tmp_path / 'junk.nir'))} is not a readable NIR file"
    ):
        interop.import_nir(tmp_path / "junk.nir")
    snn, variables, _ = interop.import_nir(written["resnet"])
    expected_snn, expected_variables, _ = interop.import_nir(nir.read(written["resnet"]))
    images = jax.random.uniform(jax.random.key(4), (2, *IMAGE_SHAPE), minval=0.0, maxval=2.0)
    np.testing.assert_array_equal(
        conversion.spiking_apply(snn, variables, images, 3),
        conversion.spiking_apply(expected_snn, expected_variables, images, 3),
    )
