"""``python -m ser predict`` end to end, in a subprocess like a user runs it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO
from tests.tiny_models import LABELS, save_tiny_wav2vec2


def run_cli(*args: str, runtime: str = "eager") -> subprocess.CompletedProcess:
    """Eager PyTorch unless asked: the runtime choice has its own tests (test_runtime.py)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": runtime}
    return subprocess.run([sys.executable, "-m", "ser", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"))


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    sf.write(folder / "sub" / "b.flac", 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    return folder


def test_predict_a_folder_prints_a_table_and_writes_csv(model_dir, clips, tmp_path):
    out = tmp_path / "out.csv"
    result = run_cli("predict", str(clips), "--model", str(model_dir), "--csv", str(out), runtime="auto")
    assert result.returncode == 0, result.stderr
    assert "| file | prediction |" in result.stdout
    assert "a.wav" in result.stdout and "b.flac" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert [row["prediction"] in LABELS for row in rows] == [True, True]


def test_predict_json_lines(model_dir, clips):
    result = run_cli("predict", str(clips / "a.wav"), "--model", str(model_dir), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip())
    assert set(record["probs"]) == set(LABELS)


def test_bad_files_are_reported_and_the_rest_still_predicted(model_dir, clips):
    (clips / "broken.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (clips / "silent.wav").write_bytes(b"")
    result = run_cli("predict", str(clips), "--model", str(model_dir))
    assert result.returncode == 1
    assert "a.wav" in result.stdout and "b.flac" in result.stdout
    assert "broken.wav" in result.stderr and "2 of 4 files could not be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_invalid_file_is_a_one_line_error(model_dir, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text, not audio")
    result = run_cli("predict", str(bad), "--model", str(model_dir))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {bad}:")
    assert "Traceback" not in result.stderr


def test_missing_model_exits_non_zero_with_a_message(clips, tmp_path):
    result = run_cli("predict", str(clips), "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_default_model_predicts_the_example_clips():
    result = run_cli("predict", str(REPO / "examples"), "--json", runtime="auto")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(list((REPO / "examples").rglob("*.flac")))
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in records)
