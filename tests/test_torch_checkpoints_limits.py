"""The .pth reader's limits: memory bounded by what the pickle declares, and every dtype torch.save writes.

The files are written by hand (opcode by opcode, as torch.save lays them out) so that the tests need no
PyTorch and can declare sizes that disagree with the records; the tests marked by ``importorskip`` check
the same against real ``torch.save`` files.
"""

import dataclasses
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import ml_dtypes
import numpy as np
import pytest

from snnjax.io import torch_checkpoints

MiB = 1 << 20


@dataclasses.dataclass
class Tensor:
    """One ``_rebuild_tensor_v2`` (``dtype`` None) or ``_rebuild_tensor_v3`` call of a data.pkl."""

    record: str  # the storage record, archive/data/<record>
    numel: int  # the storage's element count, as the pickle declares it
    size: tuple
    stride: tuple
    offset: int = 0
    storage: str = "torch.FloatStorage"
    dtype: str | None = None  # torch.<dtype>, for _rebuild_tensor_v3


def _ops(value):
    """The pickle opcodes of a plain value (no PROTO, no STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _global(dotted):
    module, name = dotted.rsplit(".", 1)
    return b"c" + f"{module}\n{name}\n".encode()


def tensor_pickle(tensors):
    """data.pkl for ``{key: Tensor}``, in the layout torch.save writes."""
    out = [b"\x80\x02}"]  # PROTO 2, EMPTY_DICT
    for key, t in tensors.items():
        rebuild = "torch._utils._rebuild_tensor_v3" if t.dtype else "torch._utils._rebuild_tensor_v2"
        out += [_ops(key), _global(rebuild), b"("]  # MARK: the call's arguments
        out += [b"(", _ops("storage"), _global(t.storage), _ops(t.record), _ops("cpu"), _ops(t.numel), b"tQ"]
        out += [_ops(t.offset), _ops(tuple(t.size)), _ops(tuple(t.stride)), b"\x89}"]  # requires_grad, hooks
        out += [_global(f"torch.{t.dtype}")] if t.dtype else []
        out += [b"tRs"]  # TUPLE, REDUCE, SETITEM
    return b"".join([*out, b"."])


def write_pth(path, tensors, records, deflate=()):
    """A torch.save-style zip: ``records`` maps record names to bytes; those in ``deflate`` are compressed."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", tensor_pickle(tensors))
        archive.writestr("archive/byteorder", "little")
        for name, raw in records.items():
            method = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            archive.writestr(f"archive/data/{name}", raw, compress_type=method)
    return path


def read_with_peak(path):
    """``(result or exception, peak bytes Python allocated while reading)``."""
    tracemalloc.start()
    try:
        result = torch_checkpoints.read_torch_checkpoint(str(path))
    except (ValueError, pickle.UnpicklingError) as error:
        result = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


# --- memory -------------------------------------------------------------------------------------------


def test_a_record_that_inflates_past_its_declared_size_is_refused_before_decompressing(tmp_path):
    # A deflated 64 MiB of zeros where the pickle declares 4 floats: a zip bomb (the file is ~64 KB).
    path = write_pth(
        tmp_path / "bomb.pth", {"w": Tensor("0", 4, (4,), (1,))}, {"0": bytes(64 * MiB)}, deflate={"0"}
    )
    assert path.stat().st_size < MiB
    error, peak = read_with_peak(path)
    assert isinstance(error, ValueError)
    assert (
        "bomb.pth: tensor 'w' has a storage record 'archive/data/0' of 67108864 bytes, but the pickle "
        "declares 4 float32 elements (16 bytes)" in str(error)
    )
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_torch_saved_file_whose_record_was_swapped_for_a_bomb_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(4)}, tmp_path / "good.pth")
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(tmp_path / "good.pth") as good, zipfile.ZipFile(path, "w") as bomb:
        for info in good.infolist():
            if info.filename.endswith("/data/0"):
                bomb.writestr(info.filename, bytes(64 * MiB), compress_type=zipfile.ZIP_DEFLATED)
            else:
                bomb.writestr(info, good.read(info))
    error, peak = read_with_peak(path)
    assert isinstance(error, ValueError)
    assert "/data/0' of 67108864 bytes, but the pickle declares 4 float32 elements (16 bytes)" in str(error)
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_record_shorter_than_declared_is_refused(tmp_path):
    # 3 floats where the pickle declares 4 (the tensor itself asks for only 3).
    raw = np.arange(3, dtype=np.float32).tobytes()
    path = write_pth(tmp_path / "short.pth", {"w": Tensor("0", 4, (3,), (1,))}, {"0": raw})
    with pytest.raises(ValueError, match=r"'archive/data/0' of 12 bytes, .* 4 float32 elements \(16 bytes\)"):
        torch_checkpoints.read_torch_checkpoint(str(path))


