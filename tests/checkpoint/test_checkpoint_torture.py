"""The torture, small: SIGKILL a checkpointing run at random moments, resume, compare bit for bit."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from torture_resume import torture  # noqa: E402


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the CI torture forks its lives")
def test_ten_random_kills_end_bit_identical(tmp_path):
    result = torture(10, seed=1, fork=True, work=tmp_path)
    assert result.failures == []
    assert result.kills == 10 and result.rounds_finished >= 1 and result.ok


@pytest.mark.slow
def test_two_hundred_kills_fresh_interpreters(tmp_path):
    result = torture(200, seed=2, work=tmp_path)
    assert result.ok, result.failures
