"""``load(path, mmap=False)``: a model in private memory, untouched by what later happens to its file (item 11)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from modelkeep.artifact import load, read_tensors, save
from modelkeep.errors import IntegrityError


@pytest.fixture()
def two_files(trained, tmp_path):
    """The trained model, and a file of the same architecture with other weights."""
    first = save(trained, tmp_path / "model.safetensors")
    other = load(first, mmap=False)
    with torch.no_grad():
        for parameter in other.module.parameters():
            parameter.mul_(-1.5)
    second = save(other, tmp_path / "other.safetensors")  # every section carried: the same header size
    return first, second


def _overwrite_in_place(target, source):
    with open(source, "rb") as src, open(target, "r+b") as dst:  # as `cp other model` does: same inode
        dst.write(src.read())


def test_private_model_ignores_an_overwrite_in_place_while_a_mapped_one_follows_it(two_files, digits_splits):
    path, other = two_files
    x = digits_splits.test.x[:16]
    private, mapped = load(path, mmap=False), load(path)
    before = private.predict(x).probabilities
    np.testing.assert_array_equal(mapped.predict(x).probabilities, before)
    assert os.path.getsize(path) == os.path.getsize(other)
    _overwrite_in_place(path, other)
    np.testing.assert_array_equal(private.predict(x).probabilities, before)
    assert not np.array_equal(mapped.predict(x).probabilities, before)  # the documented cost of mmap=True


def test_private_model_survives_truncation_of_its_file(two_files, digits_splits):
    path, _ = two_files
    x = digits_splits.test.x[:4]
    private = load(path, mmap=False)
    before = private.predict(x).probabilities
    os.truncate(path, 16)
    np.testing.assert_array_equal(private.predict(x).probabilities, before)


def test_mapped_model_dies_on_truncation_so_the_docs_warn_about_it(two_files, tmp_path):
    path, _ = two_files
    script = textwrap.dedent(f"""
        import os, numpy as np
        from modelkeep.artifact import load
        model = load({str(path)!r})
        os.truncate({str(path)!r}, 16)
        model.predict(np.zeros((1, 1, 8, 8), dtype=np.float32))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode != 0  # SIGBUS (-7): what mmap=False avoids


def test_private_read_checks_hashes_of_the_bytes_it_keeps(two_files, tmp_path):
    path, _ = two_files
    tensors = read_tensors(path, mmap=False)
    assert all(torch.equal(tensors[k], v) for k, v in read_tensors(path).items())
    broken = shutil.copy(path, tmp_path / "broken.safetensors")
    with open(broken, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(IntegrityError):
        load(broken, mmap=False)
