"""Nothing lost, nothing silent: diverging runs, config drift, corrupt checkpoints, the command line."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snnjax import checkpoints, data as data_lib, evaluation, training, workdir as workdir_lib
from snnjax.configs import ci_tiny

ROOT = pathlib.Path(__file__).parents[1]


def tiny_config(**overrides):
    """The config of the session's trained ``tiny_workdir`` (2 epochs of 44 steps), with overrides."""
    config = ci_tiny.get_config()
    for field, value in overrides.items():
        config[field] = value
    return config


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def steps_in(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


# 1. A diverging run never saves non-finite state.


def nan_params_from_step(monkeypatch, first_bad_step):
    """Makes the update of step ``first_bad_step`` (and later) write NaN into the parameters.

    The loss is computed before the update, so it stays finite: only a check of the state can see it.
    """
    original = training.train_step

    def diverging(state, images, labels):
        new_state, metrics = original(state, images, labels)
        bad = new_state.step >= first_bad_step
        params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new_state.params)
        return new_state.replace(params=params), metrics

    monkeypatch.setattr(training, "train_step", diverging)


def test_non_finite_state_is_never_saved_and_the_last_finite_step_is_named(tmp_path, monkeypatch):
    nan_params_from_step(monkeypatch, 88)  # the last update of epoch 2: its loss (from before) is finite
    config = tiny_config(log_every_steps=100)  # checked at the epoch's end only, before the save
    with pytest.raises(
        FloatingPointError, match=r"diverged by step 88 \(epoch 2\): non-finite params/"
    ) as err:
        training.train_and_evaluate(config, str(tmp_path))
    assert "step 44 (finite)" in str(err.value) and "training loss" not in str(err.value)
    assert steps_in(tmp_path / "checkpoints") == [44] and steps_in(tmp_path / "best") == [44]
    manager = checkpoints.checkpoint_manager(str(tmp_path), read_only=True)
    template = training.abstract_train_state(config, data_lib.load_dataset("digits", seed=config.seed), 44)
    state, step, _ = checkpoints.restore_newest_readable(manager, template)
    assert step == 44 and not training.non_finite_variables(state)


def test_divergence_before_the_first_checkpoint_says_none_was_saved(tmp_path, monkeypatch):
    nan_params_from_step(monkeypatch, 5)
    with pytest.raises(FloatingPointError, match="by step 10 .*no checkpoint had been saved yet"):
        training.train_and_evaluate(tiny_config(log_every_steps=10), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not steps_in(tmp_path / "checkpoints")


def test_non_finite_variables_names_every_bad_array():
    config = tiny_config()
    template = training.abstract_train_state(config, data_lib.load_dataset("digits", seed=config.seed), 44)
    state = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), template)
    assert training.non_finite_variables(state) == []
    bad = {("conv_bn0", "conv", "kernel"), ("fc_act0", "threshold")}
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[...].set(jnp.inf) if tuple(k.key for k in path) in bad else x, state.params
    )
    assert training.non_finite_variables(state.replace(params=params)) == [
        "params/conv_bn0/conv/kernel",
        "params/fc_act0/threshold",
    ]


# 3. A workdir belongs to one training config.


@pytest.mark.parametrize(
    "field, value",
    [("batch_size", 16), ("method", "slip_relu"), ("learning_rate", 0.05), ("num_epochs", 3), ("seed", 1)],
)
def test_training_refuses_another_config_in_a_trained_workdir(tiny_workdir, field, value, monkeypatch):
    workdir, _ = tiny_workdir
    recorded = (workdir / "config.json").read_bytes()
    monkeypatch.setattr(data_lib, "load_dataset", lambda *a, **k: pytest.fail("checked after loading data"))
    with pytest.raises(ValueError, match=rf"these fields differ: {field}: trained with .*, now {value!r}"):
        training.train_and_evaluate(tiny_config(**{field: value}), str(workdir))
    assert (workdir / "config.json").read_bytes() == recorded  # the record is not overwritten
    assert steps_in(workdir / "checkpoints") == [44, 88]


