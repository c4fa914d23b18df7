"""``.ci/run`` must fail when no test ran: a broken collection must not land green."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ci_run(folder: Path) -> subprocess.CompletedProcess[str]:
    """.ci/run on ``folder`` (tests only there), without its install step."""
    env = {**os.environ, "SER_CI_SKIP_INSTALL": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["bash", str(REPO / ".ci" / "run"), str(folder), "-p", "no:cacheprovider", "-q"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


@pytest.mark.parametrize("body, expected_rc", [
    ("", 1),  # collects nothing: pytest's exit 5
    ("import pytest\n\ndef test_a():\n    pytest.skip('nothing ran')\n", 1),  # every test skipped
    ("def test_a():\n    assert 1 + 1 == 2\n", 0),
    ("def test_a():\n    assert 1 + 1 == 3\n", 1),
], ids=["nothing collected", "all skipped", "one passed", "one failed"])
def test_ci_fails_when_no_test_ran(tmp_path: Path, body: str, expected_rc: int) -> None:
    (tmp_path / "test_case.py").write_text(body)
    result = ci_run(tmp_path)
    assert result.returncode == expected_rc, result.stdout + result.stderr
