"""The portable converted SNN: jax.export artefact + sidecar, run in a fresh process without model code."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import QCFS4, init, randomize_variables

import snnjax

RUNNER = """
import json, sys
import numpy as np
from snnjax.export import load_exported  # only the loader: no config, no model code
snn = load_exported(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(snn(images)))
print(json.dumps({"T": snn.metadata["T"], "classes": snn.metadata["num_classes"]}))
"""


def test_exported_snn_runs_in_a_fresh_process_and_matches(tmp_path):
    ann = snnjax.TinyCNN(num_classes=3, activation=QCFS4)
    variables = randomize_variables(init(ann, (8, 8, 1)), threshold=1.5)
    snn_variables = snnjax.ann_to_snn_variables(variables, fold_bn=True)
    snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True)
    path = str(tmp_path / "snn.jaxexport")
    sidecar = snnjax.export_snn(snn, snn_variables, (8, 8, 1), 6, path, metadata={"method": "qcfs"})
    assert sidecar["T"] == 6 and sidecar["num_classes"] == 3 and sidecar["input_shape"] == ["batch", 8, 8, 1]
    assert json.loads((tmp_path / "snn.jaxexport.json").read_text())["method"] == "qcfs"

    images = np.asarray(jax.random.uniform(jax.random.key(1), (5, 8, 8, 1)), np.float32)  # batch 5: symbolic
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "run.py").write_text(RUNNER)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "run.py"),
            path,
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        cwd=tmp_path,  # not the repository: the configs are out of reach
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"T": 6, "classes": 3}
    expected = snnjax.spiking_apply(snn, snn_variables, jnp.asarray(images), 6)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-6, atol=1e-6)


def test_loading_refuses_what_is_not_an_artefact(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        snnjax.load_exported(str(tmp_path / "missing.bin"))
    (tmp_path / "bad.bin").write_bytes(b"not flatbuffers")
    (tmp_path / "bad.bin.json").write_text(
        json.dumps({"format": "snnjax.exported_snn/1", "input_shape": ["batch", 2]})
    )
    with pytest.raises(ValueError, match="not a readable jax.export artefact"):
        snnjax.load_exported(str(tmp_path / "bad.bin"))
    (tmp_path / "bad.bin.json").write_text("{}")
    with pytest.raises(ValueError, match="not an snnjax sidecar"):
        snnjax.load_exported(str(tmp_path / "bad.bin"))


def test_convert_writes_the_artefact_next_to_the_results(tiny_workdir):
    from snnjax import evaluation
    from snnjax.configs import ci_tiny

    workdir, _ = tiny_workdir
    config = ci_tiny.get_config()
    config.export = "snn.jaxexport"
    config.report_examples = 32
    result = evaluation.convert_and_evaluate(config, str(workdir))
    snn = snnjax.load_exported(str(workdir / "snn.jaxexport"))
    assert snn.metadata["T"] == 8 and snn.metadata["source"] == result["source"]
    assert snn.metadata["normalization"]["mean"] == [0.0]
    assert snn(np.zeros((3, 8, 8, 1), np.float32)).shape == (8, 3, 10)
