"""NIR export: strict refusal, file round trip, and the graph run by an independent NumPy interpreter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QCFS4, conv_nchw, init, randomize_variables, tiny_resnet

import snnjax
from snnjax import conversion, interop

nir = pytest.importorskip("nir")

IMAGE_SHAPE = (8, 8, 3)
NoHidden = functools.partial(snnjax.ConvNet, layers=(4, "P", 6), hidden=())  # test-only: head after flatten
BUILDS = {"cnn": snnjax.TinyCNN, "resnet": tiny_resnet, "no_hidden": NoHidden}


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
    snn_variables = conversion.ann_to_snn_variables(variables, fold_bn=True)
    return conversion.spiking_model(ann, fold_bn=True, v0=0.5, per_channel=per_channel), snn_variables


def run_graph(graph, images_nchw, num_steps, v0):
    """Runs a NIR graph with snnjax's semantics (v ≥ θ, reset by subtraction, v(0) = v0·θ, analog input
    every step), summing the inputs of each node; returns per-step outputs ``[T, B, classes]``."""
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
            elif kind == "AvgPool2d":
                k = int(node.kernel_size[0])
                n, c, h, w = x.shape
                x = x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))
            elif kind == "Flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "Affine":
                x = x @ node.weight.T + node.bias
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
    snn, variables = converted(snnjax.TinyCNN)
    with pytest.raises(ValueError, match="resets by subtraction.*lossy=True"):
        interop.to_nir(snn, variables, IMAGE_SHAPE, v0=0.5)


@pytest.mark.parametrize("name, per_channel", [(name, False) for name in BUILDS] + [("cnn", True)])
def test_round_trip_through_a_file_gives_identical_logits(tmp_path, name, per_channel):
    snn, variables = converted(BUILDS[name], per_channel)
    graph = interop.to_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    nir.write(tmp_path / "snn.nir", graph)
    rebuilt, rebuilt_variables, v0 = interop.from_nir(nir.read(tmp_path / "snn.nir"))
    images = jax.random.uniform(jax.random.key(1), (4, *IMAGE_SHAPE), minval=0.0, maxval=2.0)
    np.testing.assert_array_equal(
        conversion.spiking_apply(rebuilt, rebuilt_variables, images, 6),
        conversion.spiking_apply(snn, variables, images, 6),
    )
    assert v0 == 0.5 and graph.metadata["snnjax"]["reset"] == "subtract"


@pytest.mark.parametrize("name", list(BUILDS))
def test_graph_runs_like_the_snn_in_an_independent_interpreter(name):
    snn, variables = converted(BUILDS[name])
    graph = interop.to_nir(snn, variables, IMAGE_SHAPE, v0=0.5, lossy=True)
    assert list(graph.nodes["output"].output_type["output"]) == [3]
    images = np.asarray(jax.random.uniform(jax.random.key(2), (2, *IMAGE_SHAPE), minval=0.0, maxval=2.0))
    expected = conversion.spiking_apply(snn, variables, jnp.asarray(images), 6)
    got = run_graph(graph, images.transpose(0, 3, 1, 2), 6, v0=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_folded_thresholds_export_unit_thresholds_and_same_spikes():
    snn, variables = converted(snnjax.TinyCNN)
    graph = interop.to_nir(snn, variables, IMAGE_SHAPE, v0=0.5, fold_thresholds=True, lossy=True)
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
        interop.from_nir(graph)


def test_convert_writes_a_nir_file_that_reads_back(tiny_workdir):
    from snnjax import evaluation
    from snnjax.configs import ci_tiny

    workdir, _ = tiny_workdir  # ci_tiny trained once per session (conftest)
    config = ci_tiny.get_config()
    config.export_nir = True
    config.report_examples = 64
    evaluation.convert_and_evaluate(config, str(workdir))
    snn, variables, v0 = interop.from_nir(nir.read(workdir / "snn.nir"))
    images = jnp.zeros((4, 8, 8, 1))
    assert conversion.spiking_apply(snn, variables, images, 3).shape == (3, 4, 10) and v0 == 0.5
