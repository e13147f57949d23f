"""Optimizer/schedule known answers, config validation, and the end-to-end train → convert run."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import read_tensorboard_scalars

from snnjax.analysis import summaries
from snnjax.configs import ci_tiny, quickstart
from snnjax.experiment import pipeline as evaluation, training
from snnjax.experiment.config import validate_config
from snnjax.io import data as data_lib


def test_epoch_cosine_schedule_is_constant_within_an_epoch():
    schedule = training.epoch_cosine_schedule(0.1, num_epochs=4, steps_per_epoch=3)
    values = [float(schedule(step)) for step in range(12)]
    expected = [0.1 * (1 + np.cos(np.pi * epoch / 4)) / 2 for epoch in range(4)]
    np.testing.assert_allclose(values, np.repeat(expected, 3), rtol=1e-6)


def test_sgd_applies_coupled_weight_decay_before_momentum():
    # PyTorch SGD(lr=.1, momentum=.9, weight_decay=.1), grad .5, p0 = 1, by hand:
    # g1 = .5 + .1·1 = .6, buf = .6, p1 = .94; g2 = .5 + .094 = .594, buf = .54 + .594 = 1.134,
    # p2 = .94 − .1134 = .8266.
    tx = training.sgd_coupled_weight_decay(0.1, momentum=0.9, weight_decay=0.1)
    params = {"w": jnp.array(1.0)}
    opt_state = tx.init(params)
    trajectory = []
    for _ in range(2):
        updates, opt_state = tx.update({"w": jnp.array(0.5)}, opt_state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(float(params["w"]))
    np.testing.assert_allclose(trajectory, [0.94, 0.8266], rtol=1e-6)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "spiky", "config.method='spiky' is invalid; allowed: qcfs, slip_relu"),
        ("model", "vgg99", "config.model"),
        ("dataset", "imagenet9", "config.dataset"),
        ("levels", 0, "config.levels must be a positive int"),
        ("slip_c", 1.5, "config.slip_c"),
        ("threshold_init", -1.0, "config.threshold_init"),
        ("snn_num_steps", 0, "config.snn_num_steps"),
        ("qcfs_order", "random", "config.qcfs_order"),
        ("snn_neuron", "lif", "config.snn_neuron='lif' is invalid; allowed: if, integrate_then_fire"),
        ("snn_dtype", "float16", "config.snn_dtype"),
        ("balancing", "weights", "needs config.fold_bn=True"),
        ("pooling", "min", "config.pooling"),
        ("report_examples", 0, "config.report_examples"),
        ("snn_v0", float("nan"), "config.snn_v0=nan must be a finite number in [0.0, 1.0]"),
        ("snn_v0", 1.5, "config.snn_v0=1.5"),
        ("learning_rate", float("nan"), "config.learning_rate=nan"),
        ("momentum", float("nan"), "config.momentum=nan"),
        ("weight_decay", -1e-4, "config.weight_decay=-0.0001"),
        ("threshold_init", float("inf"), "config.threshold_init=inf"),
        ("seed", -1, "config.seed must be an int >= 0"),
        ("calibration_examples", 0, "config.calibration_examples"),
        ("energy_pj_per_mac", float("nan"), "config.energy_pj_per_mac"),
        ("report_steps", (4, 0), "config.report_steps"),
        ("augment", "crop,blur", "config.augment names unknown ['blur']"),
        ("data_dir", "/data/mnist", "config.dataset='digits' is the set bundled with scikit-learn"),
    ],
)
def test_invalid_config_is_rejected_with_the_field_named(field, value, message):
    config = quickstart.get_config()
    config[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(config)


def test_step_mode_with_a_windowed_neuron_is_rejected():
    config = quickstart.get_config()
    config.method = "spikeconverter"
    config.snn_mode = "step"
    with pytest.raises(ValueError, match="runs the 'if' neuron only"):
        validate_config(config)


def test_quickstart_config_is_valid():
    validate_config(quickstart.get_config())


def test_convert_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="run train.py"):
        evaluation.convert_and_evaluate(ci_tiny.get_config(), str(tmp_path))


@pytest.mark.parametrize("method, snn_mode", [("qcfs", "layer"), ("relu", "step")])
def test_end_to_end_train_convert_writes_valid_report(tmp_path, method, snn_mode, capsys, monkeypatch):
    monkeypatch.setattr(summaries, "PROGRESS_EVERY_S", 0.0)  # a progress line per batch
    config = ci_tiny.get_config()
    config.method = method
    config.snn_mode = snn_mode
    workdir = str(tmp_path)
    state = training.train_and_evaluate(config, workdir)
    assert int(state.step) == 2 * (1437 // 32)  # 2 epochs over the 1,437 training digits
    assert len(jax.devices()) == 4  # the run above was sharded over the fake devices

    result = evaluation.convert_and_evaluate(config, workdir)
    with open(tmp_path / "snn_eval.json") as f:
        written = json.load(f)
    assert written == result
    assert {"dataset", "method", "T", "ann_accuracy", "snn_accuracy"} <= set(written)
    assert (written["dataset"], written["method"], written["T"]) == ("digits", method, 8)
    assert list(written["snn_accuracy"]) == [str(t) for t in range(1, 9)]
    assert list(written["snn_top5_accuracy"]) == [str(t) for t in range(1, 9)]
    assert all(written["snn_top5_accuracy"][t] >= written["snn_accuracy"][t] for t in written["snn_accuracy"])
    assert written["ann_top5_accuracy"] >= written["ann_accuracy"]
    values = [
        written["ann_accuracy"],
        *written["snn_accuracy"].values(),
        *written["snn_top5_accuracy"].values(),
    ]
    assert all(0.0 <= v <= 1.0 for v in values)
    # Accuracies are counts over the 360 test images.
    assert all(abs(v * 360 - round(v * 360)) < 1e-6 for v in values)
    assert written["ann_accuracy"] > 0.3  # two epochs are far better than chance (0.1)
    assert (tmp_path / "snn_accuracy.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "SNN T=8" in out and "ANN" in out
    # Progress lines reach a log (captured stdout is no terminal): 360 images in batches of 64.
    assert re.search(r"SNN T=8: 3/6 batches, 192 images, [\d.]+ img/s, ETA \d+ s", out)
    assert re.search(r"SNN T=8: 6 batches, 360 images in [\d.]+ s \([\d.]+ img/s\)", out)
    assert re.search(r"The SNN's estimated energy is (HIGHER than|lower than|about equal to) the ANN's", out)
    # NeuroBench's metrics under its names: the first layer's analog input makes MACs, spikes ACs.
    ops = written["neurobench"]["SynapticOperations"]
    assert ops["Dense"] >= ops["Effective_MACs"] + ops["Effective_ACs"] and ops["Effective_MACs"] > 0
    assert 0.0 < written["neurobench"]["ActivationSparsity"] < 1.0 and "NeuroBench (" in out
    # TensorBoard holds the accuracy-vs-t curve of this conversion.
    (run,) = (tmp_path / "tensorboard").glob("snn_*")
    curves = read_tensorboard_scalars(run)
    expected = {int(t): a for t, a in written["snn_accuracy"].items()}
    assert curves["snn/top1_accuracy_vs_t"] == pytest.approx(expected)
    assert curves["snn/ann_top1_accuracy"] == pytest.approx(dict.fromkeys(expected, written["ann_accuracy"]))

    # Training again in the same workdir resumes from the final checkpoint: no extra steps.
    resumed = training.train_and_evaluate(config, workdir)
    assert int(resumed.step) == int(state.step)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, state.params)


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_four_devices_match_one_device(tmp_path):
    config = ci_tiny.get_config()
    config.num_epochs = 1
    one = training.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
    four = training.train_and_evaluate(config, str(tmp_path / "four"))
    kernel = four.params["conv_bn0"]["conv"]["kernel"]
    assert len(kernel.sharding.device_set) == 4
    # Same math, different reduction order across devices: equal to float tolerance.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
        (one.params, one.batch_stats),
        (four.params, four.batch_stats),
    )


def test_kept_last_batch_adds_a_step_per_epoch_and_is_refused_when_it_does_not_shard(tmp_path):
    config = ci_tiny.get_config()
    config.num_epochs, config.train_last_batch = 1, "keep"
    # 1437 digits training images in batches of 32: 44 full ones and one of 29.
    state = training.train_and_evaluate(config, str(tmp_path / "keep"), devices=jax.devices()[:1])
    assert int(state.step) == 45
    with pytest.raises(ValueError, match="last batch of 29 examples .* not divisible by the device count 4"):
        training.train_and_evaluate(config, str(tmp_path / "four"))


def test_interrupted_run_resumes_to_identical_parameters(tmp_path, monkeypatch):
    config = ci_tiny.get_config()
    config.num_epochs = 3
    config.augment = "crop"  # the resumed run must also redraw the same augmentations
    reference = training.train_and_evaluate(config, str(tmp_path / "reference"))

    original = data_lib.train_batches

    def killed_in_second_epoch(images, labels, batch_size, seed, epoch, keep_last=False):
        for index, batch in enumerate(original(images, labels, batch_size, seed, epoch, keep_last)):
            if epoch == 1 and index == 5:
                raise KeyboardInterrupt("simulated kill in epoch 2")
            yield batch

    monkeypatch.setattr(data_lib, "train_batches", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    monkeypatch.undo()
    resumed = training.train_and_evaluate(config, str(tmp_path / "run"))
    assert int(resumed.step) == int(reference.step)
    assert_trees_equal(
        (resumed.params, resumed.batch_stats, resumed.opt_state),
        (reference.params, reference.batch_stats, reference.opt_state),
    )


def test_best_checkpoint_summaries_and_metrics(tmp_path):
    config = ci_tiny.get_config()
    config.num_epochs = 3
    config.log_every_steps = 10
    training.train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if "test_accuracy" in r]
    assert [r["step"] for r in tests] == [44, 88, 132]
    assert sum("train_loss" in r for r in records) == 3 * 5  # steps 10, 20, 30, 40, 44 of each epoch
    best_step = max(tests, key=lambda r: r["test_accuracy"])["step"]
    assert [p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit()] == [str(best_step)]
    # TensorBoard: the learning rate of the last step of each logged window, and λ of every layer.
    scalars = read_tensorboard_scalars(tmp_path / "tensorboard")
    schedule = training.epoch_cosine_schedule(config.learning_rate, config.num_epochs, 44)
    logged = [r["step"] for r in records if "train_loss" in r]
    assert scalars["learning_rate"] == pytest.approx({s: float(schedule(s - 1)) for s in logged})
    assert scalars["learning_rate"][44] == pytest.approx(0.1) and scalars["learning_rate"][132] < 0.1
    final = training.train_and_evaluate(config, str(tmp_path))  # already trained: restores the last state
    thresholds = {k: v for k, v in scalars.items() if k.startswith("threshold/")}
    assert sorted(thresholds) == ["threshold/act0", "threshold/fc_act0"]
    assert thresholds["threshold/act0"][132] == pytest.approx(float(final.params["act0"]["threshold"]))
    assert thresholds["threshold/act0"][10] != thresholds["threshold/act0"][132]  # λ is trained


def test_non_finite_loss_stops_with_the_step_named(tmp_path):
    config = ci_tiny.get_config()
    config.learning_rate = 1e30
    config.log_every_steps = 1
    with pytest.raises(
        FloatingPointError, match=r"diverged by step \d+ \(epoch 1\): non-finite training loss"
    ):
        training.train_and_evaluate(config, str(tmp_path))


def test_autoaugment_on_grey_images_fails_at_start(tmp_path):
    config = ci_tiny.get_config()
    config.augment = "crop,autoaugment"
    with pytest.raises(ValueError, match="autoaugment, which needs RGB"):
        training.train_and_evaluate(config, str(tmp_path))


def test_top_k_correct_hand_example():
    logits = jnp.array([[0.1, 0.5, 0.2, 0.9, 0.3, 0.4, 0.0]])
    # Descending: 0.9 (3), 0.5 (1), 0.4 (5), 0.3 (4), 0.2 (2), 0.1 (0), 0.0 (6).
    np.testing.assert_array_equal(training.top_k_correct(logits, jnp.array([0]), 5), [False])
    np.testing.assert_array_equal(training.top_k_correct(logits, jnp.array([2]), 5), [True])
    np.testing.assert_array_equal(training.top_k_correct(logits, jnp.array([3]), 1), [True])


def test_batch_size_must_divide_over_the_devices(tmp_path):
    config = ci_tiny.get_config()
    config.batch_size = 30  # 4 fake devices
    with pytest.raises(ValueError, match="divisible by the device count 4"):
        training.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_spikeconverter_end_to_end_reports_identity_bfloat16_and_mismatch(tmp_path, capsys):
    config = ci_tiny.get_config()
    config.method = "spikeconverter"
    config.report_steps = (2, 8)
    workdir = str(tmp_path)
    training.train_and_evaluate(config, workdir)
    result = evaluation.convert_and_evaluate(config, workdir)
    assert result["neuron"] == "integrate_then_fire"
    # Windowed neuron: one simulation per reported window length.
    assert list(result["snn_accuracy"]) == ["1", "2", "4", "8"]
    # At T = L the SNN is the quantized ANN: same accuracy, and zero error in every layer.
    assert result["snn_accuracy"]["4"] == result["ann_accuracy"]
    for layer in result["layers"]["layers"]:
        assert layer["errors"]["4"]["mae"] == 0.0 and layer["errors"]["4"]["unevenness"] == 0.0
    assert result["latency_steps"]["4"] == 4 * (len(result["layers"]["layers"]) + 1)
    assert result["energy"]["snn_sops"] > 0 and result["energy"]["ann_macs"] > result["energy"]["snn_macs"]
    assert (tmp_path / "snn_layers.png").stat().st_size > 1000
    assert "latency" in capsys.readouterr().out

    config.snn_dtype = "bfloat16"
    bf16 = evaluation.convert_and_evaluate(config, workdir)
    assert bf16["snn_dtype"] == "bfloat16" and 0.0 <= bf16["snn_accuracy"]["8"] <= 1.0

    config.model = "small_cnn"
    with pytest.raises(ValueError, match="model: trained with 'tiny_cnn', now 'small_cnn'"):
        evaluation.convert_and_evaluate(config, workdir)


def test_relu_weight_balancing_matches_threshold_balancing_end_to_end(tmp_path):
    config = ci_tiny.get_config()
    config.method = "relu"
    config.fold_bn = True
    workdir = str(tmp_path)
    training.train_and_evaluate(config, workdir)
    by_threshold = evaluation.convert_and_evaluate(config, workdir)
    config.balancing = "weights"
    by_weight = evaluation.convert_and_evaluate(config, workdir)
    # Same spikes up to float rounding at the threshold: at most one of the 360 images may differ.
    for t in by_threshold["snn_accuracy"]:
        assert abs(by_weight["snn_accuracy"][t] - by_threshold["snn_accuracy"][t]) <= 1 / 360 + 1e-9


def test_pytorch_init_draws_kernels_and_biases_from_u_of_one_over_sqrt_fan_in():
    """PyTorch's Conv2d/Linear defaults: U(-b, b) with b = 1/√fan_in (variance 1/(3 fan_in)), biases alike."""
    import flax.linen as nn

    from snnjax.experiment import training

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(64, (3, 3), use_bias=False)(x)  # fan_in 3·3·32 = 288
            return nn.Dense(512)(x.reshape((x.shape[0], -1))[:, :1000])  # fan_in 1000

    variables = Net().init(jax.random.key(0), jnp.zeros((1, 4, 4, 32)))
    params = training.pytorch_default_init(variables["params"], jax.random.key(1))
    for array, fan_in in [
        (params["Conv_0"]["kernel"], 288),
        (params["Dense_0"]["kernel"], 1000),
        (params["Dense_0"]["bias"], 1000),
    ]:
        values = np.asarray(array, np.float64).ravel()
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(values).max() <= bound
        # Moments of U(-b, b): mean 0 (std b/√(3n)), variance b²/3 (relative std ≈ √(0.8/n)).
        n = values.size
        assert abs(values.mean()) < 5 * bound / np.sqrt(3 * n)
        assert abs(values.var() / (bound**2 / 3) - 1) < 5 * np.sqrt(0.8 / n)
    assert "bias" not in params["Conv_0"]
    # Flax's own draw is lecun_normal: three times PyTorch's variance.
    flax_kernel = np.asarray(variables["params"]["Dense_0"]["kernel"])
    assert abs(flax_kernel.var() * 1000 - 1) < 0.05


def test_pytorch_init_matches_torch_distribution():
    torch = pytest.importorskip("torch")
    from snnjax.experiment import training

    params = {"Dense_0": {"kernel": jnp.zeros((300, 400)), "bias": jnp.zeros((400,))}}
    ours = np.asarray(training.pytorch_default_init(params, jax.random.key(0))["Dense_0"]["kernel"])
    torch.manual_seed(0)
    theirs = torch.nn.Linear(300, 400).weight.detach().numpy()
    assert (
        abs(ours.std() / theirs.std() - 1) < 0.02
        and abs(np.abs(ours).max() / np.abs(theirs).max() - 1) < 0.01
    )
