"""The model file: round trips, safetensors compatibility, hostile input, atomic replacement."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modelkeep.artifact import load, save
from modelkeep.artifact import tensors as tensor_io
from modelkeep.errors import FormatError, IntegrityError, ModelkeepError, ModelNotFoundError, SpecError


def test_save_then_load_gives_bit_identical_weights_and_predictions(trained, saved, digits_splits):
    model = load(saved)
    original = trained.model.state_dict()
    reloaded = model.module.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor.cpu(), reloaded[name]), name
    trained.model.eval()
    x = digits_splits.test.x
    with torch.no_grad():
        expected = torch.softmax(trained.model(torch.from_numpy(trained.preprocessing.transform(x))), 1).numpy()
    prediction = model.predict(x)
    np.testing.assert_array_equal(prediction.probabilities, expected)
    assert prediction.labels == [str(i) for i in expected.argmax(1)]


def test_file_is_plain_safetensors_with_the_models_tensors(trained, saved):
    with safe_open(str(saved), framework="pt") as handle:
        names = set(handle.keys())
        assert names == set(trained.model.state_dict())
        for name in names:
            assert torch.equal(handle.get_tensor(name), trained.model.state_dict()[name].cpu())
        metadata = handle.metadata()
    assert metadata["format"] == "pt"
    assert metadata["modelkeep.format_version"] == "1"


def test_manifest_carries_spec_history_labels_preprocessing_and_versions(trained, saved):
    model = load(saved)
    manifest = model.manifest
    assert manifest.labels == [str(i) for i in range(10)]
    assert manifest.architecture["spec"]["name"] == "digits_cnn"
    assert model.history["loss"] == trained.history["loss"]
    assert len(model.history) == 4
    assert manifest.preprocessing["type"] == "standardize"
    assert manifest.provenance["torch_version"] == torch.__version__
    assert manifest.provenance["modelkeep_version"]
    assert manifest.provenance["data_fingerprint"].startswith("xxh3-128:")
    assert manifest.metrics["test_accuracy"] == trained.test_metrics["accuracy"]
    assert manifest.signature["inputs"][0]["shape"] == [None, 1, 8, 8]


def test_predict_returns_class_names(saved, digits_splits):
    model = load(saved)
    prediction = model.predict(digits_splits.test.x[0])  # one sample, no batch axis
    assert prediction.labels[0] in model.labels
    assert prediction.probabilities.shape == (1, 10)
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    record = prediction.to_records()[0]
    assert record["label"] == prediction.labels[0] and len(record["top"]) == 3


def test_predict_rejects_wrong_input_shape(saved):
    with pytest.raises(ModelkeepError, match=r"expects \(batch, 1, 8, 8\)"):
        load(saved).predict(np.zeros((2, 64)))


def test_truncated_file_raises_format_error(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 5, 8, 100, len(data) // 2, len(data) - 1):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            load(broken)


def test_random_bytes_raise_format_error(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FormatError):
        load(path)


def test_renamed_pickle_is_refused_and_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(FormatError, match="pickle"):
        load(path)
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.safetensors")
    with pytest.raises(FormatError, match="zip archive"):
        load(tmp_path / "zip.safetensors")
    assert not (tmp_path / "PWNED").exists()


def test_flipped_byte_in_weights_fails_integrity(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF
    broken = tmp_path / "flipped.safetensors"
    broken.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its recorded hash"):
        load(broken)
    load(broken, verify=False)  # the caller may choose to skip verification


def test_plain_safetensors_file_is_not_a_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(3)}, str(path))
    with pytest.raises(FormatError, match="not a modelkeep model file"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load(tmp_path / "absent.safetensors")


def test_failed_save_leaves_previous_file_intact(trained, saved, monkeypatch):
    before = saved.read_bytes()
    calls = {"n": 0}
    real = tensor_io._as_bytes

    def failing(tensor):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("simulated disk failure in the middle of the write")
        return real(tensor)

    monkeypatch.setattr(tensor_io, "_as_bytes", failing)
    with pytest.raises(OSError, match="simulated"):
        save(trained, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary file left behind
    load(saved)


def test_module_without_spec_is_refused_with_advice(tmp_path):
    with pytest.raises(SpecError, match="no spec"):
        save(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")


def test_header_length_that_looks_like_pickle_magic_is_still_read(tmp_path):
    """A 640-byte header starts with bytes 80 02, the magic of a protocol-2 pickle."""
    from modelkeep.artifact.tensors import read_tensors, write_tensors

    for padding in range(0, 700, 8):
        path = write_tensors(tmp_path / "t.safetensors", {"w": torch.ones(1)}, {"pad": "x" * padding},
                             durable=False)
        if path.read_bytes()[:2] == b"\x80\x02":
            assert torch.equal(read_tensors(path)["w"], torch.ones(1))
            return
    pytest.fail("no header length with pickle-like low bytes was produced")