def test_free_fields_may_change_on_resume(tiny_workdir):
    workdir, final = tiny_workdir
    state = training.train_and_evaluate(tiny_config(log_every_steps=7, eval_batch_size=32), str(workdir))
    assert int(state.step) == 88
    assert_trees_equal((state.params, state.batch_stats), final)


def test_conversion_refuses_another_network_before_any_work(tiny_workdir, monkeypatch):
    workdir, _ = tiny_workdir
    monkeypatch.setattr(data_lib, "load_dataset", lambda *a, **k: pytest.fail("refused after loading data"))
    for field, value in (("model", "small_cnn"), ("levels", 8), ("per_channel_threshold", True)):
        with pytest.raises(ValueError, match=rf"{field}: trained with .*, now {value!r}"):
            evaluation.convert_and_evaluate(tiny_config(**{field: value}), str(workdir))


def test_conversion_fields_stay_free(tiny_workdir):
    workdir, _ = tiny_workdir
    config = tiny_config(snn_num_steps=4, snn_mode="step", report_steps=(2,), batch_size=16, num_epochs=9)
    result = evaluation.convert_and_evaluate(config, str(workdir))
    assert list(result["snn_accuracy"]) == ["1", "2", "3", "4"]


def test_unreadable_recorded_config_is_named(tiny_workdir):
    workdir, _ = tiny_workdir
    (workdir / "config.json").write_text('{"model": "tiny_cnn", ')
    with pytest.raises(ValueError, match=r"config.json \(the config this workdir was trained with\) cannot"):
        training.train_and_evaluate(tiny_config(), str(workdir))


# 4. convert.py checks everything first and loses no results.


def test_conversion_records_what_produced_the_results(tiny_workdir):
    workdir, _ = tiny_workdir
    result = evaluation.convert_and_evaluate(tiny_config(), str(workdir))
    written = json.loads((workdir / "snn_eval.json").read_text())
    assert written == result
    assert written["source"] == {
        "checkpoint": "latest",
        "step": 88,
        "directory": str(workdir / "checkpoints"),
    }
    assert written["trained_config"] == json.loads((workdir / "config.json").read_text())
    assert (written["v0"], written["levels"], written["T"], written["snn_mode"]) == (0.5, 4, 8, "layer")
    assert written["config"]["snn_num_steps"] == 8
    assert not [p for p in os.listdir(workdir) if ".tmp" in p]  # no temporary files left


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "snn_eval.json"
    path.write_text("previous")

    def broken(temporary):
        with open(temporary, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        workdir_lib.atomic_write(str(path), broken)
    assert path.read_text() == "previous" and os.listdir(tmp_path) == ["snn_eval.json"]


def test_a_workdir_that_is_a_file_is_refused_first(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "model.pth").write_text("")  # only its presence is checked before the workdir
    with pytest.raises(NotADirectoryError, match="a_file"):
        evaluation.convert_and_evaluate(tiny_config(), str(tmp_path / "a_file"))
    with pytest.raises(NotADirectoryError, match="a_file"):
        evaluation.convert_and_evaluate(
            tiny_config(torch_checkpoint=str(tmp_path / "model.pth")), str(tmp_path / "a_file")
        )
    with pytest.raises(NotADirectoryError, match="a_file"):
        training.train_and_evaluate(tiny_config(), str(tmp_path / "a_file"))


def test_a_refused_run_leaves_no_workdir(tmp_path):
    with pytest.raises(ValueError, match="divisible by the device count"):
        training.train_and_evaluate(tiny_config(batch_size=30), str(tmp_path / "w1"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        training.train_and_evaluate(
            tiny_config(dataset="mnist", data_dir=str(tmp_path / "none")), str(tmp_path / "w2")
        )
    with pytest.raises(ValueError, match="snn_v0"):
        evaluation.convert_and_evaluate(tiny_config(snn_v0=float("nan")), str(tmp_path / "w3"))
    assert os.listdir(tmp_path) == []


# 5. Corrupt checkpoints are diagnosed as such.


def truncate_step(workdir, step):
    for path in (workdir / "checkpoints" / str(step)).rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_corrupt_newest_step_falls_back_with_both_steps_named(tiny_workdir, capsys):
    workdir, final = tiny_workdir
    truncate_step(workdir, 88)
    result = evaluation.convert_and_evaluate(tiny_config(), str(workdir))
    err = capsys.readouterr().err
    assert (
        "checkpoint step 88 at" in err and "unreadable or corrupt" in err and "using step 44 instead" in err
    )
    assert "Event loop is closed" not in err and "does not match" not in err
    assert result["source"]["step"] == 44
    assert steps_in(workdir / "checkpoints") == [44, 88]  # conversion changes nothing

    # Training sets the damaged step aside (nothing deleted) and retrains it bit for bit.
    (workdir / "checkpoints" / "132.orbax-checkpoint-tmp-1700000000").mkdir()  # a killed save
    state = training.train_and_evaluate(tiny_config(), str(workdir))
    assert_trees_equal((state.params, state.batch_stats), final)
    assert sorted(os.listdir(workdir / "set_aside")) == ["best_step88", "checkpoints_step88"]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["44", "88"]  # the stale temporary folder is gone
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], "test_accuracy" in r) for r in records]
    assert len(keys) == len(set(keys))  # no step written twice
    assert [r["step"] for r in records if "test_accuracy" in r] == [44, 88]


