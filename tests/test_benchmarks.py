"""The side-by-side benchmark says what keeps the reference from running, and runs snnjax's side anyway."""

import importlib.util
import json

import pytest

from benchmarks import end_to_end, vs_reference


def test_missing_reference_names_each_missing_piece(tmp_path, monkeypatch):
    dirs = {repo: str(tmp_path / repo) for repo in vs_reference.REFERENCE_DIRS}
    (tmp_path / "SNN_conversion_QCFS").mkdir()
    (tmp_path / "SNN_conversion_QCFS" / "modules.py").write_text("")
    problems = vs_reference.missing_reference(dirs)
    torch_missing = importlib.util.find_spec("torch") is None
    assert len(problems) == 2 + torch_missing
    text = "\n".join(problems)
    assert f"no ANN_SNN_QCFS checkout at {tmp_path / 'ANN_SNN_QCFS'}" in text
    assert "missing utils.py, spikingjelly/clock_driven/neuron.py" in text  # modules.py is there
    assert text.count("bash benchmarks/get_reference.sh") == 2
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real_find_spec(name, *a)
    )
    problems = vs_reference.missing_reference(dirs)
    assert len(problems) == 3 and "PyTorch is not installed: `pip install torch==2.13.0`" in problems[0]


@pytest.mark.slow  # trains or simulates a model (10 s or more on 2 cores)
def test_without_the_reference_snnjax_side_runs_and_says_so(tmp_path, capsys):
    rows = vs_reference.main(
        [
            "--eval=resnet20:2",
            "--steps=2",
            "--train=",
            "--repeats=1",
            "--name=t",
            f"--results_dir={tmp_path}",
            f"--ann_snn_qcfs={tmp_path / 'none'}",
            f"--snn_conversion_qcfs={tmp_path / 'none'}",
        ]  # fmt: skip
    )
    out = capsys.readouterr().out
    assert "The reference side does not run (snnjax's side does):" in out
    assert json.loads((tmp_path / "t.json").read_text()) == rows
    (row,) = rows
    assert row["snnjax_images_per_second"] > 0 and row["snnjax_mode"] in ("layer", "step")
    assert "ratio" not in row and len(row["reference_missing"]) >= 2
    assert "n/a" in out  # the table's reference columns


def test_end_to_end_times_each_stage_of_a_whole_test_set(tmp_path, capsys):
    rows = end_to_end.main(
        [
            "--dataset=digits",
            "--models=tiny_cnn",
            "--steps=3",
            "--batch=64",
            "--limit=100",
            "--name=e",
            f"--results_dir={tmp_path}",
        ]
    )
    (row,) = rows
    assert json.loads((tmp_path / "e.json").read_text()) == rows
    assert row["num_test_images"] == 100 and row["T"] == 3 and row["mode"] in ("layer", "step")
    stages = row["load_seconds"] + row["warmup_seconds"] + row["simulate_seconds"]
    assert row["end_to_end_seconds"] == stages and min(row[k] for k in row if k.endswith("_seconds")) > 0
    assert row["images_per_second"] == 100 / row["simulate_seconds"]
    assert "tiny_cnn" in capsys.readouterr().out


def test_end_to_end_without_data_says_what_to_pass(monkeypatch):
    def no_tfds(name, data_dir=None, **kwargs):
        raise ValueError("tensorflow-datasets is not installed")

    monkeypatch.setattr(end_to_end.data_lib, "load_dataset", no_tfds)
    with pytest.raises(
        SystemExit, match="Could not load cifar10: tensorflow-datasets is not installed\nPass --data_dir"
    ):
        end_to_end.main(["--data_dir="])


