"""The registry commands: thin wrappers over modelkeep.registry, one-line errors with status 2."""
from __future__ import annotations

import json

from modelkeep.cli.main import main

from registry_files import fine_tune


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().out


def test_push_ls_show_alias_pull_rm_gc(tmp_path, capsys):
    reg = ["--registry", tmp_path / "reg"]
    first = fine_tune(tmp_path / "a.safetensors", 1, metrics={"accuracy": 0.8})
    second = fine_tune(tmp_path / "b.safetensors", 2, metrics={"accuracy": 0.95})
    (tmp_path / "card.md").write_text("# Digits\nIntended use: tests.\n")
    status, out = run(capsys, "push", first, "digits", "--alias", "production", "--card", tmp_path / "card.md", *reg)
    assert status == 0 and "pushed digits:" in out and "@production" in out
    assert run(capsys, "push", second, "digits", *reg)[0] == 0
    status, out = run(capsys, "ls", "accuracy>0.9", "--json", *reg)
    [listed] = json.loads(out)
    assert listed["metrics"] == {"accuracy": 0.95}
    status, out = run(capsys, "show", "digits@production", *reg)
    assert "production" in out and "Intended use: tests." in out
    assert run(capsys, "alias", "digits", listed["id"][:8], "production", *reg)[0] == 0
    status, out = run(capsys, "pull", "digits@production", tmp_path / "out.safetensors", *reg)
    assert status == 0 and (tmp_path / "out.safetensors").read_bytes() == second.read_bytes()
    status, out = run(capsys, "ls", *reg)
    assert out.count("digits") == 2
    assert run(capsys, "rm", f"digits:{listed['id']}", *reg)[0] == 0
    status, out = run(capsys, "gc", "--grace-seconds", "0", *reg)
    assert status == 0 and "removed 4 unreferenced blob(s)" in out


def test_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    status = main(["pull", "nothing@production", str(tmp_path / "o"), "--registry", str(tmp_path / "reg")])
    err = capsys.readouterr().err
    assert status == 2 and "nothing@production" in err and len(err.strip().splitlines()) == 1
