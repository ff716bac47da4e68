"""Every data reader is bounded: hostile CSV, NumPy and image files get a one-line DataError in bounded memory.

Peak memory is measured in a subprocess (its high-water RSS, which includes the interpreter and NumPy),
so one reader's worst case is seen alone. The inputs are those of issue 10's reviewers, made here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import data_bombs
from modelkeep.data import ReaderLimits, load_data, read_array, read_csv, read_image_folder, read_numpy
from modelkeep.errors import DataError, ModelkeepError, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[2]
PEAK_LIMIT_MB = 300  # interpreter + NumPy + Pillow are about 60 MB of it


def peak_memory(call: str, *setup: str) -> tuple[float, str]:
    """Run ``call`` in a fresh interpreter; its peak RSS in MB and the DataError it raised (or 'ok')."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        {'; '.join(setup) or 'pass'}
        from modelkeep.data import *
        from modelkeep.errors import DataError
        try:
            {call}
            outcome = "ok"
        except DataError as exc:
            outcome = "DataError: " + str(exc)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        try:  # VmHWM is this program's own high-water mark; ru_maxrss may include the parent's RSS at fork
            with open("/proc/self/status") as status:
                peak = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            pass
        print(json.dumps([peak, outcome]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    peak, outcome = json.loads(done.stdout.strip().splitlines()[-1])
    return peak, outcome


# ---------------------------------------------------------------------------------------------- CSV
def test_gzip_csv_bomb_is_refused_in_bounded_memory(tmp_path):
    bomb = data_bombs.gzip_csv_bomb(tmp_path / "bomb.csv.gz")
    assert bomb.stat().st_size < 100_000  # ~65 KB expanding to 67 MB of "0,0,...": 4.5-5.2 GB before the fix
    peak, outcome = peak_memory(f"load_data({str(bomb)!r})")
    assert outcome.startswith("DataError") and "possible decompression bomb" in outcome, outcome
    assert "\n" not in outcome and "ReaderLimits(" in outcome
    assert peak < PEAK_LIMIT_MB, f"peak {peak:.0f} MB"


def test_gzip_csv_with_a_lying_trailer_is_stopped_while_streaming(tmp_path):
    bomb = data_bombs.gzip_csv_bomb(tmp_path / "liar.csv.gz")
    data = bytearray(bomb.read_bytes())
    data[-4:] = (100).to_bytes(4, "little")  # the trailer now claims 100 bytes
    bomb.write_bytes(bytes(data))
    peak, outcome = peak_memory(
        f"read_csv({str(bomb)!r}, limits=ReaderLimits(compression_allowance=2 << 20, max_compression_ratio=1))")
    assert "decompresses to more than 2,097,152 bytes" in outcome, outcome
    assert peak < PEAK_LIMIT_MB, f"peak {peak:.0f} MB"


def test_gzip_csv_within_the_limits_still_reads(tmp_path):
    import gzip

    path = tmp_path / "small.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a,b,label\n" + "".join(f"{i},{i * 2},{'cat' if i % 2 else 'dog'}\n" for i in range(50)))
    dataset = read_csv(path)
    assert dataset.x.shape == (50, 2) and dataset.labels == ("cat", "dog") and dataset.y[:2].tolist() == [1, 0]
    assert dataset.name == "small"


def test_csv_field_of_200000_characters_is_a_clear_error(tmp_path):
    path = data_bombs.long_field_csv(tmp_path / "long.csv")
    with pytest.raises(DataError, match=r"line 2 has a field longer than 100,000 characters"):
        load_data(str(path))
    # the limit is the reader's own, and the csv module's process-wide limit is put back
    import csv

    before = csv.field_size_limit()
    assert read_csv(path, limits=ReaderLimits(max_csv_field_chars=300_000), target="y").x.shape == (2, 2)
    assert csv.field_size_limit() == before


def test_csv_rows_columns_and_lines_are_capped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("".join(f"{i},{i},{i % 2}\n" for i in range(100)))
    with pytest.raises(DataError, match="more than the limit of 150"):
        read_csv(path, limits=ReaderLimits(max_elements=150))
    with pytest.raises(DataError, match="columns, more than the limit of 2"):
        read_csv(path, limits=ReaderLimits(max_csv_columns=2))
    with pytest.raises(DataError, match="line 1 is longer than 4 characters"):
        read_csv(path, limits=ReaderLimits(max_csv_line_chars=4))


def test_csv_that_is_not_text_or_not_a_file(tmp_path):
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataError):
        load_data(str(binary))
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        read_csv(tmp_path)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00not really gzip" + (40).to_bytes(4, "little"))
    with pytest.raises(DataError, match="cannot read"):
        load_data(str(broken))


