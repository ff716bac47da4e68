"""The PyTorch reader: what ``torch.save`` and ``safetensors`` files hold, read without unpickling code, and
every hostile file refused with a typed, one-line-able error before anything large is allocated or run.
"""
from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modelkeep import import_model, load
from modelkeep.data import ReaderLimits
from modelkeep.errors import FormatError, ModelkeepError, TrustError
from modelkeep.importers.api import choose_reader
from modelkeep.importers.pytorch import TorchReader

from pytorch_nets import MultiNet, RunsACommand

HERE = Path(__file__).resolve().parent
LIMITS = ReaderLimits()


def read(path: Path):
    return choose_reader(path).read(path, LIMITS)


def test_state_dicts_and_checkpoints_give_their_tensors(tmp_path):
    net = MultiNet()
    sd = net.state_dict()
    cases = {
        "plain": sd,
        "model": {"model": sd, "epoch": 4},
        "model_state_dict": {"model_state_dict": sd, "optimizer_state_dict": torch.optim.SGD(net.parameters(),
                                                                                             lr=0.1).state_dict()},
        "nested": {"encoder": {"w": torch.ones(2)}, "decoder": {"b": torch.zeros(3)}, "step": 7},
    }
    for name, payload in cases.items():
        torch.save(payload, tmp_path / f"{name}.pt")
        imported = read(tmp_path / f"{name}.pt")
        assert imported.format == "pytorch"
        if name == "nested":
            assert sorted(imported.tensors) == ["decoder.b", "encoder.w"]
            assert any("step" in note for note in imported.notes)
        else:
            assert sorted(imported.tensors) == sorted(sd)
            assert all(torch.equal(imported.tensors[k], v) for k, v in sd.items())
    assert read(tmp_path / "model_state_dict.pt").details["weights_under"] == "model_state_dict"


def test_zip_files_are_memory_mapped_and_legacy_files_read(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    sd["row"] = sd["a"][1]  # a view sharing the storage, as tied weights do
    torch.save(sd, tmp_path / "new.pt")
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for name, container in (("new.pt", "zip"), ("old.pt", "legacy")):
        imported = read(tmp_path / name)
        assert imported.details["container"] == container
        assert all(torch.equal(imported.tensors[k], v) for k, v in sd.items())


def test_a_pickle_protocol_torch_cannot_read_safely_is_refused_clearly(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "old4.pt", _use_new_zipfile_serialization=False, pickle_protocol=4)
    assert choose_reader(tmp_path / "old4.pt").format == "pytorch"
    with pytest.raises(FormatError, match="pickle instruction .*save it again"):
        read(tmp_path / "old4.pt")


def test_half_precision_weights_land_in_a_float_model(tmp_path):
    net = MultiNet()
    torch.save({k: v.half() for k, v in net.state_dict().items()}, tmp_path / "half.pt")
    import_model(tmp_path / "half.pt", tmp_path / "out.safetensors", model_class=MultiNet, strict=True)
    loaded = load(tmp_path / "out.safetensors", model_class=MultiNet)
    assert loaded.module.head.weight.dtype == torch.float32
    assert torch.equal(loaded.module.head.weight, net.head.weight.half().float())


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_runs_code_is_refused_naming_the_global_and_nothing_runs(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": RunsACommand(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(TrustError, match=r"asks for the Python global 'posix\.system'") as caught:
        import_model(path, tmp_path / "out.safetensors", model_class=MultiNet)
    assert "\n" not in str(caught.value)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_plain_pickle_and_other_foreign_files_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    files = {
        "plain.pkl": pickle.dumps(RunsACommand(marker)),
        "text.pt": b"hello, I am not a model\n",
        "empty.pt": b"",
        "other.zip": _zip({"readme.txt": b"hi"}),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError, match="cannot import"):
            import_model(tmp_path / name, tmp_path / "out.safetensors", model_class=MultiNet)
    assert not marker.exists()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _rewrite(src: Path, dst: Path, patch) -> None:
    """``src``'s members written again as a valid zip, with ``patch(name, bytes)`` applied to each."""
    with zipfile.ZipFile(src) as archive:
        members = {info.filename: patch(info.filename, archive.read(info)) for info in archive.infolist()}
    dst.write_bytes(_zip(members))


def _tensor_file(tmp_path: Path, numel: int = 123_456) -> Path:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(numel)}, path)
    return path


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path):
    number = struct.pack("<i", 123_456)

    def bigger_shape(name, data):  # the second occurrence is the shape; the first the storage's size
        if not name.endswith("data.pkl"):
            return data
        at = data.index(b"J" + number, data.index(b"J" + number) + 1)
        return data[:at] + b"J" + struct.pack("<i", 200_000) + data[at + 5:]

    _rewrite(_tensor_file(tmp_path), tmp_path / "bad.pt", bigger_shape)
    with pytest.raises(FormatError, match=r"declares shape \[200000\].*over a storage of 493824 bytes"):
        read(tmp_path / "bad.pt")


def test_a_storage_larger_than_the_archive_holds_is_refused(tmp_path):
    number = struct.pack("<i", 123_456)

    def bigger_storage(name, data):
        if not name.endswith("data.pkl"):
            return data
        return data.replace(b"J" + number, b"J" + struct.pack("<i", 2**31 - 1), 1)

    _rewrite(_tensor_file(tmp_path), tmp_path / "bad.pt", bigger_storage)
    with pytest.raises(FormatError, match="declares 8589934588 bytes but the archive holds 493824"):
        read(tmp_path / "bad.pt")