@pytest.mark.slow  # trains or simulates a model (10 s or more on 2 cores)
def test_same_recipe_runs_snnjax_and_names_what_the_reference_side_lacks(tmp_path, capsys, monkeypatch):
    from benchmarks import same_recipe

    argv = [
        "--base_config=snnjax.configs.ci_tiny",
        "--epochs=1",
        "--seeds=1,2",
        "--set=qcfs_order=floor_clip,param_init=pytorch",
        "--snn_num_steps=4",
        "--test_examples=64",
        f"--workdir_root={tmp_path / 'runs'}",
        f"--reference={tmp_path / 'none'}",
        f"--reference_tools={tmp_path / 'none'}",
        f"--results_dir={tmp_path}",
        "--name=t",
    ]  # fmt: skip
    rows = same_recipe.main(argv)
    out = capsys.readouterr().out
    assert "The reference side does not run (snnjax's side does); missing:" in out
    assert "ref_train_qcfs.py in --reference_tools=" in out and "--data_dir" in out
    assert [(r["side"], r["seed"], r["test_images"]) for r in rows] == [("snnjax", 1, 64), ("snnjax", 2, 64)]
    assert rows[0]["overrides"] == {"qcfs_order": "floor_clip", "param_init": "pytorch"}
    assert json.loads((tmp_path / "same_recipe_t.json").read_text())[1]["seed"] == 2
    # The table's spread over the two seeds: mean ± sample std, by hand from the rows.
    anns = [100 * r["ann"] for r in rows]
    mean, std = sum(anns) / 2, abs(anns[0] - anns[1]) / 2**0.5
    line = [s for s in out.splitlines() if s.startswith("snnjax param_init=pytorch qcfs_order=floor_clip")][
        -1
    ]
    assert line.split()[3:6] == ["1", "2", f"{mean:.2f}±{std:.2f}"]  # epochs, seeds, ANN
    # A finished run is read back, not trained or converted again.
    monkeypatch.setattr(same_recipe.evaluation, "convert_and_evaluate", lambda *a: pytest.fail("converted"))
    assert same_recipe.main(argv) == rows
    # So is a run recorded by an older snnjax, before fields it did not record existed.
    recorded = next((tmp_path / "runs").glob("snnjax_e1_s1_*")) / "snn_eval.json"
    result = json.loads(recorded.read_text())
    for field in ("train_last_batch", "bn_running_var", "vit_dim"):
        del result["config"][field]
    recorded.write_text(json.dumps(result))
    assert same_recipe.main(argv) == rows


def test_same_steps_names_what_it_lacks(tmp_path, capsys):
    from benchmarks import same_steps

    rows = same_steps.main(
        [f"--reference={tmp_path / 'none'}", f"--pixels={tmp_path / 'none'}", f"--results_dir={tmp_path}"]
    )
    out = capsys.readouterr().out
    assert rows == [] and "The comparison does not run; missing:" in out
    assert "bash benchmarks/get_reference.sh" in out and "--data_dir" in out
    assert not list(tmp_path.glob("*.json"))
    with pytest.raises(SystemExit):  # a run that is not PAIR:DTYPE is refused before anything runs
        same_steps.main(["--runs=snnjax:float16"])
    assert "--runs: 'snnjax:float16' is not PAIR:DTYPE" in capsys.readouterr().err


@pytest.mark.slow  # trains a ResNet-20 (10 s or more on 2 cores)
# The reference checkout's code has invalid escape sequences, which Python warns about when compiling it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")
def test_same_steps_follows_the_reference_in_float64(tmp_path):
    from benchmarks import same_steps

    argv = ["--steps=2", "--batch=16", "--runs=snnjax:float64", f"--results_dir={tmp_path}", "--name=t"]
    rows = same_steps.main(argv)
    if not rows:  # no PyTorch, reference checkout or decoded pixels here: the output says which
        pytest.skip("benchmarks.same_steps lacks its inputs")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["loss_other"] == pytest.approx(row["loss_reference"], rel=1e-12)
        assert row["max_relative_update_difference"] < 1e-6  # float32 resolution of the importer


@pytest.mark.slow  # trains or simulates a model (10 s or more on 2 cores)
def test_nir_readers_compares_snnjax_with_sinabs_on_a_trained_network(tmp_path, capsys):
    from benchmarks import nir_readers

    argv = [
        "--config=configs/ci_tiny.py",
        f"--workdir={tmp_path / 'run'}",
        "--steps=4",
        "--batch=180",
        f"--results_dir={tmp_path}",
        "--name=t",
    ]
    rows = nir_readers.main(argv)
    out = capsys.readouterr().out
    runs = {row["run"]: row["accuracy"] for row in rows if "run" in row}
    assert set(runs) >= {"if", "multi_spike_if", "w8/x8 multi_spike_if"} and list(runs["if"]) == [1, 2, 4]
    comparison = rows[-1]["comparison"]
    if "sinabs" in runs:  # the sinabs extra is installed (CI installs it)
        # The same network: a spike flipped by float rounding at a threshold may move an image or two.
        for t, accuracy in runs["sinabs"].items():
            assert abs(accuracy - runs["multi_spike_if"][t]) * 360 <= 2
        assert comparison["float"]["max_abs_logit_difference"] < 10
        # On the integer form every sum is exact: the same logits at every step, the same table.
        assert runs["w8/x8 sinabs"] == runs["w8/x8 multi_spike_if"]
        assert comparison["hardware"]["max_abs_logit_difference"] <= 1e-5
        assert comparison["hardware"]["images_with_a_difference"] == 0
    else:
        assert "sinabs is not installed" in out and comparison == {}
    assert all(64 <= layer["max_level"] <= 127 for layer in rows[-1]["hardware"]["layers"])
    assert json.loads((tmp_path / "nir_readers_t.json").read_text())[-1]["test_images"] == 360