def test_csv_mixed_number_and_text_targets_keep_their_raw_names(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("1,1\n2,1.0\n3,cat\n4,2\n")
    dataset = read_csv(path)
    assert dataset.labels == ("1", "1.0", "2", "cat") and dataset.y.tolist() == [0, 1, 3, 2]
    numbers = tmp_path / "n.csv"
    numbers.write_text("1,1\n2,1.0\n3,2\n4,2\n5,1\n6,2\n7,1\n8,2\n9,1\n10,2\n")
    assert read_csv(numbers).labels == ("1", "2")


# -------------------------------------------------------------------------------------------- NumPy
def test_npy_declaring_a_trillion_rows_is_refused_before_allocating(tmp_path):
    forged = data_bombs.forged_npy(tmp_path / "x.npy")
    with pytest.raises(DataError, match=r"holds 4,000,000,000,000 values, more than the limit"):
        read_array(forged)
    with pytest.raises(DataError, match="more than the limit"):
        load_data(str(forged))
    within_count = data_bombs.forged_npy(tmp_path / "y.npy", shape=(1000, 1000))
    with pytest.raises(DataError, match="truncated or forged"):
        read_array(within_count)
    peak, outcome = peak_memory(f"read_array({str(forged)!r})")
    assert outcome.startswith("DataError") and peak < PEAK_LIMIT_MB


def test_npy_of_strings_says_numeric_arrays_are_needed(tmp_path):
    path = data_bombs.text_npy(tmp_path / "s.npy")
    with pytest.raises(DataError, match="holds text, but numeric arrays are needed"):
        read_array(path)
    with pytest.raises(DataError, match="numeric arrays are needed"):
        load_data(str(path), targets=str(path))
    np.save(tmp_path / "c.npy", np.ones(3, dtype=np.complex64))
    with pytest.raises(DataError, match="numeric arrays are needed"):
        read_array(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="without pickle"):
        read_array(tmp_path / "o.npy")


def test_read_array_keeps_dtype_order_and_values(tmp_path):
    tokens = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.save(tmp_path / "t.npy", tokens)
    assert read_array(tmp_path / "t.npy").dtype == np.int64
    fortran = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 3)).astype(">f8"))
    np.save(tmp_path / "f.npy", fortran)
    assert np.array_equal(read_array(tmp_path / "f.npy"), fortran)
    np.save(tmp_path / "e.npy", np.zeros((0, 3), dtype=np.float32))
    assert read_array(tmp_path / "e.npy").shape == (0, 3)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="not a NumPy .npy array"):
        read_array(tmp_path / "junk.npy")
    with pytest.raises(ModelNotFoundError):
        read_array(tmp_path / "missing.npy")


def test_npz_bomb_is_refused_before_decompressing(tmp_path):
    bomb = data_bombs.npz_bomb(tmp_path / "bomb.npz", 200 * data_bombs.MiB)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(DataError, match="possible decompression bomb"):
        load_data(str(bomb))
    peak, outcome = peak_memory(f"load_data({str(bomb)!r})")
    assert "decompression bomb" in outcome and peak < PEAK_LIMIT_MB, (peak, outcome)


def test_npz_member_limits_and_forgeries(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3))
    np.savez_compressed(tmp_path / "ok.npz", x=x, y=np.array(["b", "a"] * 20))
    dataset = load_data(str(tmp_path / "ok.npz"))
    assert dataset.labels == ("a", "b") and np.allclose(dataset.x, x.astype(np.float32))
    with pytest.raises(DataError, match="possible decompression bomb"):
        read_numpy(tmp_path / "ok.npz", limits=ReaderLimits(max_decompressed_bytes=100))
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:  # the member's header claims more than it holds
        archive.writestr("x.npy", data_bombs.npy_header("<f8", (1000, 3)) + bytes(80))
        archive.writestr("y.npy", data_bombs.npy_header("<i8", (1000,)) + bytes(80))
    with pytest.raises(DataError, match="truncated or forged"):
        load_data(str(tmp_path / "lie.npz"))
    with zipfile.ZipFile(tmp_path / "bz.npz", "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("x.npy", data_bombs.npy_header("<f8", (2,)) + bytes(16))
        archive.writestr("y.npy", data_bombs.npy_header("<i8", (2,)) + bytes(16))
    with pytest.raises(DataError, match="only stored or deflated"):
        load_data(str(tmp_path / "bz.npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(str(tmp_path / "junk.npz"))


def test_idx_header_is_checked_before_reading(tmp_path):
    from modelkeep.data.datasets import _read_idx

    path = tmp_path / "forged-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + (100_000).to_bytes(4, "big") * 3 + bytes(10))
    with pytest.raises(DataError, match="more than the limit"):
        _read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 2]) + (3).to_bytes(4, "big") * 2 + bytes(9))
    assert _read_idx(path).shape == (3, 3)