def test_a_giant_broadcast_tensor_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1).expand(10**12)}, tmp_path / "giant.pt")  # 4 bytes claiming 10^12 values
    with pytest.raises(FormatError, match="1,000,000,000,000 elements.*max_elements"):
        read(tmp_path / "giant.pt")
    torch.save({"w": torch.zeros(1).expand(1000)}, tmp_path / "broadcast.pt")
    with pytest.raises(FormatError, match="over a storage of 4 bytes"):
        read(tmp_path / "broadcast.pt")


def test_the_legacy_format_cannot_declare_more_than_the_file_holds(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(123_456)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    number = struct.pack("<i", 123_456)
    path.write_bytes(raw.replace(b"J" + number, b"J" + struct.pack("<i", 2**31 - 1), 1))
    with pytest.raises(FormatError, match="more than the .*-byte file holds"):
        read(path)


def test_a_member_declared_beyond_the_end_of_the_file_is_refused(tmp_path):
    raw = bytearray(_tensor_file(tmp_path).read_bytes())
    at = raw.index(b"PK\x01\x02", raw.index(b"w/data/0") - 100)  # the storage's central directory entry
    while not raw[at + 46:at + 46 + 8].startswith(b"w/data/0"):
        at = raw.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<II", raw, at + 20, 0x7FFF0000, 0x7FFF0000)  # compressed and uncompressed sizes
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="beyond the end"):
        read(tmp_path / "bad.pt")


def test_a_zip_declaring_a_billion_members_is_refused_before_listing_them(tmp_path):
    raw = _tensor_file(tmp_path, 10).read_bytes()
    eocd = raw.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", raw[eocd + 12:eocd + 20])
    body = raw[:cd_offset + cd_size]
    record = (b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, 10**9, 10**9, cd_size, cd_offset))
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(body), 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    (tmp_path / "many.pt").write_bytes(body + record + locator + end)
    with pytest.raises(FormatError, match="1,000,000,000 members"):
        read(tmp_path / "many.pt")


def test_a_pickle_of_millions_of_containers_is_refused(tmp_path):
    bomb = b"\x80\x02](" + b"}" * 2_100_000 + b"e."  # a list of 2.1 million empty dicts: ~140 MB from 2 MB
    (tmp_path / "bomb.pt").write_bytes(_zip({"w/data.pkl": bomb, "w/version": b"3\n"}))
    with pytest.raises(FormatError, match="containers"):
        read(tmp_path / "bomb.pt")


@pytest.mark.parametrize("fraction", [0.3, 0.9])
@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_truncated_files_are_refused(tmp_path, kind, fraction):
    path = tmp_path / "w.bin"
    state = {"w": torch.randn(300), "b": torch.randn(20)}
    if kind == "safetensors":
        save_file(state, path)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=kind == "zip")
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(FormatError):
        import_model(path, tmp_path / "out.safetensors", spec={"layers": [{"kind": "Input", "shape": [3]}]})


def test_torchscript_archives_are_refused(tmp_path):
    torch.jit.save(torch.jit.script(MultiNet()), tmp_path / "scripted.pt")
    with pytest.raises(FormatError, match="TorchScript"):
        read(tmp_path / "scripted.pt")


def test_sniffing_reads_the_content(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "x.bin")
    save_file({"w": torch.ones(1)}, tmp_path / "x.pt")
    assert choose_reader(tmp_path / "x.bin").format == "pytorch"
    assert choose_reader(tmp_path / "x.pt").format == "safetensors"
    assert not TorchReader().sniff(tmp_path / "x.pt", (tmp_path / "x.pt").read_bytes()[:4096])


def test_hostile_files_leave_memory_small(tmp_path):
    """In a fresh process: giant declared shapes, storages and member sizes cost no memory to refuse."""
    torch.save({"w": torch.zeros(1).expand(10**12)}, tmp_path / "giant.pt")
    legacy = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(123_456)}, legacy, _use_new_zipfile_serialization=False)
    number = struct.pack("<i", 123_456)
    legacy.write_bytes(legacy.read_bytes().replace(b"J" + number, b"J" + struct.pack("<i", 2**31 - 1), 1))
    script = textwrap.dedent(f"""
        import resource, sys
        import torch
        from modelkeep import import_model
        from modelkeep.errors import ModelkeepError
        spec = {{"layers": [{{"kind": "Input", "shape": [3]}}]}}
        def peak():  # this program's own high-water mark (ru_maxrss carries the parent's across fork + exec)
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        before = peak()
        for name in ("giant.pt", "old.pt"):
            try:
                import_model({str(tmp_path)!r} + "/" + name, {str(tmp_path)!r} + "/out.safetensors", spec=spec)
            except ModelkeepError as exc:
                print(type(exc).__name__)
        print((peak() - before) // 1024)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=HERE, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    lines = result.stdout.split()
    assert lines[:2] == ["FormatError", "FormatError"], result.stderr[-2000:]
    assert int(lines[2]) < 100, f"grew {lines[2]} MiB"
    assert issubclass(FormatError, ModelkeepError)


@pytest.mark.parametrize("save", ["torch", "safetensors"])
def test_reader_limits_bound_every_tensor(tmp_path, save):
    path = tmp_path / "w.bin"
    state = {"small": torch.zeros(4), "big": torch.zeros(50)}
    torch.save(state, path) if save == "torch" else save_file(state, path)
    with pytest.raises(FormatError, match="'big'.*max_elements = 10"):
        import_model(path, tmp_path / "out.safetensors", spec={"layers": [{"kind": "Input", "shape": [3]}]},
                     limits=ReaderLimits(max_elements=10))


def test_a_folder_source_is_hashed_as_its_listing(tmp_path):
    import hashlib

    from modelkeep.importers.api import source_sha256

    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"abc")
    listing = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                      for name, data in (("config.json", b"{}"), ("sub/w.bin", b"abc")))
    assert source_sha256(tmp_path / "m") == hashlib.sha256(listing.encode()).hexdigest()
