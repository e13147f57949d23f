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

from snnjax.configs import ci_tiny
from snnjax.experiment import methods, pipeline as evaluation, training, workdir as workdir_lib
from snnjax.io import checkpoints, data as data_lib, files

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


@pytest.mark.parametrize("field, value", [("train_last_batch", "keep"), ("bn_running_var", "unbiased")])
def test_a_record_from_before_a_field_existed_is_compared_with_what_that_run_did(
    tiny_workdir, field, value, monkeypatch
):
    # An older snnjax recorded no train_last_batch / bn_running_var: it dropped the last batch and kept
    # Flax's biased variance, so a resume with the other choice is refused, not silently mixed.
    workdir, _ = tiny_workdir
    record = json.loads((workdir / "config.json").read_text())
    del record[field]
    (workdir / "config.json").write_text(json.dumps(record))
    monkeypatch.setattr(data_lib, "load_dataset", lambda *a, **k: pytest.fail("checked after loading data"))
    with pytest.raises(ValueError, match=rf"these fields differ: {field}: trained with .*, now {value!r}"):
        training.train_and_evaluate(tiny_config(**{field: value}), str(workdir))


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
        files.atomic_write(str(path), broken)
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
    from snnjax.experiment.metrics_writer import MetricsWriter

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


# 8. One writer per workdir; outputs never clobber records; a conversion's results are one set.


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    workdir = tmp_path / "w"
    with workdir_lib.prepared_workdir(str(workdir), "train.py"):
        with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"in use by pid {os.getpid()} \(train.py"):
            with workdir_lib.prepared_workdir(str(workdir), "convert.py"):
                pass
    with workdir_lib.prepared_workdir(str(workdir), "convert.py"):  # released with the first holder
        pass


def test_two_train_processes_on_one_workdir(tmp_path):
    """A process holding the lock (as a running train.py does) makes train.py refuse in one line."""
    workdir = tmp_path / "w"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from snnjax.experiment import workdir as w\n"
            f"with w.prepared_workdir({str(workdir)!r}, 'train.py'):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("train.py", "--config", "configs/ci_tiny.py", "--workdir", str(workdir))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by pid {holder.pid} (train.py" in lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == [workdir_lib.LOCK_FILE]  # nothing written


@pytest.mark.parametrize(
    "export", ["config.json", "metrics.jsonl", "snn_eval.json", "checkpoints/88/x", "snn", "mine.txt"]
)
def test_an_output_path_naming_a_record_is_refused_before_any_work(tiny_workdir, export, monkeypatch):
    workdir, _ = tiny_workdir
    (workdir / "mine.txt").write_text("the user's own file")  # no sidecar: not an snnjax export
    (workdir / "snn.json").write_text("{}")  # the user's file, which the sidecar of "snn" would replace
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    monkeypatch.setattr(data_lib, "load_dataset", lambda *a, **k: pytest.fail("work started"))
    config = tiny_config(export=export)
    with pytest.raises(
        ValueError, match=r"config.export names .*(record of the workdir|not an snnjax export)"
    ):
        evaluation.convert_and_evaluate(config, str(workdir))
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


def test_cli_export_over_the_training_record_is_one_line_and_keeps_it(tiny_workdir):
    workdir, _ = tiny_workdir
    record = (workdir / "config.json").read_bytes()
    result = run_cli(
        "convert.py",
        "--config",
        "configs/ci_tiny.py",
        "--workdir",
        str(workdir),
        "--config.export=config.json",
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "record of the workdir" in result.stderr
    assert (workdir / "config.json").read_bytes() == record


def result_set(workdir):
    names = ("snn_eval.json", "snn_accuracy.png", "snn_layers.png", "snn.bin", "snn.bin.json")
    return {n: (workdir / n).read_bytes() for n in names if (workdir / n).exists()}


def test_an_interrupted_conversion_keeps_the_previous_set(tiny_workdir, monkeypatch):
    workdir, _ = tiny_workdir
    config = tiny_config(export="snn.bin", report_examples=32)
    first = evaluation.convert_and_evaluate(config, str(workdir))
    previous = result_set(workdir)
    assert len(previous) == 5
    sidecar = json.loads(previous["snn.bin.json"])
    assert sidecar["run_id"] == first["run_id"]
    assert first["outputs"][:2] == ["snn_accuracy.png", "snn_layers.png"]

    def interrupted(*args, **kwargs):  # the Ctrl-C lands while the results are being written
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation.export_lib, "export_snn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluation.convert_and_evaluate(
            tiny_config(export="snn.bin", report_examples=32, seed=42), str(workdir)
        )
    assert result_set(workdir) == previous
    assert not [p.name for p in workdir.iterdir() if ".tmp" in p.name]  # no staged file left behind


