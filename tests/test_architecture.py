"""The architecture is checked, not only written down: layers, cycles, inference imports, sizes, the public API.

The dependency order lives in pyproject.toml (``[tool.importlinter]``) and ``docs/architecture.md``.
Function-level (lazy) imports count everywhere here: grimp reads every import statement of a module.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelkeep

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelkeep"

# A module or function over the limits must say why here; the reason is the documentation.
MODULE_LINE_LIMIT = 400
FUNCTION_LINE_LIMIT = 80
OVER_LIMIT_WITH_REASON: dict[str, str] = {}


def test_import_linter_contracts_are_kept():
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                             "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):  # iterative Tarjan: the graph is small but recursion depth is not ours to spend
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_module_import_graph_is_acyclic():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("modelkeep", exclude_type_checking_imports=True)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    cycles = [component for component in _strongly_connected(edges) if len(component) > 1]
    details = []
    for component in cycles:
        members = set(component)
        details.append(" ; ".join(f"{a} -> {b}" for a in component for b in sorted(edges[a] & members)))
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(details)


def test_load_and_predict_import_neither_the_training_loop_nor_the_checkpoint_manager():
    fixture = ROOT / "tests" / "fixtures" / "format_v1" / "digits_mlp.safetensors"
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import modelkeep
        model = modelkeep.load({str(fixture)!r})
        prediction = model.predict(np.zeros((2, 64), dtype=np.float32))
        assert len(prediction.labels) == 2
        loaded = sorted(m for m in sys.modules if m.startswith(("modelkeep.train", "modelkeep.checkpoint")))
        print(",".join(loaded))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"inference imported: {result.stdout.strip()}"


def test_every_exported_name_resolves_and_is_listed_once():
    exported = list(modelkeep.__all__)
    assert len(exported) == len(set(exported))
    for name in exported:
        assert getattr(modelkeep, name) is not None, name
    assert sorted(dir(modelkeep)) == sorted(exported)


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_modules_and_functions_stay_small():
    too_big = []
    for path in _python_files():
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        lines = text.count("\n")
        if lines > MODULE_LINE_LIMIT and relative not in OVER_LIMIT_WITH_REASON:
            too_big.append(f"{relative}: {lines} lines (limit {MODULE_LINE_LIMIT})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                where = f"{relative}:{node.name}"
                if length > FUNCTION_LINE_LIMIT and where not in OVER_LIMIT_WITH_REASON:
                    too_big.append(f"{where}: {length} lines (limit {FUNCTION_LINE_LIMIT})")
    assert not too_big, "\n".join(too_big)
