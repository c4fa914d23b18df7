"""The Ray Data path on a local Ray started by the test: same probabilities as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ser.model import Predictor
from tests.conftest import REPO
from tests.tiny_models import LABELS, save_tiny_wav2vec2

ray = pytest.importorskip("ray", reason='Ray is optional: pip install "ray[data]" (requirements-dev.txt pins it)')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"), seed=13)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(3)
    for i in range(6):
        rate = (16000, 44100)[i % 2]
        t = np.arange(int((0.5 + 0.2 * i) * rate)) / rate
        sf.write(folder / f"c{i}.flac", 0.3 * np.sin(2 * np.pi * (180 + 30 * i) * t) + 0.01 * rng.standard_normal(len(t)), rate)
    (folder / "broken.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    return folder


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_dataset_gives_the_single_process_probabilities(local_ray, model_dir, clips, tmp_path):
    from ser.ray_engine import predict_dataset

    files = sorted(clips.iterdir())
    out = tmp_path / "parquet"
    predict_dataset(files, model=str(model_dir), runtime="eager", actors=2, batch_size=2).write_parquet(str(out))
    rows = {row["path"]: row for row in ray.data.read_parquet(str(out)).take_all()}
    assert set(rows) == {str(path) for path in files}
    assert rows[str(clips / "broken.wav")]["error"]
    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    for path in files:
        if path.name == "broken.wav":
            continue
        expected = predictor.predict(path)
        row = rows[str(path)]
        assert row["error"] is None
        assert {label: row[label] for label in LABELS} == pytest.approx(expected, abs=1e-6)
        assert row["label"] == max(expected, key=expected.get)


def test_cli_engine_ray_writes_parquet(model_dir, clips, tmp_path):
    """``python -m ser predict --engine ray`` starts its own local Ray when no address is given."""
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "eager",
           "RAY_num_cpus": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "ser", "predict", str(clips), "--model", str(model_dir), "--engine", "ray", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the broken file
    assert "1 of 7 files could not be read" in result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(str(out)).to_pylist()
    assert len(table) == 7
    assert {row["label"] for row in table if row["error"] is None} <= set(LABELS)


def test_ray_actors_detect_speech_and_denoise_as_the_local_engine(local_ray, model_dir, tmp_path):
    pytest.importorskip("silero_vad", reason="silero-vad is not installed")
    pytest.importorskip("noisereduce", reason="noisereduce is not installed")
    from ser.audio import load_audio
    from ser.ray_engine import predict_dataset
    from ser.speech import prepare

    speech = sorted((REPO / "examples" / "nemo").glob("*/*.flac"))[0]
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.1 * np.random.default_rng(5).standard_normal(32000)).astype(np.float32), 16000)
    out = tmp_path / "parquet"
    predict_dataset([speech, noise], model=str(model_dir), runtime="eager", actors=1, batch_size=2,
                    vad=True, denoise="spectral").write_parquet(str(out))
    rows = {row["path"]: row for row in ray.data.read_parquet(str(out)).take_all()}
    assert "No speech found" in rows[str(noise)]["error"]
    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    expected = predictor.predict(prepare(load_audio(speech), trim=True, denoise="spectral"))
    assert {label: rows[str(speech)][label] for label in LABELS} == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(predictor.predict(speech), abs=1e-6)  # the preprocessing changed the answer


def test_ray_engine_refuses_segments_rather_than_ignoring_them(tmp_path, capsys):
    import argparse

    from ser.ray_engine import run_cli

    args = argparse.Namespace(resume=False, segments=True, vad=False, denoise=None, address=None, model=None, runtime=None)
    assert run_cli(args, [tmp_path / "a.wav"], tmp_path / "out") == 2
    assert "--segments is for the local engine" in capsys.readouterr().err