# ------------------------------------------------------------------------------------------- images
def test_six_huge_pngs_are_refused_before_decoding(tmp_path):
    # 12000 x 12000 pixels each, ~150 KB on disk: 20.5 GB and a traceback before the fix
    folder = data_bombs.png_folder(tmp_path / "images", 12000, 12000)
    peak, outcome = peak_memory(
        f"images = load_data({str(folder)!r}, input_shape=(1, 28, 28))\n"
        "            [images[i] for i in range(len(images))]")
    assert "12000x12000 = 144,000,000 pixels, more than the limit of 64,000,000" in outcome, outcome
    assert peak < PEAK_LIMIT_MB, f"peak {peak:.0f} MB"
    with pytest.raises(DataError, match="more than the limit"):
        load_data(str(folder))  # no input shape: the first image's size is checked up front


def test_png_over_pillows_limit_is_a_clear_error(tmp_path):
    folder = data_bombs.png_folder(tmp_path / "images", 8, 8, per_class=1)
    data_bombs.black_png(folder / "a" / "huge.png", 14000, 14000)  # above Pillow's own 2 x MAX_IMAGE_PIXELS
    images = read_image_folder(folder, image_size=8, limits=ReaderLimits(max_image_pixels=10**9))
    index = images.files.index(str(folder / "a" / "huge.png"))
    with pytest.raises(DataError, match="more pixels than Pillow allows .*exceeds limit"):
        images[index]


def test_images_are_brought_to_the_model_input_shape(tmp_path):
    from PIL import Image

    for label, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.new("RGB", (300, 200), colour).save(tmp_path / label / f"{i}.jpg")
    grey = load_data(str(tmp_path), input_shape=(1, 28, 28))
    image, target = grey[0]
    assert grey.input_shape == (1, 28, 28) and image.shape == (1, 28, 28) and image.dtype == np.float32
    colour = load_data(str(tmp_path), input_shape=[3, 16, 20])
    assert colour[3][0].shape == (3, 16, 20) and colour[3][0][2].mean() > 150  # blue stays blue
    with pytest.raises(DataError, match="expects 2 channels"):
        load_data(str(tmp_path), input_shape=(2, 28, 28))
    with pytest.raises(DataError, match=r"images are read as \(channels, height, width\)"):
        load_data(str(tmp_path), input_shape=(784,))
    with pytest.raises(DataError, match="is a file, not an image folder"):
        read_image_folder(tmp_path / "cat" / "0.jpg")


def test_class_folders_match_model_labels_by_name(tmp_path):
    folder = data_bombs.png_folder(tmp_path / "images", 8, 8, per_class=2)
    (folder / "a").rename(folder / "benign")
    (folder / "b").rename(folder / "malignant")
    plain = load_data(str(folder))
    assert plain.labels == ("benign", "malignant") and plain.y.tolist() == [0, 0, 1, 1]
    matched = load_data(str(folder), labels=["malignant", "benign"])
    assert matched.labels == ("malignant", "benign") and matched.y.tolist() == [1, 1, 0, 0]
    with pytest.raises(DataError, match=r"classes \['benign'\] are not among the labels"):
        load_data(str(folder), labels=["malignant", "healthy"])


def test_reader_limits_are_validated():
    with pytest.raises(DataError, match="max_elements must be a positive integer"):
        ReaderLimits(max_elements=0)
    with pytest.raises(DataError, match="must be a modelkeep.data.ReaderLimits or a mapping"):
        read_array("x.npy", limits=[5])
    with pytest.raises(DataError, match="unknown reader limits"):
        read_array("x.npy", limits={"max_elemnts": 5})
    from modelkeep.data.limits import resolve_limits

    assert resolve_limits({"max_elements": 5}) == ReaderLimits(max_elements=5)
    assert issubclass(DataError, ModelkeepError)