def test_a_zip_header_that_understates_a_record_decompresses_no_more_than_declared(tmp_path):
    # The central directory says 16 bytes (with their CRC) while the deflate stream holds 64 MiB.
    # zipfile's read() of a whole record inflates all of a compressed chunk before cutting it to the
    # header's size (141 MiB here); a read of at most the declared bytes inflates no more than 4 KiB.
    path = write_pth(
        tmp_path / "lying.pth", {"w": Tensor("0", 4, (4,), (1,))}, {"0": bytes(64 * MiB)}, deflate={"0"}
    )
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # central directory entries: the name at 46, CRC at 16, size at 24
    while data[entry + 46 : entry + 60] != b"archive/data/0":
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 16, zlib.crc32(bytes(16)))
    struct.pack_into("<I", data, entry + 24, 16)
    path.write_bytes(bytes(data))
    read, peak = read_with_peak(path)
    np.testing.assert_array_equal(read["w"], np.zeros(4, np.float32))
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_pickle_over_the_limit_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bigpickle.pth"
    with zipfile.ZipFile(path, "w") as archive:
        blob = pickle.dumps({"blob": "x" * (5 * MiB)}, protocol=2)  # plain: the pickle's size is its fault
        archive.writestr("archive/data.pkl", blob, compress_type=zipfile.ZIP_DEFLATED)
    error, peak = read_with_peak(path)
    assert isinstance(error, ValueError)
    assert f"'archive/data.pkl' is larger than the 4194304 bytes this reader accepts ({len(blob)}" in str(
        error
    )
    assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_tensors_that_view_one_storage_share_it_rather_than_copy_it(tmp_path):
    # 64 tensors over one 1 MiB storage: copies would cost 64 MiB from a 1 MiB file.
    values = np.arange(MiB // 4, dtype=np.float32)
    tensors = {f"v{i}": Tensor("0", values.size, (values.size,), (1,)) for i in range(64)}
    tensors["t"] = Tensor("0", values.size, (512, 512), (1, 512))  # a transposed view
    path = write_pth(tmp_path / "views.pth", tensors, {"0": values.tobytes()})
    read, peak = read_with_peak(path)
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"
    np.testing.assert_array_equal(read["v63"], values)
    np.testing.assert_array_equal(read["t"], values.reshape(512, 512).T)
    assert np.shares_memory(read["v0"], read["v1"]) and np.shares_memory(read["v0"], read["t"])
    read["v0"][0] = 7.0  # writeable, and aliased as the tensors are in PyTorch
    assert read["v1"][0] == 7.0


# --- dtypes -------------------------------------------------------------------------------------------


def test_bfloat16_and_the_untyped_storage_dtypes_are_read_without_torch(tmp_path):
    bf16 = (np.arange(6, dtype=np.float32) - 2.5).astype(ml_dtypes.bfloat16).reshape(2, 3)
    f8 = np.array([0.5, -1.5, 448.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    u16 = np.array([0, 1, 65535], np.uint16)
    path = write_pth(
        tmp_path / "dtypes.pth",
        {
            "bf16": Tensor("0", 6, (2, 3), (3, 1), storage="torch.BFloat16Storage"),
            "bf16_t": Tensor("0", 6, (3, 2), (1, 3), storage="torch.BFloat16Storage"),
            # torch.save writes newer dtypes as bytes (an untyped storage) plus a dtype argument.
            "f8": Tensor("1", 3, (3,), (1,), storage="torch.storage.UntypedStorage", dtype="float8_e4m3fn"),
            "u16": Tensor("2", 6, (3,), (1,), storage="torch.storage.UntypedStorage", dtype="uint16"),
        },
        {"0": bf16.tobytes(), "1": f8.tobytes(), "2": u16.tobytes()},
    )
    read = torch_checkpoints.read_torch_checkpoint(str(path))
    assert read["bf16"].dtype == ml_dtypes.bfloat16 and read["f8"].dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(read["bf16"].astype(np.float32), bf16.astype(np.float32))
    np.testing.assert_array_equal(read["bf16_t"].astype(np.float32), bf16.astype(np.float32).T)
    np.testing.assert_array_equal(read["f8"].astype(np.float32), [0.5, -1.5, 448.0])
    np.testing.assert_array_equal(read["u16"], u16)


@pytest.mark.parametrize(
    "tensor, rebuild, message",
    [
        (
            Tensor("0", 4, (4,), (1,), storage="torch.QInt8Storage"),
            None,
            r"unsupported tensor storage torch\.QInt8Storage: .*torch\.BFloat16Storage",
        ),
        (
            Tensor("0", 2, (2,), (1,), storage="torch.storage.UntypedStorage", dtype="float4_e2m1fn_x2"),
            None,
            r"unsupported tensor dtype torch\.float4_e2m1fn_x2: .*bfloat16",
        ),
        (
            Tensor("0", 4, (4,), (1,), storage="torch.CharStorage"),
            "torch._utils._rebuild_qtensor",
            r"unsupported tensor kind torch\._utils\._rebuild_qtensor: .*dense tensors only",
        ),
    ],
    ids=["storage", "dtype", "quantized"],
)
def test_an_unsupported_dtype_is_named_as_such_not_as_code(tmp_path, tensor, rebuild, message):
    data = tensor_pickle({"w": tensor})
    if rebuild:
        data = data.replace(_global("torch._utils._rebuild_tensor_v2"), _global(rebuild))
    path = tmp_path / "unsupported.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/data/0", bytes(4))
    with pytest.raises(pickle.UnpicklingError, match=message) as error:
        torch_checkpoints.read_torch_checkpoint(str(path))
    assert "would run code" not in str(error.value)


def test_a_crafted_pickle_cannot_change_how_the_next_file_is_read(tmp_path):
    # BUILD on the shared FloatStorage stand-in, setting its dtype to float16 for every later load.
    poison = tmp_path / "poison.pth"
    with zipfile.ZipFile(poison, "w") as archive:
        # SETITEM the state {"dtype": "float16"}, BUILD, POP, then an empty dict as the result.
        payload = [_global("torch.FloatStorage"), b"}", _ops("dtype"), _ops("float16"), b"sb0}."]
        archive.writestr("archive/data.pkl", b"\x80\x02" + b"".join(payload))
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        torch_checkpoints.read_torch_checkpoint(str(poison))
    values = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    path = write_pth(tmp_path / "honest.pth", {"w": Tensor("0", 4, (4,), (1,))}, {"0": values.tobytes()})
    read = torch_checkpoints.read_torch_checkpoint(str(path))
    assert read["w"].dtype == np.float32
    np.testing.assert_array_equal(read["w"], values)


TORCH_DTYPES = (
    "bfloat16 float16 float32 float64 complex64 complex128 int8 int16 int32 int64 uint8 uint16 uint32 "
    "uint64 bool float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu"
).split()


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_torch_saved_tensors_of_every_dtype_read_back_equal(tmp_path, name):
    torch = pytest.importorskip("torch")
    if not hasattr(torch, name):
        pytest.skip(f"this PyTorch has no torch.{name}")
    dtype = getattr(torch, name)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    if dtype.is_complex:
        tensor = (base - 5.5 + 0.25j * base).to(dtype)
    elif name.startswith("uint") or name == "bool":
        tensor = (base.to(torch.int64) % 5).to(dtype)
    else:
        tensor = ((base - 5.5) * 0.5).to(dtype)
    # The transpose shares the tensor's storage (one record, read back as a strided view).
    torch.save({"w": tensor, "w_t": tensor.T, "scalar": tensor[1, 2].clone()}, tmp_path / "t.pth")
    read = torch_checkpoints.read_torch_checkpoint(str(tmp_path / "t.pth"))
    # Compared in a dtype both sides convert to exactly (NumPy has no bfloat16 or float8 of its own).
    wide, np_wide = (torch.complex128, np.complex128) if dtype.is_complex else (torch.float64, np.float64)
    for key, value in {"w": tensor, "w_t": tensor.T, "scalar": tensor[1, 2]}.items():
        assert read[key].dtype.itemsize == value.element_size(), key
        assert read[key].shape == tuple(value.shape), key
        np.testing.assert_array_equal(np.asarray(read[key], np_wide), value.to(wide).numpy(), err_msg=key)