def test_no_readable_step_stops_with_every_step_named(tiny_workdir):
    workdir, _ = tiny_workdir
    truncate_step(workdir, 88)
    truncate_step(workdir, 44)
    with pytest.raises(ValueError, match=r"no readable checkpoint.*step 88 at .*step 44 at"):
        evaluation.convert_and_evaluate(tiny_config(), str(workdir))
    with pytest.raises(ValueError, match="no readable checkpoint"):
        training.train_and_evaluate(tiny_config(), str(workdir))


def test_a_readable_checkpoint_of_another_network_is_a_mismatch(tiny_workdir):
    workdir, _ = tiny_workdir
    (workdir / "config.json").unlink()  # a workdir from before configs were recorded
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"step 88 at .* stores another network"):
        evaluation.convert_and_evaluate(tiny_config(model="small_cnn"), str(workdir))


def test_metrics_after_the_last_checkpoint_are_dropped_on_resume(tmp_path):
    from snnjax.metrics_writer import MetricsWriter

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 10, "a": 1}\n{"step": 44, "a": 2}\n{"step": 50, "a": 3}\n{"step": 5'
    )
    MetricsWriter(str(tmp_path), resume_step=44).close()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 10, "a": 1}\n{"step": 44, "a": 2}\n'


# 7. The command-line front door.


def run_cli(*args, cwd=ROOT):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_help_lists_the_config_fields_and_exits_zero():
    result = run_cli("train.py", "--help")
    assert result.returncode == 0
    assert "--workdir" in result.stdout
    assert "--[no]debug" in result.stdout
    assert "learning_rate=0.1" in result.stdout and "configs/default.py" in result.stdout


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    workdir = tmp_path / "w"
    result = run_cli(
        "convert.py", "--config", "configs/ci_tiny.py", "--workdir", str(workdir), "--config.snn_v0=nan"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: config.snn_v0=nan must be a finite number in [0.0, 1.0]. (run with --debug for the traceback)"
    ]
    result = run_cli(
        "train.py", "--config", "configs/ci_tiny.py", "--workdir", str(workdir), "--config.levelz=3"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert 'Did you mean "levels"' in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not workdir.exists()
