"""``modelkeep export FILE OUT_DIR --format triton``: a Triton / KServe model repository.

The config is parsed with the model-config protobuf that ships in ``tritonclient`` (Triton's own
``model_config.proto``), its fields are checked against the ONNX file read with ``onnx`` and against the model's
signature, and ``1/model.onnx`` is run in onnxruntime on a batch next to ``predict``. Four kinds of task, through
the API and the command line; a model that does not export cleanly leaves nothing behind.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2  # Triton's model_config.proto, as tritonclient[grpc] ships it

from export_tasks import TASKS, fresh_inputs, raw_outputs, run_onnx, train_and_save
from modelkeep import load, save
from modelkeep.cli.main import main
from modelkeep.errors import ConfigError, ExportError
from modelkeep.export.triton import export_triton


NAMES = ("cat", "dog", "snow owl é")  # a space and a non-ASCII letter, as class names may have
TRITON_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """The four tasks, the multi-class model with named classes and a file name that is not ASCII."""
    folder = tmp_path_factory.mktemp("triton-tasks")
    files = {task: train_and_save(task, folder / f"{task}.safetensors") for task in TASKS}
    files["multiclass"] = str(save(load(files["multiclass"]), folder / "modèle multiclass.safetensors",
                                   labels=list(NAMES)))
    return files


@pytest.fixture(scope="module")
def exports(task_files, tmp_path_factory):
    """Each task exported once into its own repository, with every batching and instance setting given."""
    folder = tmp_path_factory.mktemp("triton-exports")
    return {task: export_triton(task_files[task], folder / task, name=task, max_batch_size=16, max_queue_delay_us=250,
                                preferred_batch_sizes=[8, 4], instance_count=2) for task in TASKS}


def parse_config(folder) -> "model_config_pb2.ModelConfig":
    return text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def onnx_tensors(path) -> tuple[list, list]:
    """(name, elem_type, dims) of the graph's inputs and outputs, a symbolic dim as its name."""
    graph = onnx.load(str(path)).graph

    def described(value):
        kind = value.type.tensor_type
        return value.name, kind.elem_type, [d.dim_param or d.dim_value for d in kind.shape.dim]

    return [described(v) for v in graph.input], [described(v) for v in graph.output]


@pytest.mark.parametrize("task", list(TASKS))
def test_the_config_parses_and_describes_the_onnx_file_and_the_signature(task, task_files, exports):
    result = exports[task]
    model = load(task_files[task])
    classifier = model.labels is not None
    folder = result.folder
    labelled = task in ("binary_one_logit", "multiclass")  # a per-position output has no one class axis
    assert files_under(folder.parent) == sorted([f"{task}/1/model.onnx", f"{task}/config.pbtxt"]
                                                    + ([f"{task}/labels.txt"] if labelled else []))
    config = parse_config(folder)
    assert config.name == task and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == \
        [(2, "KIND_CPU")]
    assert config.parameters["modelkeep.content_hash"].string_value == model.content_hash
    assert config.parameters["modelkeep.file"].string_value == os.path.basename(task_files[task])

    # the signature: names, types, and dims without the batch axis (Triton adds it when max_batch_size > 0)
    signature = model.manifest.signature
    data_type = model_config_pb2.DataType.Name
    assert [(i.name, data_type(i.data_type), list(i.dims)) for i in config.input] == \
        [(e["name"], TRITON_TYPES[e["dtype"]], e["shape"][1:]) for e in signature["inputs"]]
    first = signature["outputs"][0]
    expected = [(first["name"], "TYPE_FP32", first["shape"][1:])]
    if classifier:
        width = 2 if task == "binary_one_logit" else first["shape"][-1]  # [1 - p, p] for one sigmoid logit
        expected.append(("probabilities", "TYPE_FP32", [*first["shape"][1:-1], width]))
    assert [(o.name, data_type(o.data_type), list(o.dims)) for o in config.output] == expected

    # the ONNX file: the same names, element types and dims behind a dynamic batch axis
    inputs, outputs = onnx_tensors(folder / "1" / "model.onnx")
    for declared, (name, elem_type, dims) in zip([*config.input, *config.output], [*inputs, *outputs]):
        assert declared.name == name
        assert data_type(declared.data_type) == {1: "TYPE_FP32", 7: "TYPE_INT64"}[elem_type]
        assert dims == ["batch", *declared.dims]
    assert len(config.input) == len(inputs) and len(config.output) == len(outputs)

    # the class names: a label file Triton's classification extension reads, on each output with one class axis
    on = [o.name for o in config.output if o.label_filename]
    if labelled:
        assert all(o.label_filename == "labels.txt" for o in config.output if o.name in on)
        assert "probabilities" in on and (first["name"] in on) == (task == "multiclass")
        lines = (folder / "labels.txt").read_text(encoding="utf-8").splitlines()
        assert tuple(lines) == model.labels
        assert (task != "multiclass") or tuple(lines) == NAMES
    else:
        assert on == [] and result.labels_path is None
    assert result.folder == folder and result.model_path == folder / "1" / "model.onnx"
    assert result.onnx.max_abs_diff is not None and result.onnx.max_abs_diff <= 1e-5