def test_a_swallowed_interrupt_still_stops_before_the_results_are_replaced(tiny_workdir, monkeypatch):
    """A Ctrl-C raised where Python swallows it (a GC callback) must not let the run commit or exit 0."""
    import signal

    workdir, _ = tiny_workdir
    config = tiny_config(report_examples=32)
    evaluation.convert_and_evaluate(config, str(workdir))
    previous = result_set(workdir)
    original = evaluation.summaries.plot_layers

    def plot_with_a_swallowed_interrupt(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what Python does with an exception raised in a gc callback
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation.summaries, "plot_layers", plot_with_a_swallowed_interrupt)
    with pytest.raises(KeyboardInterrupt), workdir_lib.interrupts_noticed():
        evaluation.convert_and_evaluate(config, str(workdir))
    assert result_set(workdir) == previous


def test_a_ctrl_c_during_the_commit_lands_after_the_last_rename(tmp_path, monkeypatch):
    """Signals go to any thread of a JAX process; the commit must hold them back all the same."""
    import signal
    import threading

    names = ["a", "b", "c"]
    for name in names:
        (tmp_path / name).write_text(f"old {name}")
    original = os.replace
    calls = []

    def replace_with_ctrl_c(source, destination):
        calls.append(destination)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # to the process: any thread may take it
        original(source, destination)

    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)  # another thread alive, as in every JAX process
    busy.start()
    monkeypatch.setattr(workdir_lib.os, "replace", replace_with_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt), workdir_lib.OutputSet() as outputs:
            for name in names:
                outputs.stage(str(tmp_path / name), lambda p, n=name: pathlib.Path(p).write_text(f"new {n}"))
    finally:
        stop.set()
        busy.join()
    assert [(tmp_path / n).read_text() for n in names] == ["new a", "new b", "new c"]  # the whole new set
    assert sorted(os.listdir(tmp_path)) == names


def test_an_output_set_commits_all_or_nothing(tmp_path):
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b").write_text("old b")
    with pytest.raises(RuntimeError), workdir_lib.OutputSet() as outputs:
        outputs.stage(str(tmp_path / "a"), lambda p: pathlib.Path(p).write_text("new a"))
        raise RuntimeError("stopped between two files")
    assert (tmp_path / "a").read_text() == "old a" and sorted(os.listdir(tmp_path)) == ["a", "b"]
    with workdir_lib.OutputSet() as outputs:
        outputs.stage(str(tmp_path / "a"), lambda p: pathlib.Path(p).write_text("new a"))
        outputs.stage(str(tmp_path / "b"), lambda p: pathlib.Path(p).write_text("new b"))
        assert (tmp_path / "a").read_text() == "old a"  # nothing in place before the commit
    assert (tmp_path / "a").read_text() == "new a" and (tmp_path / "b").read_text() == "new b"


def test_a_swallowed_ctrl_c_stops_training_at_the_next_metrics_pull(tmp_path, monkeypatch):
    import signal

    from snnjax.core import parallel

    original = parallel.shard_batch  # called once per training step, on the host
    calls = []

    def shard_with_a_swallowed_interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # what Python does with an exception raised in a gc callback
        return original(*args)

    monkeypatch.setattr(parallel, "shard_batch", shard_with_a_swallowed_interrupt)
    with pytest.raises(KeyboardInterrupt), workdir_lib.interrupts_noticed():
        training.train_and_evaluate(tiny_config(log_every_steps=5), str(tmp_path / "w"))
    assert len(calls) == 5  # stopped at the first pull after the interruption, not after 88 steps
    assert not (tmp_path / "w" / "checkpoints").exists() or not steps_in(tmp_path / "w" / "checkpoints")


def test_written_files_follow_the_umask(tiny_workdir):
    workdir, _ = tiny_workdir
    previous = os.umask(0o022)
    try:
        evaluation.convert_and_evaluate(tiny_config(export="snn.bin", report_examples=32), str(workdir))
        workdir_lib.record_config(tiny_config(), str(workdir))
    finally:
        os.umask(previous)
    for name in (
        "config.json",
        "snn_eval.json",
        "snn_accuracy.png",
        "snn_layers.png",
        "snn.bin",
        "snn.bin.json",
    ):
        assert oct((workdir / name).stat().st_mode & 0o777) == oct(0o644), name


# 9. Config files are validated like flags; a broken config file is one line.


def write_config(tmp_path, body):
    path = tmp_path / "my_config.py"
    path.write_text("from snnjax.configs import ci_tiny\n\n\ndef get_config():\n" + body)
    return path


def test_a_misspelt_field_in_a_config_file_is_refused_with_a_suggestion(tmp_path):
    path = write_config(
        tmp_path, "    config = ci_tiny.get_config()\n    config.levles = 8\n    return config\n"
    )
    result = run_cli("train.py", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown config field config.levles (did you mean config.levels?): every field must be one "
        "of configs/default.py (snnjax --help lists them); a misspelt field would be ignored. (run with "
        "--debug for the traceback)"
    ]
    assert not (tmp_path / "w").exists()


def test_a_config_missing_fields_is_refused_naming_them():
    from snnjax.experiment.config import validate_config

    config = tiny_config()
    del config["levels"]
    with pytest.raises(ValueError, match="lacks the field.*levels.*default.get_config"):
        validate_config(config)


