"""Every config file loads and validates; experiment file names match their fields; overrides are checked."""

import importlib
import pathlib
import subprocess
import sys

import pytest

from snnjax.experiment.config import validate_config

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
EXPERIMENTS = [c for c in CONFIGS if c not in ("default", "quickstart", "ci_tiny")]
MODEL_ALIASES = {"cnn": "small_cnn"}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_validates_and_documents_itself(name):
    module = importlib.import_module(f"snnjax.configs.{name}")
    validate_config(module.get_config())
    assert module.__doc__ and len(module.__doc__.strip()) > 40, f"configs/{name}.py needs its docstring"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_name_matches_fields(name):
    config = importlib.import_module(f"snnjax.configs.{name}").get_config()
    dataset, model, *method = name.split("_")
    method = "_".join(method)
    assert config.dataset == {"cifar10jpeg": "cifar10"}.get(dataset, dataset)
    assert config.model == MODEL_ALIASES.get(model, model)
    assert config.method == method
    assert (
        f"python train.py --config configs/{name}.py"
        in importlib.import_module(f"snnjax.configs.{name}").__doc__
    )


def test_paper_configs_cover_the_grid():
    grid = {
        f"{d}_{m}_{k}"
        for d in ("cifar10", "cifar100")
        for m in ("vgg16", "resnet18", "resnet20")
        for k in ("qcfs", "slip_relu")
    }
    assert grid <= set(EXPERIMENTS)
    assert {"imagenet2012_resnet34_qcfs", "imagenet2012_vgg16_qcfs", "mnist_cnn_qcfs"} <= set(EXPERIMENTS)


def run_train(*flags, tmp_path):
    return subprocess.run(
        [sys.executable, "train.py", "--config", "configs/ci_tiny.py", f"--workdir={tmp_path}", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_mistyped_override_fails_at_start(tmp_path):
    result = run_train("--config.metod=relu", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "metod" in result.stderr


def test_invalid_override_value_names_the_field(tmp_path):
    result = run_train("--config.levels=0", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "config.levels must be a positive int" in result.stderr


def test_config_argument_takes_a_packaged_name(tmp_path, monkeypatch):
    from snnjax import configs
    from snnjax.experiment.cli import resolve_config_argument

    packaged = str(configs.path("quickstart"))
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert resolve_config_argument("quickstart") == packaged
    assert resolve_config_argument("quickstart.py") == packaged
    assert resolve_config_argument("configs/quickstart.py") == packaged
    assert resolve_config_argument("configs/quickstart.py:fast") == packaged + ":fast"
    # Anything else is left for the flag parser to report (or to load): a user's file is never replaced.
    assert resolve_config_argument("mine/quickstart.py") == "mine/quickstart.py"
    assert resolve_config_argument("quickstrat") == "quickstrat"
    (tmp_path / "quickstart.py").write_text("")
    assert resolve_config_argument("quickstart.py") == "quickstart.py"
    with pytest.raises(FileNotFoundError, match="packaged configs are: .*quickstart"):
        configs.path("quickstrat")
