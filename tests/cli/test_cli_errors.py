"""How ``modelkeep`` reports failures: one line on stderr, status 2, never a traceback (``--debug`` shows it).

Run in-process: each case swaps the handler of ``inspect`` for one that raises, so the mapping of
``cli/main.py`` is tested for every kind of exception, including the ones nobody planned for.
"""
from __future__ import annotations

import errno

import pytest

from modelkeep.cli import inspect as inspect_command
from modelkeep.cli.main import main
from modelkeep.errors import FormatError


def run_raising(monkeypatch, capsys, exc: BaseException, *options: str) -> tuple[int, str]:
    """``modelkeep [options] inspect ...`` as the console script runs it, its handler raising ``exc``."""
    def handler(args):
        raise exc

    monkeypatch.setattr(inspect_command, "handle", handler)
    status = main([*options, "inspect", "anything.safetensors"], report_unexpected=True)
    captured = capsys.readouterr()
    return status, captured.err


def single_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelkeep: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("exc, fragments", [
    (FormatError("bad\nfile"), ["bad file"]),
    (IndexError("list index out of range"), ["unexpected IndexError", "--debug"]),
    (MemoryError("Unable to allocate 7.28 TiB"), ["out of memory", "7.28 TiB"]),
    (RecursionError("maximum recursion depth exceeded"), ["nested too deeply"]),
    (ValueError("x"), ["unexpected ValueError"]),
])
def test_every_exception_is_one_line_and_status_2(monkeypatch, capsys, exc, fragments):
    status, err = run_raising(monkeypatch, capsys, exc)
    line = single_line(err)
    assert status == 2
    for fragment in fragments:
        assert fragment in line


def test_debug_still_raises(monkeypatch, capsys):
    with pytest.raises(IndexError):
        run_raising(monkeypatch, capsys, IndexError("boom"), "--debug")


def test_python_callers_get_unexpected_exceptions(monkeypatch):
    monkeypatch.setattr(inspect_command, "handle", lambda args: [][0])
    with pytest.raises(IndexError):
        main(["inspect", "anything.safetensors"])


def test_the_console_script_reports_unexpected_exceptions_in_one_line(tmp_path):
    import subprocess
    import sys

    script = ("import sys; from modelkeep.cli import inspect; from modelkeep.cli.main import run\n"
              "def handle(args): raise KeyError('boom')\n"
              "inspect.handle = handle; sys.argv = ['modelkeep', 'inspect', 'x']; run()")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unexpected KeyError" in single_line(result.stderr)


def test_error_messages_from_files_cannot_hold_escape_codes(monkeypatch, capsys):
    status, err = run_raising(monkeypatch, capsys, FormatError("label \x1b]0;owned\x07 and \x9b2J is bad"))
    assert status == 2 and "\x1b" not in err and "\x9b" not in err and "\x07" not in err
    assert "\\x1b]0;owned\\x07" in single_line(err)


@pytest.mark.parametrize("code, strerror, hint", [
    (errno.EACCES, "Permission denied", "permissions"),
    (errno.EISDIR, "Is a directory", "folder"),
    (errno.ENOSPC, "No space left on device", "disk is full"),
])
def test_system_errors_name_the_file_asked_for_not_the_temporary_one(monkeypatch, capsys, code, strerror, hint):
    exc = OSError(code, strerror, "/data/out/.model.safetensors.modelkeep-tmp-4242-ab12cd34")
    status, err = run_raising(monkeypatch, capsys, exc)
    line = single_line(err)
    assert status == 2
    assert "cannot write '/data/out/model.safetensors'" in line and strerror in line and hint in line
    assert "modelkeep-tmp" not in line


def test_system_errors_reading(monkeypatch, capsys):
    status, err = run_raising(monkeypatch, capsys, PermissionError(errno.EACCES, "Permission denied", "/x/m.st"))
    assert status == 2 and "cannot use '/x/m.st': Permission denied" in single_line(err)


def test_a_real_folder_given_as_a_destination_is_one_line(tmp_path, capsys):
    from modelkeep.artifact import save
    from modelkeep.nn import build

    source = save(build({"layers": [{"kind": "Input", "shape": [2]}, {"kind": "Dense", "units": 2}]}, seed=0),
                  tmp_path / "m.safetensors")
    folder = tmp_path / "model.json"
    folder.mkdir()
    status = main(["convert", str(source), str(folder)])
    line = single_line(capsys.readouterr().err)
    assert status == 2 and "model.json" in line and "modelkeep-tmp" not in line


def test_warnings_are_printed_with_escapes():
    import subprocess
    import sys

    script = ("import sys, warnings; from modelkeep.cli import inspect; from modelkeep.cli.main import run\n"
              "def handle(args): warnings.warn('label \\x1b]0;owned\\x07 looks odd')\n"
              "inspect.handle = handle; sys.argv = ['modelkeep', 'inspect', 'x']; run()")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\\x1b]0;owned\\x07 looks odd" in result.stderr


def test_a_full_disk_without_a_file_name_still_says_what_to_do(monkeypatch, capsys):
    status, err = run_raising(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device"))
    assert status == 2 and "No space left on device; the disk is full" in single_line(err)