@pytest.mark.parametrize(
    ("body", "line", "kind"),
    [
        ("    config = ci_tiny.get_config(\n    return config\n", 5, "SyntaxError"),
        ("    import no_such_module_here\n    return ci_tiny.get_config()\n", 5, "ModuleNotFoundError"),
        ("    return ci_tiny.get_config().nope\n", 5, "AttributeError"),
    ],
)
def test_a_config_file_that_fails_to_load_is_one_line_naming_file_and_line(tmp_path, body, line, kind):
    path = write_config(tmp_path, body)
    result = run_cli("train.py", "--config", str(path), "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: the config file cannot be loaded: {path}, line {line}: {kind}")


# 10. Full disk, Ctrl-C: one line, and what survived is named.


def test_a_full_disk_during_training_is_one_line_naming_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    script = (
        "import errno, sys\n"
        "from snnjax import train\nfrom snnjax.experiment import metrics_writer\n"
        "original = metrics_writer.MetricsWriter.write\n"
        "def write(self, step, scalars):\n"
        "    if step > 44:\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', self._jsonl)\n"
        "    original(self, step, scalars)\n"
        "metrics_writer.MetricsWriter.write = write\n"
        f"sys.argv = ['train.py', '--config', 'configs/ci_tiny.py', '--workdir', {str(workdir)!r},\n"
        "            '--config.log_every_steps=20']\n"
        "train.main()\n"
    )
    result = run_cli("-c", script)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"the disk is full: writing {workdir / 'metrics.jsonl'} failed" in lines[0]
    assert f"the last good checkpoint is step 44 in {workdir / 'checkpoints'}" in lines[0]


def test_a_swallowed_ctrl_c_ends_the_command_with_status_130(tmp_path):
    script = (
        "import signal, sys\n"
        "from snnjax.experiment import cli, workdir\n"
        "from absl import flags\n"
        "flags.FLAGS(['x'])\n"
        "with cli.readable_errors():\n"
        "    try:\n"
        "        signal.raise_signal(signal.SIGINT)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
        "    print('kept going')\n"
    )
    result = run_cli("-c", script)
    assert result.returncode == 130, result.stderr
    assert result.stdout.strip() == "kept going"
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted")


# 11. Inputs checked where they enter: memory before evaluation, NaN through the exported artefact.


def test_a_simulation_the_device_cannot_hold_is_refused_before_the_ann_evaluation(tiny_workdir, monkeypatch):
    workdir, _ = tiny_workdir
    config = tiny_config(snn_num_steps=100_000)
    per_device = config.eval_batch_size // jax.device_count()  # each of the 4 fake devices: its shard
    need = evaluation.simulation_memory_bytes(
        *_tiny_snn(config), per_device, config.snn_num_steps, jnp.float32
    )
    # Layer mode holds [T, B, ...]: XLA's own estimate grows with T (1e5 steps of 16 images: gigabytes).
    assert need > 1e9
    monkeypatch.setattr(evaluation, "available_memory_bytes", lambda device=None: need // 2)
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: pytest.fail("the ANN evaluation ran"))
    with pytest.raises(ValueError, match=r"would need about .* GB .*snn_num_steps=100000.*snn_mode='step'"):
        evaluation.convert_and_evaluate(config, str(workdir))


def _tiny_snn(config):
    from snnjax import conversion

    model = methods.build_ann(config, 10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
    snn_variables = jax.eval_shape(conversion.convert_variables, variables)
    return conversion.spiking_model(model), snn_variables, (8, 8, 1)


def test_step_mode_memory_is_flat_in_t():
    config = tiny_config()
    model, variables, shape = _tiny_snn(config)
    step = model.clone(mode="step")
    short, long = (
        evaluation.simulation_memory_bytes(step, variables, shape, 64, t, jnp.float32) for t in (8, 8000)
    )
    layer = evaluation.simulation_memory_bytes(model, variables, shape, 64, 8000, jnp.float32)
    # Only the per-step logits [T, B, 10] (and their running means) grow in step mode.
    assert long - short < 8000 * 64 * 10 * 4 * 8 and layer > 20 * long


def test_nan_pixels_give_nan_through_the_exported_artefact(tiny_workdir):
    import snnjax

    workdir, _ = tiny_workdir
    evaluation.convert_and_evaluate(tiny_config(export="snn.bin", report_examples=32), str(workdir))
    exported = snnjax.import_snn(str(workdir / "snn.bin"))
    images = np.zeros((2, 8, 8, 1), np.float32)
    images[0, 2, 2, 0] = np.nan
    logits = np.asarray(exported(images))
    assert np.isnan(logits[:, 0]).all() and np.isfinite(logits[:, 1]).all()


def test_a_really_full_disk_during_training_is_one_line(tmp_path):
    """Orbax's writer threads fail on a real full file system (a 200 KB tmpfs, where mounting is allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("mounting a tmpfs is not allowed here (the patched-writer test covers the message)")
    try:
        result = run_cli(
            "train.py",
            "--config",
            "configs/ci_tiny.py",
            "--workdir",
            str(mount / "w"),
            "--config.num_epochs=20",
        )
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: the disk is full: writing ")
    # Which write fills the disk first depends on timing (an event file, the first or a later save).
    assert "the last good checkpoint is step" in lines[0] or "no checkpoint had been saved yet" in lines[0]
