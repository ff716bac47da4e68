"""The tensor-bundle reader against bundles TensorFlow wrote, and against hostile ones built by hand."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bundle_writer import entry_proto, header_proto, table, write_bundle, block
from modelkeep.data.limits import DEFAULT_LIMITS, ReaderLimits
from modelkeep.errors import FormatError, IntegrityError
from modelkeep.importers._crc32c import crc32c, masked
from modelkeep.importers.tf_bundle import OBJECT_GRAPH_KEY, BundleReader, iter_table

DATA = Path(__file__).parent / "data"
FIXTURES = ["mlp", "cnn", "rnn"]


def expected_variables(name: str) -> dict[str, np.ndarray]:
    stored = np.load(DATA / f"{name}.npz")
    return {key[4:]: stored[key] for key in stored.files if key.startswith("var:")}


@pytest.mark.parametrize("name", FIXTURES)
def test_every_variable_equals_tensorflows(name: str) -> None:
    bundle = BundleReader(DATA / name / "variables" / "variables", DEFAULT_LIMITS)
    expected = expected_variables(name)
    assert set(bundle.entries) == set(expected) | {OBJECT_GRAPH_KEY}
    for key, want in expected.items():
        got = bundle.read(key)
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    (graph,) = bundle.read_strings(OBJECT_GRAPH_KEY)
    assert b"layer_with_weights-0" in graph


def test_crc32c_known_values_and_vectorised_path() -> None:
    assert crc32c(b"123456789") == 0xE3069283           # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA              # RFC 3720 test vector
    data = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    whole = crc32c(data)                                  # vectorised (>= 64 KiB)
    assert crc32c(data[50_000:], crc32c(data[:50_000])) == whole
    assert crc32c(data[-1:], crc32c(data[:-1])) == whole  # plain loop continues the same register


def test_hand_written_bundle_round_trips(tmp_path: Path) -> None:
    tensors = {"a": np.arange(6, dtype="float32").reshape(2, 3), "b/c": np.array([1, -2], dtype="int64"),
               "d": np.array(True), "e": np.ones((2, 2), "float16")}
    bundle = BundleReader(write_bundle(tmp_path, tensors), DEFAULT_LIMITS)
    for key, array in tensors.items():
        got = bundle.read(key)
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_bfloat16_is_widened_exactly(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype="float32")
    raw = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    prefix = write_bundle(tmp_path, {}, entries={"w": entry_proto(14, (3,), size=6, crc=masked(crc32c(raw)))})
    (tmp_path / "variables.data-00000-of-00001").write_bytes(raw)
    np.testing.assert_array_equal(BundleReader(prefix, DEFAULT_LIMITS).read("w"), values)


def _real_index(tmp_path: Path) -> tuple[Path, bytes]:
    prefix = tmp_path / "variables"
    for source in (DATA / "mlp" / "variables").iterdir():
        (tmp_path / source.name).write_bytes(source.read_bytes())
    return prefix, (tmp_path / "variables.index").read_bytes()


@pytest.mark.parametrize("cut", [0, 10, 47, 200, -1])
def test_truncated_index_is_refused(tmp_path: Path, cut: int) -> None:
    prefix, raw = _real_index(tmp_path)
    (tmp_path / "variables.index").write_bytes(raw[:cut])
    with pytest.raises(FormatError, match="too short|magic"):
        BundleReader(prefix, DEFAULT_LIMITS)


def test_bad_magic_is_refused(tmp_path: Path) -> None:
    prefix, raw = _real_index(tmp_path)
    (tmp_path / "variables.index").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(FormatError, match="bad magic"):
        BundleReader(prefix, DEFAULT_LIMITS)


def test_damaged_block_fails_its_checksum(tmp_path: Path) -> None:
    prefix, raw = _real_index(tmp_path)
    damaged = bytearray(raw)
    damaged[20] ^= 0x40
    (tmp_path / "variables.index").write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="CRC-32C"):
        BundleReader(prefix, DEFAULT_LIMITS)


def test_damaged_tensor_bytes_fail_their_checksum(tmp_path: Path) -> None:
    prefix, _ = _real_index(tmp_path)
    bundle = BundleReader(prefix, DEFAULT_LIMITS)
    entry = bundle.entries["layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    shard = tmp_path / "variables.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[entry.offset + 5] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="CRC-32C"):
        bundle.read(entry.key)


HOSTILE_ENTRIES = {
    "giant shape": (entry_proto(1, (10**6, 10**6), size=16), "max_elements"),
    "giant size": (entry_proto(1, (4,), size=10**15), "claim 1000000000000256 bytes"),
    "size not matching shape": (entry_proto(1, (4,), size=20), "needs 16"),
    "offset past the shard": (entry_proto(1, (4,), offset=2**62, size=16), "claims bytes"),
    "size past the shard": (entry_proto(1, (1000,), size=4000), "claim 4256 bytes"),
    "negative dimension": (entry_proto(1, (-1, 4), size=16), "dimension of size -1"),
    "negative offset": (entry_proto(1, (4,), offset=-5, size=16), "negative offset"),
    "sliced variable": (entry_proto(1, (4,), size=16, sliced=True), "sliced"),
    "shard out of range": (entry_proto(1, (4,), shard=3, size=16), "shard 3"),
    "unknown dtype": (entry_proto(21, (4,), size=16), "unsupported dtype"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ENTRIES))
def test_hostile_entries_are_refused(tmp_path: Path, case: str) -> None:
    proto, message = HOSTILE_ENTRIES[case]
    with pytest.raises(FormatError, match=message):
        prefix = write_bundle(tmp_path, {"ok": np.zeros(64, "float32")}, entries={"bad": proto})
        with (tmp_path / "variables.data-00000-of-00001").open("ab") as shard:
            shard.write(bytes(64))   # room for the bad entry's own few bytes, so only its flaw is in question
        BundleReader(prefix, DEFAULT_LIMITS).read("bad")


def test_limits_are_the_readers(tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path, {"w": np.zeros((4, 4), "float32")})
    with pytest.raises(FormatError, match="max_elements=10"):
        BundleReader(prefix, ReaderLimits(max_elements=10)).read("w")


@pytest.mark.parametrize("header, message", [(header_proto(big_endian=True), "big-endian"),
                                             (header_proto(shards=0), "0 shards"), (None, "no bundle header")])
def test_bad_headers_are_refused(tmp_path: Path, header: bytes | None, message: str) -> None:
    prefix = write_bundle(tmp_path, {"w": np.zeros(2, "float32")}, header=header if header is not None else b"")
    if header is None:   # drop the header entry entirely
        (tmp_path / "variables.index").write_bytes(table([(b"w", entry_proto(1, (2,), size=8))]))
    with pytest.raises(FormatError, match=message):
        BundleReader(prefix, DEFAULT_LIMITS)


def test_compressed_blocks_and_missing_shards_are_refused(tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path / "snappy", {"w": np.zeros(2, "float32")}, compression=1)
    with pytest.raises(FormatError, match="Snappy"):
        BundleReader(prefix, DEFAULT_LIMITS)
    prefix = write_bundle(tmp_path / "noshard", {"w": np.zeros(2, "float32")})
    (tmp_path / "noshard" / "variables.data-00000-of-00001").unlink()
    with pytest.raises(FormatError, match="missing"):
        BundleReader(prefix, DEFAULT_LIMITS).read("w")


def test_block_entries_running_past_their_block_are_refused() -> None:
    good = block([(b"key", b"value")])
    overlong = b"\x00\x03\x7f" + good[3:]          # value length 127 in a 14-byte block
    with pytest.raises(FormatError, match="run past"):
        list(iter_table(table([(b"key", b"value")], data_block=overlong), "test"))
    many_restarts = good[:-4] + struct.pack("<I", 10**6)
    with pytest.raises(FormatError, match="restart points"):
        list(iter_table(table([(b"key", b"value")], data_block=many_restarts), "test"))


def test_random_damage_inside_valid_checksums_raises_only_format_errors(tmp_path: Path) -> None:
    """Blocks mutated at random but re-checksummed: the parser must answer FormatError or a clean result."""
    items = [(b"", header_proto())] + [(f"v{i}".encode(), entry_proto(1, (2, i), size=8 * i)) for i in range(1, 8)]
    good = block(sorted(items))
    rng = np.random.default_rng(5)
    for _ in range(200):
        damaged = bytearray(good)
        for position in rng.integers(0, len(damaged), rng.integers(1, 4)):
            damaged[position] = int(rng.integers(0, 256))
        path = tmp_path / "variables.index"
        path.write_bytes(table(items, data_block=bytes(damaged)))
        try:
            BundleReader(tmp_path / "variables", DEFAULT_LIMITS)
        except FormatError:
            pass


def test_hostile_declarations_allocate_nothing(tmp_path: Path) -> None:
    """A tensor declaring 16 GB (limits raised to allow it) in a tiny shard: refused before any allocation."""
    write_bundle(tmp_path, {}, entries={"huge": entry_proto(1, (4, 10**9), size=16 * 10**9)})
    (tmp_path / "variables.data-00000-of-00001").write_bytes(bytes(64))
    script = textwrap.dedent(f"""
        import resource
        from modelkeep.data.limits import ReaderLimits
        from modelkeep.errors import FormatError
        from modelkeep.importers.tf_bundle import BundleReader
        try:
            BundleReader({str(tmp_path / 'variables')!r}, ReaderLimits(max_elements=10**12)).read("huge")
        except FormatError as error:
            print("refused:", error)
        # VmHWM is this program's own high-water mark; ru_maxrss carries the parent's RSS across fork + exec
        print("peak_kib", next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "refused:" in result.stdout and "claim 16000000000 bytes" in result.stdout, result.stdout + result.stderr
    peak_mib = int(result.stdout.split("peak_kib")[1]) / 1024
    assert peak_mib < 400, peak_mib


def test_tensors_spread_over_shards_are_found(tmp_path: Path) -> None:
    first, second = np.arange(3, dtype="float32"), np.arange(4, dtype="int32") - 2
    entries = {"a": entry_proto(1, (3,), shard=0, size=12, crc=masked(crc32c(first.tobytes()))),
               "b": entry_proto(3, (4,), shard=1, offset=2, size=16, crc=masked(crc32c(second.tobytes())))}
    prefix = write_bundle(tmp_path, {}, entries=entries, header=header_proto(shards=2))
    (tmp_path / "variables.data-00000-of-00001").unlink()
    (tmp_path / "variables.data-00000-of-00002").write_bytes(first.tobytes())
    (tmp_path / "variables.data-00001-of-00002").write_bytes(b"xx" + second.tobytes())
    bundle = BundleReader(prefix, DEFAULT_LIMITS)
    np.testing.assert_array_equal(bundle.read("a"), first)
    np.testing.assert_array_equal(bundle.read("b"), second)


def test_entries_claiming_more_than_their_shard_holds_are_refused(tmp_path: Path) -> None:
    """Many entries over the same bytes would let a small folder make the reader allocate without end."""
    crc = masked(crc32c(bytes(400)))
    entries = {f"copy{i}": entry_proto(1, (100,), size=400, crc=crc) for i in range(50)}
    write_bundle(tmp_path, {"real": np.zeros(100, "float32")}, entries=entries)
    with pytest.raises(FormatError, match="claim 20400 bytes"):
        BundleReader(tmp_path / "variables", DEFAULT_LIMITS)
