"""Strict test environment: CPU only, 4 fake devices, no implicit rank promotion."""

import os

# Must run before JAX initializes its backends.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

import shutil  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """``configs/ci_tiny.py`` (QCFS TinyCNN, 2 epochs: checkpoints at steps 44 and 88) trained once.

    Returns ``(workdir, (params, batch_stats))`` of the final state on the host. Tests that change the
    workdir take a private copy through `tiny_workdir`.
    """
    from snnjax.configs import ci_tiny
    from snnjax.experiment import training

    workdir = tmp_path_factory.mktemp("trained_tiny")
    state = training.train_and_evaluate(ci_tiny.get_config(), str(workdir))
    return workdir, jax.device_get((state.params, state.batch_stats))


@pytest.fixture
def tiny_workdir(trained_tiny, tmp_path):
    """A private copy of the session's trained ci_tiny workdir: ``(workdir, final (params, batch_stats))``."""
    source, final = trained_tiny
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    return workdir, final