def test_hardware_bits_runs_each_variant_against_float32(trained_tiny, tmp_path, capsys):
    from benchmarks import hardware_bits

    assert hardware_bits.parse_variant("8c/16") == (8, "channel", 16)
    assert hardware_bits.parse_variant("6") == (6, "layer", 0)
    workdir, _ = trained_tiny
    rows = hardware_bits.main(
        [f"--workdir={workdir}", "--steps=2", "--variants=8/16,4", "--name=t", f"--results_dir={tmp_path}"]
    )
    assert [r["variant"] for r in rows] == ["float32", "8/16", "4"]
    assert [r["neuron"] for r in rows] == ["if", "fixed_point_if", "if"]
    assert rows[0]["hardware"] is None and rows[1]["hardware"]["state_bits"] == 16
    assert json.loads((tmp_path / "hardware_bits_t.json").read_text()) == rows
    assert "Δ float at T=2" in capsys.readouterr().out


def test_bn_running_var_scaling_is_what_training_with_the_unbiased_variance_gives(tmp_path):
    # The benchmark's premise: training with bn_running_var="unbiased" changes no parameter, and its
    # running variance is c·v + (1 − c)·m^k of the biased run's (c = n/(n−1), m = 0.9, k steps).
    import jax
    import numpy as np

    from benchmarks import bn_running_var
    from snnjax.configs import ci_tiny
    from snnjax.experiment import methods, training

    config = ci_tiny.get_config()
    config.num_epochs = 1
    biased = training.train_and_evaluate(config, str(tmp_path / "biased"), devices=jax.devices()[:1])
    config.bn_running_var = "unbiased"
    unbiased = training.train_and_evaluate(config, str(tmp_path / "unbiased"), devices=jax.devices()[:1])
    jax.tree.map(np.testing.assert_array_equal, biased.params, unbiased.params)
    model = methods.build_ann(config, 10)
    variables = {"params": biased.params, "batch_stats": biased.batch_stats}
    factors = bn_running_var.unbiased_factors(model, variables, (8, 8, 1), config.batch_size)
    assert factors == {"conv_bn0/bn": 2048 / 2047}  # 32 images × 8 × 8 positions
    steps = int(biased.step)  # 44
    scaled = bn_running_var.scaled_variances(variables, factors)["batch_stats"]["conv_bn0"]["bn"]["var"]
    c = 2048 / 2047
    np.testing.assert_allclose(
        unbiased.batch_stats["conv_bn0"]["bn"]["var"], scaled + (1 - c) * 0.9**steps, rtol=2e-6
    )
    np.testing.assert_array_equal(
        unbiased.batch_stats["conv_bn0"]["bn"]["mean"], biased.batch_stats["conv_bn0"]["bn"]["mean"]
    )


def test_level_fractions_by_hand():
    from benchmarks import level_occupancy

    # λ = 4, L = 4: levels 0, 1, 2, 3, 4; outputs of QCFS sit on them (rounded to absorb float error).
    outputs = [0.0, 1.0, 0.9999999, 2.0, 4.0, 3.0]
    assert level_occupancy.level_fractions(outputs, 4.0, 4) == [1 / 6, 2 / 6, 1 / 6, 1 / 6, 1 / 6]


def test_level_occupancy_of_a_trained_workdir_and_its_first_step(trained_tiny, tmp_path, capsys):
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import level_occupancy
    from snnjax.conversion import recording
    from snnjax.core import parallel
    from snnjax.experiment import pipeline, workdir as workdir_lib

    workdir, _ = trained_tiny
    rows = level_occupancy.main(
        [f"--workdirs={workdir}", "--images=64", "--name=t", f"--results_dir={tmp_path}"]
    )
    assert json.loads((tmp_path / "level_occupancy_t.json").read_text()) == rows
    sites = rows[0]["sites"]
    for site in sites.values():
        assert len(site["levels"]) == 5 and abs(sum(site["levels"]) - 1) < 1e-9
    assert "fraction of ANN outputs on level" in capsys.readouterr().out
    # The first site's input is the same conv of the same image in the ANN and the SNN, and v(0) = θ/2:
    # a neuron fires at t = 1 iff that input reaches λ/2.
    config, _ = workdir_lib.conversion_config(str(workdir), None, {"snn_num_steps": 1})
    plan = pipeline.ConversionPlan.from_config(config)
    restored = pipeline.restore(plan, str(workdir), parallel.data_mesh())
    images = jnp.asarray(restored.dataset.test_images[:64])
    first, (x, _) = next(
        iter(recording.record_activations(restored.model, restored.variables, images).items())
    )
    expected = float((np.asarray(x) >= sites[first]["threshold"] / 2).mean())
    assert (
        abs(sites[first]["t1_firing"] - expected) * np.asarray(x).size <= 2
    )  # rounding at λ/2, at most 2 units
