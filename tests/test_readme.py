"""The README's Python examples run as written, and what they claim holds."""

import pathlib
import re

import numpy as np
import pytest


@pytest.fixture(scope="module")
def readme_namespace():
    """The names defined by every ```python block of README.md, run in order in one namespace."""
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile("\n".join(blocks), "README.md", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_readme_python_example_runs(readme_namespace):
    namespace = readme_namespace
    assert namespace["logits"].shape == (4, 2, 10)
    assert namespace["prediction_at_t"].shape == (4, 2)
    # The example's claim: the IF rate over T = L = 8 steps matches QCFS with L = 8.
    import snnjax

    expected = snnjax.qcfs(namespace["x"], 2.0, 8)
    np.testing.assert_allclose(namespace["rate"], expected, atol=1e-6)


@pytest.mark.slow
def test_readme_nnx_example_gives_the_same_logits_in_layer_and_step_mode(readme_namespace):
    logits = readme_namespace["nnx_logits"]
    assert logits["layer"].shape == logits["step"].shape == (4, 2, 10)
    np.testing.assert_allclose(logits["layer"], logits["step"], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(logits["layer"])).max() > 0
    # The module itself is not changed: it stays in training mode.
    assert readme_namespace["nnx_net"].bn.use_running_average is False


@pytest.mark.slow
def test_readme_relu_function_examples_are_calibrated_per_site(readme_namespace):
    import jax

    import snnjax

    ns = readme_namespace
    shapes = {
        name: jax.tree.map(np.shape, ns[name]["sites"])
        for name in ("relu_nnx_calibrated", "relu_linen_calibrated", "mlp_calibrated")
    }
    assert shapes == {
        "relu_nnx_calibrated": {"block1": {"relu_0": ()}, "block2": {"relu_0": ()}},
        "relu_linen_calibrated": {"relu_0": (), "relu_1": ()},
        "mlp_calibrated": {"relu_0": ()},
    }
    assert set(ns["relu_nnx_calibrated"]) == {"nnx", "sites"}
    assert set(ns["mlp_calibrated"]) == {"params", "sites"}
    for name in ("relu_nnx_logits", "relu_linen_logits", "mlp_apply_logits"):
        assert ns[name].shape == (8, 2, 10), name
        assert np.isfinite(np.asarray(ns[name])).all(), name
    # Layer and step mode agree on the calibrated NNX model (BatchNorm folded) too.
    step = snnjax.spiking_apply(
        snnjax.spiking_model(ns["relu_nnx"], fold_bn=True, mode="step"),
        ns["relu_nnx_variables"],
        ns["relu_images"][:2],
        8,
    )
    np.testing.assert_allclose(ns["relu_nnx_logits"], step, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_readme_refusals_name_what_is_refused(readme_namespace):
    ns = readme_namespace
    assert re.search(r"cannot make spiking: tanh \(.*\(gelu_apply\)", ns["gelu_refusal"])
    assert re.search(r"site 'relu_0' has no threshold θ.*calibrate_thresholds", ns["uncalibrated_refusal"])
    # A ReLU inside an inner jax.jit is a site too, and the ANN's own jit cache is left alone.
    assert sorted(ns["jit_variables"]["sites"]) == ["relu_0", "relu_1"]
    assert ns["jit_snn_logits"].shape == (4, 2, 10)
    np.testing.assert_array_equal(ns["jit_apply"](ns["jit_params"], ns["mlp_inputs"]), ns["jit_ann_logits"])
    with pytest.raises(AssertionError, match="not refused"):
        ns["refusal"](lambda: None)
