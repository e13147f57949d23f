"""PyTorch checkpoint import: safe reader, reference layouts, logits vs an independent NumPy forward."""

import functools
import hashlib
import io
import os
import pickle
import sys
import types
import zipfile
from unittest import mock

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from helpers import conv_nchw

import snnjax
from snnjax import conversion, io as interop
from snnjax.core import activations
from snnjax.experiment import pipeline as evaluation

# --- the reference layouts, written from the published model definitions ------------------------------

VGG16_GROUPS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
RESNET_STAGES = {
    "resnet18": ((64, 128, 256, 512), (2, 2, 2, 2)),
    "resnet34": ((64, 128, 256, 512), (3, 4, 6, 3)),
    "resnet20": ((16, 32, 64), (3, 3, 3)),
}


def _conv(sd, key, c_out, c_in, k, rng, bias):
    sd[f"{key}.weight"] = rng.normal(0, np.sqrt(2.0 / (c_in * k * k)), (c_out, c_in, k, k)).astype(np.float32)
    if bias:
        sd[f"{key}.bias"] = rng.normal(0, 0.05, (c_out,)).astype(np.float32)


def _bn(sd, key, c, rng):
    sd[f"{key}.weight"] = rng.uniform(0.6, 1.4, c).astype(np.float32)
    sd[f"{key}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{key}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{key}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{key}.num_batches_tracked"] = np.array(100, np.int64)


def _act(sd, key, layout, rng):
    sd[f"{key}.{'up' if layout == 'qcfs_original' else 'thresh'}"] = rng.uniform(1.0, 3.0, (1,)).astype(
        np.float32
    )


