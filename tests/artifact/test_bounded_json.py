"""JSON in a model file or a JSON form is counted before it is parsed: bounded memory and time (item 14)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from modelkeep.artifact.format import KEY_MANIFEST, KEY_VERSION, MAX_JSON_ELEMENTS, count_json_elements, loads_bounded
from modelkeep.artifact.tensors import write_tensors
from modelkeep.errors import FormatError

EMPTY_OBJECTS = 6_700_000  # 20 MB of "{}," : 1 GB and 20 s to parse before the limit


def _measured(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; its outcome, seconds and peak memory (KB)."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    script = (
        "import json, resource, time\n"
        "start = time.perf_counter()\n"
        f"try:\n{body}\n    outcome = 'accepted'\n"
        "except Exception as exc:\n    outcome = f'{type(exc).__name__}: {exc}'\n"
        # VmHWM: this program's own high-water mark (ru_maxrss carries the parent's RSS across fork + exec)
        "peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'outcome': outcome, 'seconds': time.perf_counter() - start, 'peak_kb': peak}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_count_bounds_the_values_from_above():
    for text in ('[]', '{"a": [1, 2, {"b": "x,y"}]}', '[{}, {}, []]', '"plain"'):
        document = json.loads(text)
        values = len(json.dumps(document).split(","))  # crude, but the count must never be below it
        assert count_json_elements(text) + 1 >= values


def test_a_document_beyond_the_limit_is_refused_unparsed():
    with pytest.raises(FormatError, match=r"about 2,000,002 JSON elements; the limit is 1,000,000"):
        loads_bounded("[" + "{}," * 1_000_000 + "{}]", "the test document")
    assert loads_bounded("[" + "0," * (MAX_JSON_ELEMENTS - 2) + "0]", "a large array") is not None


def test_inspect_of_a_manifest_of_millions_of_empty_objects_is_bounded(tmp_path):
    path = tmp_path / "bomb.safetensors"
    manifest = ('{"format_version":1,"architecture":{"type":"spec","spec":{}},"card":{"x":['
                + ",".join(["{}"] * EMPTY_OBJECTS) + "]}}")
    write_tensors(path, {"w": torch.zeros(1)}, {KEY_VERSION: "1", KEY_MANIFEST: manifest})
    size_kb = path.stat().st_size // 1024
    baseline = _measured("from modelkeep.artifact.inspection import describe")["peak_kb"]
    report = _measured(f"""
        from modelkeep.artifact.inspection import describe
        describe({str(path)!r})
    """)
    assert report["outcome"].startswith("FormatError") and "JSON elements" in report["outcome"]
    assert report["peak_kb"] - baseline < 4 * size_kb, (report, baseline)  # the raw and decoded text, no parse
    assert report["seconds"] < 5, report


def test_convert_of_a_json_form_of_millions_of_empty_objects_is_bounded(tmp_path):
    source = tmp_path / "bomb.json"
    source.write_text('{"modelkeep_json": 1, "layers": [' + ",".join(["{}"] * EMPTY_OBJECTS) + "]}")
    size_kb = source.stat().st_size // 1024
    # import_json imports torch to write a model file: the baseline holds torch too, so only the bomb's cost is left
    baseline = _measured("import torch\nfrom modelkeep.artifact.json_form import import_json")["peak_kb"]
    report = _measured(f"""
        from modelkeep.artifact.json_form import import_json
        import_json({str(source)!r}, {str(tmp_path / "out.safetensors")!r})
    """)
    assert report["outcome"].startswith("FormatError") and "JSON elements" in report["outcome"]
    assert report["peak_kb"] - baseline < 4 * size_kb, (report, baseline)
    assert report["seconds"] < 5, report
