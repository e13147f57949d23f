"""What convert.py shows a person: plots that say what they plot, the energy sentence, progress lines."""

import io
import re

import matplotlib
import numpy as np
import pytest

from snnjax.analysis import summaries

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions build (they close them; here they are kept to be inspected)."""
    kept, close = [], plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for figure in kept:
        close(figure)


def texts(figure):
    return " ".join(t.get_text() for t in figure.texts)


def test_accuracy_plot_marks_t_equals_l_one_image_band_and_caption(tmp_path, figures):
    snn = np.array([0.90, 0.95, 0.975, 0.98, 0.98, 0.98, 0.98, 0.98])
    summaries.plot_accuracy(str(tmp_path / "a.png"), 0.98, snn, "title", levels=4, num_test=400)
    (figure,) = figures
    (ax,) = figure.axes
    vertical = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [tuple(line.get_xdata()) for line in vertical] == [(4, 4)]
    assert "T = L = 4" in ax.get_legend_handles_labels()[1]
    # The band is ±1 test image = ±0.25 points around the SNN curve.
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(98.25) and ys.min() == pytest.approx(89.75)
    assert "±1 test image (±0.25 points)" in ax.get_legend_handles_labels()[1]
    assert "logits averaged over 1..t" in texts(figure)
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_accuracy_plot_marks_l_at_its_total_latency(tmp_path, figures):
    latency = {t: t + 3 for t in range(1, 9)}  # a method with a 3-step pre-run
    summaries.plot_accuracy(str(tmp_path / "a.png"), 0.9, np.full(8, 0.9), "t", latency=latency, levels=2)
    vertical = [line for line in figures[0].axes[0].lines if line.get_linestyle() == ":"]
    assert [tuple(line.get_xdata()) for line in vertical] == [(5, 5)]


def test_accuracy_plot_names_the_readout_and_marks_t_star(tmp_path, figures):
    summaries.plot_accuracy(
        str(tmp_path / "a.png"),
        0.9,
        np.full(8, 0.9),
        "t",
        readout="output accumulated over 1..t",
        settled_step=6,
    )
    (ax,) = figures[0].axes
    marked = [line for line in ax.lines if line.get_linestyle() == "-."]
    assert [tuple(line.get_xdata()) for line in marked] == [(6, 6)]
    assert "SNN (output accumulated over 1..t)" in ax.get_legend_handles_labels()[1]
    assert "output accumulated over 1..t" in texts(figures[0])


def test_layer_plot_has_separate_axes_a_single_theta_and_the_t_equals_l_note(tmp_path, figures):
    layer = {"name": "act0", "mean_rate": 0.3, "fraction_silent": 0.5, "errors": {"4": {"relative_l2": 0.0}}}
    report = {"layers": [layer, {**layer, "name": "act1"}], "firing_steps": 32}
    summaries.plot_layers(str(tmp_path / "l.png"), report, "title")
    (figure,) = figures
    error, rate, silent = figure.axes
    assert "r·θ" not in error.get_ylabel() and "spikes·θ" in error.get_ylabel()
    assert "firing rate" in rate.get_ylabel() and "fraction silent" in silent.get_ylabel()
    assert silent.get_ylim() == (0, 1)
    assert summaries.LAYER_PLOT_NOTE in texts(figure) and "T = L" in summaries.LAYER_PLOT_NOTE


def test_energy_sentence_says_plainly_when_the_snn_costs_more():
    assert summaries.energy_comparison(9.384, 4.311).startswith(
        "The SNN's estimated energy is HIGHER than the ANN's: 9.384 µJ vs 4.311 µJ per image (2.18×)"
    )
    lower = summaries.energy_comparison(1.0, 4.0)
    assert "energy is lower than the ANN's" in lower and "(0.25×)" in lower
    assert "about equal to" in summaries.energy_comparison(1.002, 1.0)


def test_progress_log_prints_batches_speed_and_eta_into_a_log():
    stream = io.StringIO()  # not a terminal
    progress = summaries.ProgressLog("SNN T=32", total=4, every_s=0.0, stream=stream)
    for _ in range(4):
        progress.update(images=25)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert re.fullmatch(r"SNN T=32: 1/4 batches, 25 images, [\d.]+ img/s, ETA \d+ s", lines[0])
    assert re.fullmatch(r"SNN T=32: 4 batches, 100 images in [\d.]+ s \([\d.]+ img/s\)", lines[-1])
    quiet = io.StringIO()
    progress = summaries.ProgressLog("x", total=4, every_s=3600.0, stream=quiet)
    progress.update(images=1)
    assert quiet.getvalue() == ""  # between two lines: nothing
