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
from snnjax.io.export import import_snn  # only the loader: no config, no model code
snn = import_snn(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(snn(images)))
print(json.dumps({"T": snn.metadata["T"], "classes": snn.metadata["num_classes"]}))
"""


def test_exported_snn_runs_in_a_fresh_process_and_matches(tmp_path):
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    variables = randomize_variables(init(ann, (8, 8, 1)), threshold=1.5)
    snn_variables = snnjax.convert_variables(variables, fold_bn=True)
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
        snnjax.import_snn(str(tmp_path / "missing.bin"))
    (tmp_path / "bad.bin").write_bytes(b"not flatbuffers")
    (tmp_path / "bad.bin.json").write_text(
        json.dumps({"format": "snnjax.exported_snn/1", "input_shape": ["batch", 2]})
    )
    with pytest.raises(ValueError, match="not a readable jax.export artefact"):
        snnjax.import_snn(str(tmp_path / "bad.bin"))
    (tmp_path / "bad.bin.json").write_text("{}")
    with pytest.raises(ValueError, match="not an snnjax sidecar"):
        snnjax.import_snn(str(tmp_path / "bad.bin"))


def test_convert_writes_the_artefact_next_to_the_results(tiny_workdir):
    from snnjax.configs import ci_tiny
    from snnjax.experiment import pipeline as evaluation

    workdir, _ = tiny_workdir
    config = ci_tiny.get_config()
    config.export = "snn.jaxexport"
    config.report_examples = 32
    result = evaluation.convert_and_evaluate(config, str(workdir))
    snn = snnjax.import_snn(str(workdir / "snn.jaxexport"))
    assert snn.metadata["T"] == 8 and snn.metadata["source"] == result["source"]
    assert snn.metadata["normalization"]["mean"] == [0.0]
    assert snn(np.zeros((3, 8, 8, 1), np.float32)).shape == (8, 3, 10)


# import_snn checks the sidecar against the artefact: an edited or mismatched pair is refused.


@pytest.fixture(scope="module")
def exported_t8(tmp_path_factory):
    """The path of a TinyCNN artefact (CPU only) exported at T = 8, with its sidecar."""
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    variables = randomize_variables(init(ann, (8, 8, 1)), threshold=1.5)
    snn = snnjax.spiking_model(ann, v0=0.5, fold_bn=True)
    path = tmp_path_factory.mktemp("t8") / "snn.jaxexport"
    snnjax.export_snn(
        snn, snnjax.convert_variables(variables, fold_bn=True), (8, 8, 1), 8, str(path), platforms=("cpu",)
    )
    return path


def copied(exported_t8, tmp_path, edit=None, sidecar=None):
    """A copy of the artefact in ``tmp_path``, its sidecar dict changed by ``edit`` or replaced by bytes."""
    path = tmp_path / "snn.jaxexport"
    path.write_bytes(exported_t8.read_bytes())
    metadata = json.loads(exported_t8.with_suffix(".jaxexport.json").read_text())
    if edit is not None:
        edit(metadata)
    path.with_suffix(".jaxexport.json").write_bytes(
        sidecar if sidecar is not None else json.dumps(metadata).encode()
    )
    return str(path)


def test_the_exported_pair_loads_and_runs(exported_t8):
    snn = snnjax.import_snn(str(exported_t8))
    assert snn.metadata["T"] == 8 and snn(np.zeros((2, 8, 8, 1), np.float32)).shape == (8, 2, 3)


def set_t4(metadata):
    metadata["T"] = 4


def set_output_t4(metadata):
    metadata["T"], metadata["output_shape"][0] = 4, 4


def drop_input_shape(metadata):
    del metadata["input_shape"]


def t_as_text(metadata):
    metadata["T"] = "8"


def other_image_shape(metadata):
    metadata["input_shape"] = ["batch", 8, 8, 3]


SIDECAR_EDITS = {
    "T=4 beside T=8": (set_t4, r"snn.jaxexport.json says T = 4 but the artefact .*snn.jaxexport has 8"),
    "T=4 everywhere": (
        set_output_t4,
        r"says T = 4 but the artefact .*snn.jaxexport has 8 .*\[8, 'batch', 3\]",
    ),
    "no input_shape": (drop_input_shape, r"snn.jaxexport.json lacks the field 'input_shape'"),
    "T as text": (t_as_text, r"snn.jaxexport.json: field 'T' is '8' \(str\), expected int"),
    "other image shape": (
        other_image_shape,
        r"says input_shape = \['batch', 8, 8, 3\] but the artefact .* has \['batch', 8, 8, 1\]",
    ),
}


@pytest.mark.parametrize("case", list(SIDECAR_EDITS))
def test_a_sidecar_that_disagrees_with_its_artefact_is_refused(exported_t8, tmp_path, case):
    edit, message = SIDECAR_EDITS[case]
    with pytest.raises(ValueError, match=message):
        snnjax.import_snn(copied(exported_t8, tmp_path, edit))


@pytest.mark.parametrize(
    "sidecar, message",
    [
        (b'{"format": "snnjax.exported_snn/1", "T": ', "is not an snnjax sidecar: Expecting value"),
        (b"\x89HDF\r\n\x1a\n\xff\xfe", "is not an snnjax sidecar: 'utf-8' codec can't decode"),
        (b"[8]", "is not an snnjax sidecar .*got list"),
    ],
    ids=["truncated JSON", "binary", "a list"],
)
def test_a_sidecar_that_is_not_a_json_object_is_named(exported_t8, tmp_path, sidecar, message):
    with pytest.raises(ValueError, match=r"snn.jaxexport.json " + message):
        snnjax.import_snn(copied(exported_t8, tmp_path, sidecar=sidecar))


def test_a_damaged_artefact_is_refused_before_it_runs(exported_t8, tmp_path):
    path = copied(exported_t8, tmp_path)
    data = bytearray(exported_t8.read_bytes())
    data[len(data) // 2] ^= 0x5A  # flatbuffers still reads it; running it could crash the process
    (tmp_path / "snn.jaxexport").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"snn.jaxexport does not match the sha256 recorded in .*json"):
        snnjax.import_snn(path)


def test_metadata_may_not_overwrite_what_the_sidecar_says_about_the_artefact(tmp_path):
    ann = snnjax.nn.models.TinyCNN(num_classes=3, activation=QCFS4)
    snn = snnjax.spiking_model(ann, v0=0.5)
    with pytest.raises(ValueError, match=r"metadata keys \['T', 'sha256'\] would overwrite"):
        snnjax.export_snn(
            snn, {}, (8, 8, 1), 8, str(tmp_path / "snn"), metadata={"T": 4, "sha256": "", "x": 1}
        )
    assert not (tmp_path / "snn").exists()
