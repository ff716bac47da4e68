"""Every fenced Python block in README.md runs, in order, as one script; so do those of docs/architecture.md,
docs/interop.md, docs/transfer.md and docs/registry.md (whose examples read the repository's test files: ``tests/`` is linked into the working folder)."""
from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md", "docs/interop.md", "docs/transfer.md",
                                      "docs/registry.md"])
def test_python_blocks_run(document, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / document).read_text(encoding="utf-8"), flags=re.S)
    assert blocks, f"{document} should show the Python API"
    script = tmp_path / "blocks.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")   # the Hugging Face examples read local folders only
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__readme__")