def reference_state_dict(arch, layout, num_classes=10, image_size=32, seed=0, in_channels=3):
    rng = np.random.default_rng(seed)
    sd = {}
    if arch == "vgg16":
        c_in = in_channels
        for g, widths in enumerate(VGG16_GROUPS):
            for k, width in enumerate(widths):
                _conv(sd, f"layer{g + 1}.{4 * k}", width, c_in, 3, rng, bias=True)
                _bn(sd, f"layer{g + 1}.{4 * k + 1}", width, rng)
                _act(sd, f"layer{g + 1}.{4 * k + 2}", layout, rng)
                c_in = width
        flat = 512 * (image_size // 32) ** 2
        for index, (c_out, c_in) in {1: (4096, flat), 4: (4096, 4096), 7: (num_classes, 4096)}.items():
            sd[f"classifier.{index}.weight"] = rng.normal(0, np.sqrt(1.0 / c_in), (c_out, c_in)).astype(
                np.float32
            )
            sd[f"classifier.{index}.bias"] = rng.normal(0, 0.05, c_out).astype(np.float32)
        _act(sd, "classifier.2", layout, rng)
        _act(sd, "classifier.5", layout, rng)
        return sd
    widths, stages = RESNET_STAGES[arch]
    _conv(sd, "conv1.0", widths[0], in_channels, 3, rng, bias=False)
    _bn(sd, "conv1.1", widths[0], rng)
    _act(sd, "conv1.2", layout, rng)
    c_in = widths[0]
    for s, (width, blocks) in enumerate(zip(widths, stages, strict=True)):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            key = f"conv{s + 2}_x.{b}"
            _conv(sd, f"{key}.residual_function.0", width, c_in, 3, rng, bias=False)
            _bn(sd, f"{key}.residual_function.1", width, rng)
            _act(sd, f"{key}.residual_function.2", layout, rng)
            _conv(sd, f"{key}.residual_function.3", width, width, 3, rng, bias=False)
            _bn(sd, f"{key}.residual_function.4", width, rng)
            if stride != 1 or c_in != width:
                _conv(sd, f"{key}.shortcut.0", width, c_in, 1, rng, bias=False)
                _bn(sd, f"{key}.shortcut.1", width, rng)
            _act(sd, f"{key}.{'relu' if layout == 'qcfs_original' else 'act'}", layout, rng)
            c_in = width
    sd["fc.weight"] = rng.normal(0, np.sqrt(1.0 / c_in), (num_classes, c_in)).astype(np.float32)
    sd["fc.bias"] = rng.normal(0, 0.05, num_classes).astype(np.float32)
    return sd


# --- an independent NumPy forward pass in PyTorch's NCHW layout --------------------------------------------


def bn_nchw(x, sd, key):
    g = sd[f"{key}.weight"] / np.sqrt(sd[f"{key}.running_var"] + 1e-5)
    return (x - sd[f"{key}.running_mean"][None, :, None, None]) * g[None, :, None, None] + sd[f"{key}.bias"][
        None, :, None, None
    ]


class Reference:
    """The reference network's forward, one function per activation style."""

    def __init__(self, sd, arch, layout):
        self.sd, self.arch = sd, arch
        self.param = "up" if layout == "qcfs_original" else "thresh"
        self.block_act = "relu" if layout == "qcfs_original" else "act"

    @staticmethod
    def conv(x, w, stride, pad, bias=None):
        return conv_nchw(x, w, stride, pad, bias)

    def forward(self, x, act):
        sd = self.sd
        if self.arch == "vgg16":
            for g, widths in enumerate(VGG16_GROUPS):
                for k in range(len(widths)):
                    p = f"layer{g + 1}"
                    x = self.conv(x, sd[f"{p}.{4 * k}.weight"], 1, 1, sd[f"{p}.{4 * k}.bias"])
                    x = act(bn_nchw(x, sd, f"{p}.{4 * k + 1}"), f"{p}.{4 * k + 2}")
                n, c, h, w = x.shape
                x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
            x = x.reshape(x.shape[0], -1)  # NCHW flatten
            x = act(x @ sd["classifier.1.weight"].T + sd["classifier.1.bias"], "classifier.2")
            x = act(x @ sd["classifier.4.weight"].T + sd["classifier.4.bias"], "classifier.5")
            return x @ sd["classifier.7.weight"].T + sd["classifier.7.bias"]
        x = act(bn_nchw(self.conv(x, sd["conv1.0.weight"], 1, 1), sd, "conv1.1"), "conv1.2")
        widths, stages = RESNET_STAGES[self.arch]
        for s, blocks in enumerate(stages):
            for b in range(blocks):
                key, stride = f"conv{s + 2}_x.{b}", 2 if s > 0 and b == 0 else 1
                y = bn_nchw(
                    self.conv(x, sd[f"{key}.residual_function.0.weight"], stride, 1),
                    sd,
                    f"{key}.residual_function.1",
                )
                y = act(y, f"{key}.residual_function.2")
                y = bn_nchw(
                    self.conv(y, sd[f"{key}.residual_function.3.weight"], 1, 1),
                    sd,
                    f"{key}.residual_function.4",
                )
                if f"{key}.shortcut.0.weight" in sd:
                    x = bn_nchw(
                        self.conv(x, sd[f"{key}.shortcut.0.weight"], stride, 0), sd, f"{key}.shortcut.1"
                    )
                x = act(x + y, f"{key}.{self.block_act}")
        return x.mean(axis=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]

    def clip_act(self, x, key):
        return np.clip(x, 0, self.sd[f"{key}.{self.param}"][0])

    def snn_logits(self, images, num_steps):
        """Per-step logits of the reference per-timestep loop (mem = θ/2, mem += x, s = mem ≥ θ)."""
        membranes, outputs = {}, []
        for _ in range(num_steps):

            def if_act(x, key):
                theta = self.sd[f"{key}.{self.param}"][0]
                mem = membranes.get(key, np.full_like(x, 0.5 * theta)) + x
                spike = np.where(mem >= theta, theta, 0.0).astype(np.float32)
                membranes[key] = mem - spike
                return spike

            outputs.append(self.forward(images, if_act))
        return np.stack(outputs)


ARCHS = [("vgg16", 32), ("resnet18", 16), ("resnet20", 16), ("resnet34", 16)]


def clip_model(arch, num_classes=10):
    activation = functools.partial(snnjax.ThresholdActivation, fn=activations.threshold_relu)
    return snnjax.create_model(arch, num_classes, activation)


@pytest.mark.slow  # full-width VGG-16 and ResNets, each against a NumPy forward
@pytest.mark.parametrize("layout", ["qcfs_original", "qcfs_revised"])
@pytest.mark.parametrize("arch, image_size", ARCHS)
def test_import_matches_independent_forward(arch, image_size, layout):
    sd = reference_state_dict(arch, layout, image_size=image_size)
    variables, report = interop.import_torch_state_dict(sd, arch, 10, layout, image_size=image_size)
    assert report["unmapped"] == [] and all(k.endswith("num_batches_tracked") for k in report["ignored"])
    images = np.random.default_rng(1).uniform(0, 1, (2, 3, image_size, image_size)).astype(np.float32)
    reference = Reference(sd, arch, layout)
    expected = reference.forward(images, reference.clip_act)
    logits = clip_model(arch).apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_imagenet_vgg_flatten_order():
    # 64×64 input leaves a 2×2×512 map: the first linear layer's inputs must be permuted NCHW → NHWC.
    sd = reference_state_dict("vgg16", "qcfs_revised", num_classes=5, image_size=64)
    variables, _ = interop.import_torch_state_dict(sd, "vgg16", 5, "qcfs_revised", image_size=64)
    images = np.random.default_rng(2).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    reference = Reference(sd, "vgg16", "qcfs_revised")
    expected = reference.forward(images, reference.clip_act)
    logits = clip_model("vgg16", 5).apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_imported_snn_matches_reference_per_timestep_loop():
    sd = reference_state_dict("resnet20", "qcfs_revised", image_size=8)
    variables, _ = interop.import_torch_state_dict(sd, "resnet20", 10, "qcfs_revised", image_size=8)
    images = np.random.default_rng(3).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    expected = Reference(sd, "resnet20", "qcfs_revised").snn_logits(images, 8)
    snn = conversion.spiking_model(clip_model("resnet20"), v0=0.5)
    logits = conversion.spiking_apply(
        snn, conversion.convert_variables(variables), jnp.asarray(images.transpose(0, 2, 3, 1)), 8
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_missing_key_and_shape_mismatch_are_named():
    sd = reference_state_dict("resnet20", "qcfs_revised")
    del sd["conv2_x.0.act.thresh"]
    with pytest.raises(ValueError, match=r"no 'conv2_x.0.act.thresh'"):
        interop.import_torch_state_dict(sd, "resnet20", 10, "qcfs_revised")
    sd = reference_state_dict("resnet20", "qcfs_revised", num_classes=100)
    with pytest.raises(ValueError, match=r"shape mismatch for head/kernel.*\(64, 100\).*\(64, 10\)"):
        interop.import_torch_state_dict(sd, "resnet20", 10, "qcfs_revised")
    sd = reference_state_dict("resnet20", "qcfs_revised")
    sd["extra.weight"] = np.zeros(3, np.float32)
    _, report = interop.import_torch_state_dict(sd, "resnet20", 10, "qcfs_revised")
    assert report["unmapped"] == ["extra.weight"]


# --- the safe reader -----------------------------------------------------------------------------------


def write_torch_zip(path, obj):
    """Writes ``obj`` (numpy arrays in dicts) in torch.save's zip layout, without PyTorch.

    Tensors pickle as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with the
    storage as a persistent id, as PyTorch does; fake ``torch`` modules exist only while pickling.
    """
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # noqa: ARG001 (a name for the pickle only)
        raise AssertionError

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    utils_mod._rebuild_tensor_v2, torch_mod.FloatStorage, torch_mod._utils = (
        _rebuild_tensor_v2,
        FloatStorage,
        utils_mod,
    )
    storages = []

    class Tensor:
        def __init__(self, array):
            self.array = np.ascontiguousarray(array, np.float32)

        def __reduce__(self):
            storages.append(self.array.tobytes())
            strides = tuple(s // 4 for s in self.array.strides)
            storage = ("storage", FloatStorage, str(len(storages) - 1), "cpu", self.array.size)
            return _rebuild_tensor_v2, (_Persistent(storage), 0, self.array.shape, strides, False, {})

    class Crafted:
        def __init__(self, spec):
            self.spec = spec

        def __reduce__(self):
            storages.append(self.spec.raw)
            storage = ("storage", FloatStorage, str(len(storages) - 1), "cpu", len(self.spec.raw) // 4)
            spec = self.spec
            return _rebuild_tensor_v2, (_Persistent(storage), spec.offset, spec.size, spec.stride, False, {})

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, _Persistent) else None

    def wrap(o):
        if isinstance(o, dict):
            return {k: wrap(v) for k, v in o.items()}
        if isinstance(o, CraftedTensor):
            return Crafted(o)
        return Tensor(o) if isinstance(o, np.ndarray) else o

    buffer = io.BytesIO()
    with mock.patch.dict(sys.modules, {"torch": torch_mod, "torch._utils": utils_mod}):
        Pickler(buffer, protocol=2).dump(wrap(obj))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for i, raw in enumerate(storages):
            archive.writestr(f"archive/data/{i}", raw)


class CraftedTensor:
    """A tensor record with the storage bytes, offset, size and stride given as they are (float32)."""

    def __init__(self, raw, offset, size, stride):
        self.raw, self.offset, self.size, self.stride = raw, offset, size, stride


class _Persistent:
    def __init__(self, pid):
        self.pid = pid


def test_reader_round_trip_without_torch(tmp_path):
    sd = reference_state_dict("resnet20", "qcfs_original")
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    sd["conv1.0.weight"] = np.asfortranarray(sd["conv1.0.weight"])  # a non-contiguous stride pattern
    write_torch_zip(
        tmp_path / "model.pth", {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    )
    read = interop.read_torch_checkpoint(str(tmp_path / "model.pth"))
    assert list(read) == list(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(read[key], value.astype(np.float32), err_msg=key)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_reader_refuses_a_checkpoint_that_carries_code(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": _RunsCode()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (os|posix)\.system"):
        interop.read_torch_checkpoint(str(path))


F32 = np.arange(6, dtype=np.float32).tobytes()  # a 6-element float32 storage


@pytest.mark.parametrize(
    "raw, offset, size, stride, message",
    [
        (F32, 0, (4, 4), (4, 1), r"reaches element 15 .* holds 6"),  # oversized: would read the heap
        (F32, 0, (1000000000000,), (1,), r"reaches element 999999999999"),
        (F32, 0, (-2, 3), (3, 1), r"ints >= 0"),  # negative size
        (F32, 0, (2, 3), (-3, 1), r"ints >= 0"),  # negative stride
        (F32, -1, (2,), (1,), r"ints >= 0"),  # negative offset
        (F32, 10**12, (2,), (1,), r"reaches element 1000000000001"),  # huge offset
        (F32, 0, (2, 2), (10**12, 1), r"reaches element"),  # huge stride
        (b"", 0, (2,), (1,), r"reaches element 1 .* holds 0"),  # zero-size storage
        (F32[:-1], 0, (2,), (1,), r"'archive/data/1' of 23 bytes, .* 5 float32 elements \(20 bytes\)"),
        (F32, 0, (2, 3), (1,), r"2 sizes but 1 strides"),
        (F32, 0, (2.5,), (1,), r"ints >= 0"),
        (F32, 0, (3, 3), (0, 1), r"9 elements but its storage"),  # an expanded view larger than storage
        (F32, 0, "abc", (1,), r"expected tuples"),
    ],
    ids=[
        "oversized",
        "huge-size",
        "negative-size",
        "negative-stride",
        "negative-offset",
        "huge-offset",
        "huge-stride",
        "zero-size-storage",
        "storage-length",
        "rank",
        "float-size",
        "expanded",
        "size-type",
    ],
)
def test_reader_refuses_tensors_outside_their_storage(tmp_path, raw, offset, size, stride, message):
    path = tmp_path / "crafted.pth"
    write_torch_zip(
        path, {"good": np.ones(3, np.float32), "layer.weight": CraftedTensor(raw, offset, size, stride)}
    )
    with pytest.raises(ValueError, match=r"crafted.pth: tensor 'layer.weight' .*" + message):
        interop.read_torch_checkpoint(str(path))


def test_reader_accepts_in_bounds_views_and_empty_tensors(tmp_path):
    path = tmp_path / "views.pth"
    write_torch_zip(
        path,
        {
            "last_column": CraftedTensor(F32, 2, (2,), (3,)),  # elements 2 and 5, the storage's last
            "empty": CraftedTensor(b"", 0, (0, 4), (4, 1)),
            "scalar": CraftedTensor(F32, 5, (), ()),
        },
    )
    read = interop.read_torch_checkpoint(str(path))
    np.testing.assert_array_equal(read["last_column"], [2.0, 5.0])
    assert read["empty"].shape == (0, 4)
    assert read["scalar"].shape == () and float(read["scalar"]) == 5.0


def test_reader_fuzzed_files_fail_cleanly(tmp_path):
    # Byte flips in the pickle and the zip structure, and truncations: every outcome is a clean
    # ValueError/UnpicklingError or a state_dict whose arrays lie inside the file (never a crash).
    path = tmp_path / "good.pth"
    write_torch_zip(path, {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "a.bias": np.ones(3)})
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "read": 0}
    for trial in range(300):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: rng.integers(1, len(data))]
        else:
            for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
                data[position] = rng.integers(0, 256)
        fuzzed = tmp_path / f"fuzz{trial}.pth"
        fuzzed.write_bytes(bytes(data))
        try:
            read = interop.read_torch_checkpoint(str(fuzzed))
        except (ValueError, pickle.UnpicklingError):
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1
            assert sum(v.nbytes for v in read.values()) <= len(data)
    assert outcomes["refused"] > 100  # the fuzzing did reach the checks


def test_reader_names_a_missing_storage(tmp_path):
    path = tmp_path / "nostorage.pth"
    write_torch_zip(path, {"w": np.ones(2, np.float32)})
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if n != "archive/data/0"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    with pytest.raises(pickle.UnpicklingError, match="archive/data/0"):
        interop.read_torch_checkpoint(str(path))


def test_reader_rejects_non_zip_files(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a zip-format PyTorch checkpoint"):
        interop.read_torch_checkpoint(str(path))


def test_reader_matches_torch_save_when_pytorch_is_installed(tmp_path):
    torch = pytest.importorskip("torch")
    sd = reference_state_dict("resnet20", "qcfs_revised")
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "t.pth")
    read = interop.read_torch_checkpoint(str(tmp_path / "t.pth"))
    for key, value in sd.items():
        np.testing.assert_array_equal(read[key], value, err_msg=key)


@pytest.mark.slow
def test_convert_py_path_accepts_a_reference_checkpoint(tmp_path, capsys):
    from snnjax.configs import ci_tiny

    sd = reference_state_dict("resnet20", "qcfs_original", in_channels=1)
    write_torch_zip(tmp_path / "ref.pth", {"net": sd})
    config = ci_tiny.get_config()
    config.model = "resnet20"
    config.torch_checkpoint = str(tmp_path / "ref.pth")
    config.torch_layout = "qcfs_original"
    config.report_examples = 64
    workdir = tmp_path / "runs" / "imported"  # created by the conversion (the README's import command)
    result = evaluation.convert_and_evaluate(config, str(workdir))
    assert set(result["snn_accuracy"]) == {str(t) for t in range(1, 9)}
    assert (workdir / "snn_eval.json").exists()
    expected_sha256 = hashlib.sha256((tmp_path / "ref.pth").read_bytes()).hexdigest()
    assert result["source"] == {
        "torch_checkpoint": str(tmp_path / "ref.pth"),
        "sha256": expected_sha256,
        "torch_layout": "qcfs_original",
    }
    config.torch_checkpoint = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        evaluation.convert_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("arch, image_size", [("vgg16", 32), ("resnet20", 16)])
def test_import_matches_pytorch_convolutions_when_installed(arch, image_size):
    torch = pytest.importorskip("torch")

    class TorchReference(Reference):
        @staticmethod
        def conv(x, w, stride, pad, bias=None):
            bias = None if bias is None else torch.from_numpy(bias)
            y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), bias, stride, pad)
            return y.numpy()

    sd = reference_state_dict(arch, "qcfs_revised", image_size=image_size)
    variables, _ = interop.import_torch_state_dict(sd, arch, 10, "qcfs_revised", image_size=image_size)
    images = np.random.default_rng(4).uniform(0, 1, (2, 3, image_size, image_size)).astype(np.float32)
    reference = TorchReference(sd, arch, "qcfs_revised")
    expected = reference.forward(images, reference.clip_act)
    logits = clip_model(arch).apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_slip_relu_layout_scalar_up_and_learnable_c_are_handled():
    # The SlipReLU code shares the original layout but stores `up` as a 0-d tensor and, with a
    # learnable c, an extra `a` per activation: imported λ must be the same, `a` reported unused.
    sd = reference_state_dict("resnet20", "qcfs_original")
    expected, _ = interop.import_torch_state_dict(sd, "resnet20", 10, "qcfs_original")
    slip = {k: (v.reshape(()) if k.endswith(".up") else v) for k, v in sd.items()}
    slip["conv1.2.a"] = np.array(0.5, np.float32)
    variables, report = interop.import_torch_state_dict(slip, "resnet20", 10, "qcfs_original")
    assert report["unmapped"] == ["conv1.2.a"]
    jax.tree.map(np.testing.assert_array_equal, variables, expected)


def test_a_bfloat16_checkpoint_imports_as_float32_variables(tmp_path):
    # read_torch_checkpoint keeps bfloat16 (as ml_dtypes.bfloat16); import_torch_state_dict casts to float32.
    torch = pytest.importorskip("torch")
    sd = reference_state_dict("resnet20", "qcfs_revised")
    bf16 = {k: torch.from_numpy(v) for k, v in sd.items()}
    bf16 = {k: t.bfloat16() if t.is_floating_point() else t for k, t in bf16.items()}
    torch.save(bf16, tmp_path / "bf16.pth")
    read = interop.read_torch_checkpoint(str(tmp_path / "bf16.pth"))
    assert read["conv1.0.weight"].dtype == ml_dtypes.bfloat16
    variables, _ = interop.import_torch_state_dict(read, "resnet20", 10, "qcfs_revised")
    rounded = {k: t.float().numpy() if t.is_floating_point() else t.numpy() for k, t in bf16.items()}
    expected, _ = interop.import_torch_state_dict(rounded, "resnet20", 10, "qcfs_revised")
    for (path, got), (_, want) in zip(
        jax.tree_util.tree_leaves_with_path(variables),
        jax.tree_util.tree_leaves_with_path(expected),
        strict=True,
    ):
        assert got.dtype == np.float32, path
        np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
