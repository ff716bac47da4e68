"""Hostile Keras files are refused without running anything and without allocating what they declare.

Lambda layers and custom objects (code Keras would import and run), giant
declared array shapes, zip bombs, weights without an architecture.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from modelkeep.errors import FormatError, TrustError
from modelkeep.importers.base import READERS, SNIFF_BYTES

os.environ.setdefault("KERAS_BACKEND", "torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[3]


def dense_config(**extra) -> dict:
    layer = {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "name": "dense",
             "config": {"name": "dense", "units": 2, "activation": "linear", "use_bias": True}}
    layer.update(extra)
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "evil", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
         "config": {"batch_shape": [None, 3], "dtype": "float32", "name": "input_layer"}}, layer]}}


def write_archive(path: Path, config: dict, *, weights: bytes | None = None, shape=(3, 2)) -> Path:
    """A .keras archive written by hand (what a hostile file is: no Keras involved)."""
    if weights is None:
        h5_path = path.with_suffix(".weights.h5")
        with h5py.File(h5_path, "w") as f:
            group = f.create_group("layers/dense/vars")
            group.attrs["name"] = "dense"
            group.create_dataset("0", data=np.zeros(shape, np.float32))
            group.create_dataset("1", data=np.zeros(shape[-1:], np.float32))
        weights = h5_path.read_bytes()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights)
    return path


def read(path: Path, format: str = "keras"):
    reader = READERS.get(format)
    assert reader.sniff(path, path.read_bytes()[:SNIFF_BYTES])
    return reader.read(path, None)


def test_hand_written_archive_is_read(tmp_path):
    """The helper writes valid files: what the other tests change is the only thing wrong."""
    imported = read(write_archive(tmp_path / "ok.keras", dense_config()))
    assert imported.spec.output_shape == (2,)


def test_lambda_layer_saved_by_keras_is_refused_and_never_runs(keras, tmp_path):
    marker = tmp_path / "ran"
    marked = str(marker)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(
        lambda x: (open(marked, "w").close(), x * 2)[1], name="doubler")])
    model.save(tmp_path / "lambda.keras")
    model.save(tmp_path / "lambda.h5")
    assert marker.exists()  # Keras ran it while building; the import below must not
    marker.unlink()
    for path, format in ((tmp_path / "lambda.keras", "keras"), (tmp_path / "lambda.h5", "keras-h5")):
        with pytest.raises(TrustError, match="'doubler'.*Lambda.*never runs code"):
            read(path, format)
    assert not marker.exists()


def test_custom_registered_layer_and_activation_are_refused(keras, tmp_path):

    @keras.saving.register_keras_serializable(package="evilpkg")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return x * 2

    @keras.saving.register_keras_serializable(package="evilpkg")
    def my_activation(x):
        return x

    keras.Sequential([keras.Input((3,)), Doubling(name="doubling")]).save(tmp_path / "layer.keras")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation=my_activation, name="fc")]).save(
        tmp_path / "act.keras")
    with pytest.raises(TrustError, match="'doubling'.*(evilpkg|module)"):
        read(tmp_path / "layer.keras")
    with pytest.raises(TrustError, match="'fc'"):
        read(tmp_path / "act.keras")


@pytest.mark.parametrize("entry, match", [
    ({"module": "os", "class_name": "system"}, "module 'os'"),
    ({"registered_name": "Custom>Evil"}, "Custom>Evil"),
    ({"class_name": "Lambda"}, "Lambda"),
])
def test_hand_written_code_entries_are_trust_errors(tmp_path, entry, match):
    config = dense_config()
    layer = config["config"]["layers"][1]
    if entry.get("class_name") == "Lambda":
        layer.update(entry)
        layer["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "print('pwned')"}}
    else:
        layer["config"]["kernel_initializer"] = {"config": {}, "class_name": "Init", **entry}
    with pytest.raises(TrustError, match=match):
        read(write_archive(tmp_path / "evil.keras", config))


def test_unknown_class_lists_supported_layers(tmp_path):
    config = dense_config()
    config["config"]["layers"][1]["class_name"] = "MyLayer"
    config["config"]["layers"][1].pop("module")
    with pytest.raises(FormatError, match="'MyLayer'.*supported: .*Dense"):
        read(write_archive(tmp_path / "unknown.keras", config))


def test_zip_bomb_member_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(dense_config()))
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            zeros = bytes(1 << 22)
            for _ in range(12):  # 48 MiB of zeros: ~50 KiB compressed, over the 100:1 (16 MiB allowance) cap
                member.write(zeros)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(FormatError, match="expand.*refused"):
        READERS.get("keras").read(path, None)   # (sniff declines it too: not a .keras layout)


def giant_h5(path: Path) -> Path:
    """A legacy Keras .h5 whose Dense kernel declares 10^6 x 10^6 floats (4 TB) and stores none."""
    config = dense_config()
    config["config"]["layers"][1]["config"]["units"] = 1_000_000
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "3.15.1"
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = [b"dense"]
        layer = weights.create_group("dense")
        layer.attrs["weight_names"] = [b"dense/kernel", b"dense/bias"]
        layer.create_dataset("dense/kernel", shape=(1_000_000, 1_000_000), dtype="f4", chunks=(1000, 1000))
        layer.create_dataset("dense/bias", shape=(1_000_000,), dtype="f4")
    return path


def test_giant_declared_shape_is_refused_unread_with_small_memory(tmp_path):
    path = giant_h5(tmp_path / "giant.h5")
    assert path.stat().st_size < 1 << 20
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from modelkeep.errors import FormatError
        from modelkeep.importers.base import READERS
        import modelkeep.importers.keras
        try:
            READERS.get("keras-h5").read(Path({str(path)!r}), None)
        except FormatError as exc:
            print("refused:", exc)
        # VmHWM is this program's own high-water mark; ru_maxrss carries the parent's RSS across fork + exec
        print("peak_mib", next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "refused:" in result.stdout and "1,000,000,000,000" in result.stdout, result.stdout + result.stderr
    peak = int(result.stdout.split("peak_mib")[1])
    assert peak < 700, f"peak memory {peak} MiB"


def test_giant_shape_in_archive_and_lying_expansion_are_refused(tmp_path):
    h5_path = tmp_path / "w.h5"
    with h5py.File(h5_path, "w") as f:
        group = f.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        group.create_dataset("0", shape=(3, 2), dtype="f4")
        group.create_dataset("1", shape=(2,), dtype="f4")
        f.create_dataset("layers/dense/cell/vars/0", shape=(40_000, 40_000), dtype="f4", chunks=(100, 100),
                         compression="gzip")  # 6.4 GB declared, nothing stored: expansion without bound
    with pytest.raises(FormatError, match="would expand|limit"):
        read(write_archive(tmp_path / "giant.keras", dense_config(), weights=h5_path.read_bytes()))


def test_weights_only_h5_says_an_architecture_is_needed(keras, tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(FormatError, match="weights only, no architecture"):
        read(tmp_path / "only.weights.h5", "keras-h5")


def test_other_zips_and_hdf5_files_are_not_claimed(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("config.json", "{}")
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    for path in (plain, data):
        head = path.read_bytes()[:SNIFF_BYTES]
        assert not READERS.get("keras").sniff(path, head) and not READERS.get("keras-h5").sniff(path, head)


def test_tensorflow_operation_outside_arithmetic_is_refused(tmp_path):
    """tf-keras's TFOpLambda names a TensorFlow function; only arithmetic with a number is imported."""
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"batch_input_shape": [None, 3], "name": "x"},
         "inbound_nodes": []},
        {"class_name": "TFOpLambda", "name": "tf.io.write_file",
         "config": {"name": "tf.io.write_file", "function": "io.write_file"},
         "inbound_nodes": [["x", 0, 0, {"y": 1.0, "name": None}]]}],
        "input_layers": [["x", 0, 0]], "output_layers": [["tf.io.write_file", 0, 0]]}}
    path = tmp_path / "op.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.create_group("model_weights").attrs["layer_names"] = [b"x", b"tf.io.write_file"]
        f["model_weights"].create_group("x").attrs["weight_names"] = []
        f["model_weights"].create_group("tf.io.write_file").attrs["weight_names"] = []
    with pytest.raises(FormatError, match="'io.write_file'"):
        read(path, "keras-h5")


