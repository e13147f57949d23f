"""The conversion run as a pipeline (snnjax.experiment.pipeline): the plan, each stage, and convert's config.

The stages run on the session's trained ci_tiny workdir (QCFS TinyCNN, L = 4) and are checked against
independent computations: the checkpoint's own variables, λ read from the parameters, the library's
simulation run directly.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import snnjax
from snnjax.configs import ci_tiny, default
from snnjax.core import parallel
from snnjax.experiment import pipeline, workdir as workdir_lib
from snnjax.nn.layers import threshold_from_param

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    config = ci_tiny.get_config()
    for field, value in overrides.items():
        config[field] = value
    return config


def test_plan_reads_the_config_once():
    plan = pipeline.ConversionPlan.from_config(tiny_config(report_steps=(1, 16), snn_num_steps=8))
    assert (plan.method, plan.levels, plan.v0, plan.neuron, plan.post) == ("qcfs", 4, 0.5, "if", None)
    # t beyond T is clipped to T; L (= 4) is always reported.
    assert plan.report_steps == (1, 4, 8)
    assert plan.relu_calibration is None and not plan.windowed
    relu = pipeline.ConversionPlan.from_config(tiny_config(method="relu", calibration_percentile=99.0))
    assert relu.levels is None and relu.relu_calibration == (default.get_config().calibration_examples, 99.0)
    post = pipeline.ConversionPlan.from_config(tiny_config(post_conversion="burst", spikes_per_step=3))
    assert (post.neuron, post.run_neuron, post.neuron_options) == ("if", "burst", {"max_spikes": 3})
    spikeconverter = pipeline.ConversionPlan.from_config(tiny_config(method="spikeconverter"))
    assert spikeconverter.neuron == "integrate_then_fire" and spikeconverter.windowed
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.num_steps = 4


@pytest.fixture(scope="module")
def stages(trained_tiny):
    workdir, final = trained_tiny
    plan = pipeline.ConversionPlan.from_config(tiny_config(snn_num_steps=4, report_examples=16))
    mesh = parallel.data_mesh()
    restored = pipeline.restore(plan, str(workdir), mesh)
    converted = pipeline.convert(plan, restored, mesh)
    return plan, mesh, restored, converted, final


def test_restore_gives_the_trained_variables(stages):
    plan, _, restored, _, (params, batch_stats) = stages
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.variables["params"]), params)
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(restored.variables["batch_stats"]), batch_stats
    )
    assert restored.source["checkpoint"] == "latest" and restored.source["step"] == 88
    assert restored.dataset.num_test == restored.full_test == 360  # test_examples=0: the whole split


def test_convert_turns_lambda_into_theta(stages):
    plan, _, restored, converted, (params, _) = stages
    # Each activation layer's θ is its trained λ (identity parameterization or not).
    for name, layer in params.items():
        if "threshold" in layer:
            expected = threshold_from_param(layer["threshold"], plan.threshold_parameterization)
            np.testing.assert_allclose(
                converted.snn_variables["params"][name]["threshold"], expected, rtol=1e-6
            )
    assert converted.simulated_variables is converted.snn_variables  # no balancing, no calibration
    assert converted.calibration is None
    assert converted.spiking_layers == len(
        snnjax.record_activations(restored.model, restored.variables, jnp.zeros((1, 8, 8, 1)))
    )


def test_simulate_matches_the_library_simulation(stages, capsys):
    plan, mesh, restored, converted, _ = stages
    accuracy = pipeline.simulate(plan, restored, converted, mesh)
    images, labels = restored.dataset.test_images, restored.dataset.test_labels
    logits = snnjax.cumulative_mean_logits(
        snnjax.spiking_apply(plan.snn(restored.model), converted.snn_variables, jnp.asarray(images), 4)
    )
    expected = np.mean(np.asarray(jnp.argmax(logits, -1)) == labels[None], axis=1)
    np.testing.assert_allclose(accuracy["snn"]["top1"], expected, atol=1e-6)
    assert accuracy["latency"] == {1: 1, 2: 2, 3: 3, 4: 4}  # plain IF: readout t is its latency
    assert "SNN T=4" in capsys.readouterr().out


def test_analyse_record_and_write(stages, tmp_path):
    plan, mesh, restored, converted, _ = stages
    accuracy = pipeline.simulate(plan, restored, converted, mesh)
    analysis = pipeline.analyse(plan, restored, converted, mesh)
    assert [layer["name"] for layer in analysis["layers"]["layers"]] == list(
        snnjax.record_activations(restored.model, restored.variables, jnp.zeros((1, 8, 8, 1)))
    )
    assert analysis["method_energy"] is None and analysis["neurobench"]["SynapticOperations"]
    result = pipeline.record(plan, restored, converted, accuracy, analysis, None)
    assert result["T"] == 4 and result["levels"] == 4 and result["run_id"] is None
    assert result["snn_accuracy"] == {str(t + 1): float(a) for t, a in enumerate(accuracy["snn"]["top1"])}
    pipeline.write(plan, str(tmp_path), result, restored, converted, accuracy, analysis)
    written = json.loads((tmp_path / "snn_eval.json").read_text())
    assert written["run_id"] == result["run_id"] is not None
    assert written["outputs"] == ["snn_accuracy.png", "snn_layers.png"]
    assert (tmp_path / "snn_accuracy.png").stat().st_size > 0


# convert reads the trained config from the workdir and takes only conversion fields.


def test_conversion_config_reads_the_record_and_takes_conversion_fields(tiny_workdir):
    workdir, _ = tiny_workdir
    config, recorded = workdir_lib.conversion_config(str(workdir), None, {"snn_num_steps": 3})
    assert config.snn_num_steps == 3 and config.model == recorded["model"] == "tiny_cnn"
    assert config.report_steps == tuple(recorded["report_steps"])  # the type of the default
    with pytest.raises(ValueError, match=r"config\.levels was fixed by training .*levels=4"):
        workdir_lib.conversion_config(str(workdir), None, {"levels": 8})


def test_what_convert_cannot_read_is_named(tiny_workdir, tmp_path, capsys):
    workdir, _ = tiny_workdir
    with pytest.raises(ValueError, match=r"importing a PyTorch checkpoint .* needs --config"):
        pipeline.convert_and_evaluate(None, str(tmp_path / "new"), {"torch_checkpoint": "x.pth"})
    recorded = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**recorded, "levels": "four"}))
    with pytest.raises(ValueError, match=r"records config.levels='four', which this snnjax cannot read"):
        workdir_lib.conversion_config(str(workdir))
    del recorded["qcfs_order"]  # a field an older snnjax did not record: the default, with a note
    (workdir / "config.json").write_text(json.dumps(recorded))
    config, _ = workdir_lib.conversion_config(str(workdir))
    assert config.qcfs_order == default.get_config().qcfs_order
    assert "does not record qcfs_order" in capsys.readouterr().err


def test_a_whole_config_must_agree_on_every_network_field(tiny_workdir):
    """qcfs_order (missing from the old hand-kept NETWORK_FIELDS) is caught like any other field.

    Fields are network fields unless listed as conversion or training-only fields, so a field nobody
    classified is checked, never silently ignored.
    """
    workdir, _ = tiny_workdir
    recorded = json.loads((workdir / "config.json").read_text())
    other = "clip_floor" if recorded["qcfs_order"] == "floor_clip" else "floor_clip"
    with pytest.raises(
        ValueError, match=f"qcfs_order: trained with '{recorded['qcfs_order']}', now '{other}'"
    ):
        workdir_lib.conversion_config(str(workdir), tiny_config(qcfs_order=other))
    given = tiny_config(snn_num_steps=2, snn_mode="step", num_epochs=9, learning_rate=0.5)
    config, _ = workdir_lib.conversion_config(str(workdir), given)
    assert (config.snn_num_steps, config.snn_mode) == (2, "step")
    # Training-only fields are not the network's: accepted, and the record keeps the trained values.
    assert (config.num_epochs, config.learning_rate) == (recorded["num_epochs"], recorded["learning_rate"])
    assert workdir_lib.TRAINING_ONLY_FIELDS.isdisjoint(workdir_lib.CONVERSION_FIELDS)
    assert {"model", "levels", "qcfs_order", "pooling"}.isdisjoint(
        workdir_lib.TRAINING_ONLY_FIELDS | workdir_lib.CONVERSION_FIELDS
    )


def run_convert(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "convert.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_convert_command_needs_only_the_workdir(tiny_workdir):
    workdir, _ = tiny_workdir
    # Any spelling ml_collections reads counts as an override (here one dash).
    result = run_convert(f"--workdir={workdir}", "-config.snn_num_steps=2", "--config.report_examples=8")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((workdir / "snn_eval.json").read_text())
    assert written["T"] == 2 and written["config"]["model"] == "tiny_cnn"
    refused = run_convert(f"--workdir={workdir}", "--config.levels=8")
    assert refused.returncode == 1
    assert "config.levels was fixed by training" in refused.stderr and len(refused.stderr.splitlines()) == 1