@pytest.mark.parametrize("task", list(TASKS))
def test_onnxruntime_on_the_repositorys_model_answers_as_predict(task, task_files, exports):
    result = exports[task]
    model = load(task_files[task])
    x = fresh_inputs(task, n=9, seed=5)
    outputs = run_onnx(result.model_path, x)
    prediction = model.predict(x)
    first = model.manifest.signature["outputs"][0]["name"]
    np.testing.assert_allclose(outputs[first], raw_outputs(model, x), atol=1e-5, rtol=0)
    if prediction.probabilities is None:
        assert list(outputs) == [first]
        np.testing.assert_allclose(outputs[first], prediction.values, atol=1e-5, rtol=0)
    else:
        np.testing.assert_allclose(outputs["probabilities"], prediction.probabilities, atol=1e-5, rtol=0)
        if task != "token_sequence":  # the label file's line i names column i, as predict names it
            lines = result.labels_path.read_text(encoding="utf-8").splitlines()
            assert tuple(lines) == prediction.class_names
            assert [lines[i] for i in outputs["probabilities"].argmax(axis=-1)] == list(prediction.labels)


def test_the_default_name_is_the_files_stem_and_odd_characters_are_escaped(task_files, tmp_path):
    result = export_triton(task_files["multiclass"], tmp_path / "repo")
    assert result.name == "mod_le_multiclass" and result.folder == tmp_path / "repo" / "mod_le_multiclass"
    config = parse_config(result.folder)  # the file's non-ASCII name travels as octal escapes in the text
    assert config.parameters["modelkeep.file"].string_value == "modèle multiclass.safetensors"
    assert config.parameters["modelkeep.task"].string_value == "classification"


def test_without_batching_the_dims_keep_the_batch_axis(task_files, tmp_path):
    result = export_triton(task_files["regression"], tmp_path / "repo", name="plain", max_batch_size=0,
                           kind="gpu", version=3)
    config = parse_config(result.folder)
    assert config.max_batch_size == 0 and config.WhichOneof("scheduling_choice") is None
    assert [list(t.dims) for t in (*config.input, *config.output)] == [[-1, 3], [-1, 1]]
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert files_under(tmp_path / "repo") == ["plain/3/model.onnx", "plain/config.pbtxt"]


def test_a_second_export_replaces_the_first_and_keeps_other_models_and_versions(task_files, tmp_path):
    repo = tmp_path / "repo"
    export_triton(task_files["binary_one_logit"], repo, name="other")
    export_triton(task_files["multiclass"], repo, name="m", version=1)
    export_triton(task_files["multiclass"], repo, name="m", version=2)
    assert (repo / "m" / "labels.txt").is_file()
    export_triton(task_files["regression"], repo, name="m", version=2)  # no classes: the stale label file goes
    assert files_under(repo) == ["m/1/model.onnx", "m/2/model.onnx", "m/config.pbtxt",
                                 "other/1/model.onnx", "other/config.pbtxt", "other/labels.txt"]
    config = parse_config(repo / "m")
    assert [list(i.dims) for i in config.input] == [[3]] and not any(o.label_filename for o in config.output)


def _unchanged(folder):
    return {path: (folder / path).read_bytes() for path in files_under(folder)}


def test_a_model_failing_the_parity_check_writes_nothing(task_files, tmp_path):
    tokens = fresh_inputs("token_sequence", n=64)
    with pytest.raises(ExportError, match="does not match the model: max abs diff"):
        export_triton(task_files["token_sequence"], tmp_path / "repo", tolerance=0, data=tokens)
    assert not (tmp_path / "repo").exists()
    export_triton(task_files["token_sequence"], tmp_path / "repo", name="lm")  # an earlier export stays as it was
    before = _unchanged(tmp_path / "repo")
    with pytest.raises(ExportError, match="nothing was written"):
        export_triton(task_files["token_sequence"], tmp_path / "repo", name="lm", tolerance=0, data=tokens)
    assert _unchanged(tmp_path / "repo") == before