def test_links_and_external_storage_to_other_files_are_refused(tmp_path):
    """HDF5 can point a weight at another file (an external link, raw external storage): never followed."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("kernel", data=np.ones((3, 2), np.float32))
    for variant in ("link", "external"):
        path = tmp_path / f"{variant}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["model_config"] = json.dumps(dense_config())
            weights = f.create_group("model_weights")
            weights.attrs["layer_names"] = [b"dense"]
            layer = weights.create_group("dense")
            layer.attrs["weight_names"] = [b"kernel", b"bias"]
            if variant == "link":
                layer["kernel"] = h5py.ExternalLink(str(other), "kernel")
            else:
                layer.create_dataset("kernel", shape=(3, 2), dtype="f4", external=[(str(secret), 0, 24)])
            layer.create_dataset("bias", data=np.zeros(2, np.float32))
        with pytest.raises(FormatError, match="another file|other files"):
            read(path, "keras-h5")


def test_damaged_files_are_format_errors(tmp_path):
    good = write_archive(tmp_path / "good.keras", dense_config())
    data = bytearray(good.read_bytes())
    start = data.index(b"\x89HDF")
    data[start + 40:start + 600] = bytes(b ^ 0xFF for b in data[start + 40:start + 600])  # the HDF5 superblock on
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        read(damaged)
    truncated = tmp_path / "truncated.h5"
    giant_h5(tmp_path / "full.h5")
    truncated.write_bytes((tmp_path / "full.h5").read_bytes()[:3000])
    with pytest.raises(FormatError):
        READERS.get("keras-h5").read(truncated, None)


def test_an_archive_declaring_too_many_members_is_refused_from_its_end_record(tmp_path):
    """The count in the end record is read before zipfile builds an object per member."""
    path = tmp_path / "many.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = (60_000).to_bytes(2, "little") * 2   # entries on this disk, entries in all
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="more than 10,000 members"):
        READERS.get("keras").read(path, None)   # (sniff declines it too: not a .keras layout)
