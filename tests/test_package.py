"""snnjax installed as a user installs it: a non-editable wheel, used from a folder outside the checkout."""

import json
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parents[1]
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "site"
)


def run(*args, cwd, env=None):
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding snnjax from a wheel (not editable, not the checkout) and a folder outside it.

    The wheel is built from a copy of the checkout (pip would otherwise write build/ into it) and
    installed without dependencies; the dependencies come from this interpreter's site-packages through
    a .pth file, so the test needs no network. The checkout itself is on no path of the fresh venv.
    """
    tmp = tmp_path_factory.mktemp("package")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("snnjax-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout
    (pathlib.Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp)}
    return venv, elsewhere, env


@pytest.mark.slow
def test_wheel_ships_the_configs_and_the_commands(installed):
    venv, elsewhere, env = installed
    where = run(
        venv / "bin" / "python",
        "-c",
        "import snnjax, snnjax.configs as c; print(snnjax.__file__); print(' '.join(c.names()))",
        cwd=elsewhere,
        env=env,
    ).stdout.splitlines()
    assert where[0].startswith(str(venv)), f"snnjax imported from {where[0]}, not the installed wheel"
    assert {"default", "quickstart", "ci_tiny", "cifar10jpeg_resnet20_qcfs"} <= set(where[1].split())
    for command in ("snnjax-train", "snnjax-convert"):
        help_text = run(venv / "bin" / command, "--help", cwd=elsewhere, env=env).stdout
        assert "--workdir" in help_text and "quickstart" in help_text and "learning_rate=0.1" in help_text
    module_help = run(venv / "bin" / "python", "-m", "snnjax.train", "--help", cwd=elsewhere, env=env).stdout
    assert "--[no]distributed" in module_help


@pytest.mark.slow
def test_quickstart_runs_from_an_unrelated_directory_without_orbax_logs(installed):
    """Trains the packaged quickstart from a user's absl script (a library call), converts it with the CLI."""
    venv, elsewhere, env = installed
    # A user's own config file, starting from the packaged one; a user's script inside absl.app, where
    # absl logs INFO by default (Orbax logs a dozen INFO lines per checkpoint without snnjax's filter).
    (elsewhere / "my_config.py").write_text(
        textwrap.dedent("""
            from snnjax.configs import quickstart

            def get_config():
                config = quickstart.get_config()
                config.num_epochs = 1
                return config
        """)
    )
    (elsewhere / "my_train.py").write_text(
        textwrap.dedent("""
            import importlib.util, sys
            from absl import app
            from snnjax.experiment import training

            def main(argv):
                spec = importlib.util.spec_from_file_location("my_config", "my_config.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                training.train_and_evaluate(module.get_config(), "runs/qs")

            app.run(main)
        """)
    )
    trained = run(venv / "bin" / "python", "my_train.py", cwd=elsewhere, env=env)
    assert "epoch   1/1" in trained.stdout
    orbax_lines = [line for line in trained.stderr.splitlines() if "checkpoint" in line.lower()]
    assert not orbax_lines, "Orbax INFO lines reached the console:\n" + "\n".join(orbax_lines[:5])

    converted = run(
        venv / "bin" / "snnjax-convert",
        "--config=configs/quickstart.py",  # not in this folder: the packaged file
        "--workdir=runs/qs",
        "--config.num_epochs=1",
        "--config.snn_num_steps=4",
        "--config.report_steps=(4,)",
        cwd=elsewhere,
        env=env,
    )
    assert "SNN T=4" in converted.stdout
    assert not [line for line in converted.stderr.splitlines() if "checkpoint" in line.lower()]
    report = json.loads((elsewhere / "runs" / "qs" / "snn_eval.json").read_text())
    assert report["config"]["dataset"] == "digits" and report["config"]["num_epochs"] == 1