def test_a_class_name_with_a_line_break_is_refused_before_anything_is_written(task_files, tmp_path):
    path = save(load(task_files["multiclass"]), tmp_path / "broken.safetensors", labels=["cat", "dog\nowl", "emu"])
    with pytest.raises(ExportError, match="line break"):
        export_triton(path, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("options, error, message", [
    ({"name": "../escape"}, ConfigError, "a Triton model name must be"),
    ({"name": ".hidden"}, ConfigError, "a Triton model name must be"),
    ({"max_batch_size": -1}, ConfigError, "max_batch_size must be a whole number from 0"),
    ({"max_batch_size": True}, ConfigError, "got True"),
    ({"max_batch_size": 4, "preferred_batch_sizes": [8]}, ConfigError, "at most max_batch_size (4)"),
    ({"max_batch_size": 0, "preferred_batch_sizes": [1]}, ConfigError, "preferred batch sizes need batching"),
    ({"instance_count": 0}, ConfigError, "instance_count must be"),
    ({"kind": "tpu"}, ConfigError, "kind must be one of"),
    ({"version": 0}, ConfigError, "version must be"),
    ({"max_queue_delay_us": 2**31}, ConfigError, "max_queue_delay_us must be"),
])
def test_settings_are_refused_with_what_was_received(options, error, message, task_files, tmp_path):
    with pytest.raises(error) as raised:
        export_triton(task_files["regression"], tmp_path / "repo", **options)
    assert message in str(raised.value)
    assert not (tmp_path / "repo").exists()


def test_a_folder_holding_other_files_or_a_file_in_the_way_is_refused(task_files, tmp_path):
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "model.py").write_text("# someone else's")
    with pytest.raises(ExportError, match=r"already holds files an export does not write \(model.py\)"):
        export_triton(task_files["regression"], tmp_path / "repo", name="m")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_triton(task_files["regression"], tmp_path / "file")
    assert files_under(tmp_path) == ["file", "repo/m/model.py"]


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("task", list(TASKS))
def test_cli_writes_the_repository(task, task_files, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["export", task_files[task], str(repo), "--format", "triton", "--max-batch-size", "8",
                 "--name", f"m-{task}"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {repo / f'm-{task}'} (Triton model 'm-{task}', version 1, max_batch_size 8" in printed
    assert "max abs diff" in printed
    config = parse_config(repo / f"m-{task}")
    assert config.name == f"m-{task}" and config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # the default, as modelkeep serve's
    x = fresh_inputs(task, n=4)
    outputs = run_onnx(repo / f"m-{task}" / "1" / "model.onnx", x)
    np.testing.assert_allclose(outputs[config.output[0].name], raw_outputs(load(task_files[task]), x), atol=1e-5)


def test_cli_options_and_json(task_files, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["export", task_files["multiclass"], str(repo), "--format", "triton", "--json", "--name", "animals",
                 "--preferred-batch-size", "2", "--preferred-batch-size", "4", "--max-queue-delay-us", "100",
                 "--instance-count", "3", "--instance-kind", "gpu", "--model-version", "7", "--opset", "18"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "triton" and printed["name"] == "animals" and printed["version"] == 7
    assert printed["model"] == str(repo / "animals" / "7" / "model.onnx") and printed["onnx"]["opset"] == 18
    assert [o["label_filename"] for o in printed["outputs"]] == ["labels.txt", "labels.txt"]
    assert printed["preferred_batch_sizes"] == [2, 4] and printed["kind"] == "KIND_GPU"
    assert printed["max_batch_size"] == 32 and printed["instance_count"] == 3
    config = parse_config(repo / "animals")
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_GPU)]


def test_cli_a_failed_check_is_one_line_status_2_and_nothing_written(task_files, tmp_path, capsys):
    tokens = fresh_inputs("token_sequence", n=64)
    np.savez(tmp_path / "tokens.npz", x=tokens, y=np.roll(tokens, -1, axis=1))
    assert main(["export", task_files["token_sequence"], str(tmp_path / "repo"), "--format", "triton",
                 "--tolerance", "0", "--data", str(tmp_path / "tokens.npz")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not match the model: max abs diff" in error
    assert sorted(os.listdir(tmp_path)) == ["tokens.npz"]


@pytest.mark.parametrize("arguments, message", [
    (["--format", "triton", "--static-batch"], "--static-batch apply to --format onnx only, not to triton"),
    (["--format", "triton", "--probabilities"], "--probabilities apply to --format onnx only, not to triton"),
    (["--format", "triton", "--no-check"], "--no-check apply to --format onnx only"),
    (["--format", "onnx", "--max-batch-size", "4"], "--max-batch-size apply to --format triton only, not to onnx"),
    (["--format", "hf", "--name", "x"], "--name apply to --format triton only, not to hf"),
    (["--format", "triton", "--name", "a/b"], "a Triton model name must be"),
    (["--format", "triton", "--max-batch-size", "2", "--preferred-batch-size", "4"], "at most max_batch_size (2)"),
    (["--format", "triton", "--max-batch-size", "-3"], "a whole number of at least 0"),
    (["--format", "triton", "--instance-kind", "tpu"], "invalid choice"),
])
def test_cli_refusals_are_one_line_status_2(arguments, message, task_files, tmp_path, capsys):
    try:
        status = main(["export", task_files["multiclass"], str(tmp_path / "repo"), *arguments])
    except SystemExit as exit_:  # argparse's own refusals
        status = exit_.code
    assert status == 2
    error = capsys.readouterr().err
    assert message in error and (error.count("\n") == 1 or "usage:" in error)
    assert os.listdir(tmp_path) == []
