"""Two processes on one machine (jax.distributed, CPU collectives) train what one process trains."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_in_two_processes(workdir, port, timeout):
    """``[(returncode, stdout, stderr)]`` of ``train.py --distributed`` as processes 0 and 1; None if
    they did not finish within ``timeout`` seconds (then both are killed and their pipes closed, and
    their output is printed for the test log)."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "train.py",
                "--config=configs/ci_tiny.py",
                f"--workdir={workdir}",
                "--distributed",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=timeout) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        for i, process in enumerate(processes):
            out, err = process.communicate()  # reaps the process and closes its pipes
            print(f"process {i} (killed after {timeout} s):\n{(out + err)[-3000:]}")
        return None
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


@pytest.mark.slow
def test_two_processes_train_the_same_parameters_as_one(trained_tiny, tmp_path):
    """``train.py --distributed`` over 2 processes × 2 CPU devices vs 1 process × 4 devices (conftest).

    Same global batch (32), same mesh size (4), same seed: the parameters after 2 epochs must agree.
    """
    from snnjax.configs import ci_tiny
    from snnjax.experiment import training

    # The two-process start-up (coordination service + gloo) hung once in a fresh-clone CI run on the
    # 2-core machine (killed at 300 s; the test takes ~22 s alone): a hung attempt is killed, its output
    # printed, and retried once in a fresh workdir on a fresh port.
    for attempt in range(2):
        workdir = tmp_path / f"two_processes_{attempt}"
        results = _train_in_two_processes(workdir, free_port(), timeout=240)
        if results is not None:
            break
    else:
        pytest.fail("train.py --distributed hung in both attempts (their output is in the captured stdout)")
    return_codes = [code for code, _, _ in results]
    outputs = [(out, err) for _, out, err in results]
    logs = "\n".join(out + err for out, err in outputs)
    if any(return_codes) and "collectives" in logs.lower() and "not" in logs.lower():
        pytest.skip(f"this platform lacks JAX's CPU collectives: {logs[-500:]}")
    assert return_codes == [0, 0], logs[-4000:]
    assert all("4 cpu device(s)" in out for out, _ in outputs)  # one global mesh over both processes

    # The workdir holds one run: process 0 wrote the metrics, Orbax the shared checkpoints.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["44", "88"]
    steps = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if "test_accuracy" in line]
    assert len(steps) == 2

    resumed = training.train_and_evaluate(ci_tiny.get_config(), str(workdir))  # restores step 88
    assert int(resumed.step) == 88
    _, (params, batch_stats) = trained_tiny
    # Same math; the all-reduce runs across processes (gloo) instead of inside one, so the sums round
    # differently, and QCFS's floor now and then turns a rounding difference into a level flip that
    # training carries on. Measured after 88 steps: at most 4.8e-7 apart on an AVX machine, up to 0.4 %
    # of a leaf's largest entry on an AVX-512 one. Another seed moves the median leaf by ~100 % of its
    # scale (measured: seed 43 vs 42, every leaf by 2.4 % or more): 2 % of each leaf's scale tells them apart.
    for a, b in zip(
        jax.tree.leaves(jax.device_get((resumed.params, resumed.batch_stats))),
        jax.tree.leaves((params, batch_stats)),
        strict=True,
    ):
        assert np.max(np.abs(a - b)) <= 2e-2 * np.max(np.abs(b)) + 1e-6
