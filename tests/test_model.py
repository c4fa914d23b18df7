"""Predictor over tiny checkpoints: probabilities, batching, timelines, errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.audio import InvalidAudio
from ser.model import ModelLoadError, Predictor
from tests.tiny_models import LABELS, save_tiny_wav2vec2, save_tiny_whisper


def tone(seconds: float, freq: float = 220.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module", params=["wav2vec2", "hubert", "whisper"])
def predictor(request, tmp_path_factory) -> Predictor:
    out = tmp_path_factory.mktemp(request.param)
    path = save_tiny_whisper(out) if request.param == "whisper" else save_tiny_wav2vec2(out, kind=request.param)
    return Predictor.from_pretrained(path, runtime="eager")  # deterministic; runtimes: test_runtime.py


def test_predict_gives_a_distribution_over_the_labels(predictor):
    probs = predictor.predict(tone(1.0))
    assert list(probs) == LABELS
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_predict_accepts_paths_and_gradio_tuples(predictor, tmp_path):
    wave = tone(1.0)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, 16000, subtype="PCM_16")
    from_path = predictor.predict(path)
    int16 = (wave * 32767).astype(np.int16)
    from_tuple = predictor.predict((16000, int16))
    for label in LABELS:
        assert from_path[label] == pytest.approx(from_tuple[label], abs=1e-3)


def test_predict_batch_matches_single_predictions(predictor):
    clips = [tone(0.8, 200.0), tone(1.2, 440.0)]
    batch = predictor.predict_batch(clips)
    singles = [predictor.predict(clip) for clip in clips]
    assert batch == singles


def test_timeline_covers_a_long_recording(predictor):
    steps = predictor.timeline(tone(7.0), window_s=3.0, hop_s=1.5)
    assert steps[0]["start"] == 0.0
    assert steps[-1]["end"] == pytest.approx(7.0, abs=0.01)
    assert all(sum(step["probs"].values()) == pytest.approx(1.0, abs=1e-5) for step in steps)


def test_invalid_audio_raises_the_one_error_type(predictor):
    with pytest.raises(InvalidAudio):
        predictor.predict(np.zeros(16000, dtype=np.float32))


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model directory"):
        Predictor.from_pretrained(tmp_path)


def test_an_unreachable_hub_id_says_what_to_do():
    with pytest.raises(ModelLoadError, match="download it once while online"):
        Predictor.from_pretrained("no-such-user/no-such-emotion-model")


def test_clips_longer_than_one_pass_are_averaged_over_windows(tmp_path):
    """45 s = windows [0, 30) and [15, 45): the result is the mean of those windows' own predictions."""
    model_dir = save_tiny_wav2vec2(tmp_path, seed=2, init_std=0.5)  # peaked: the windows disagree
    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    sr, rng = 16000, np.random.default_rng(0)
    clip = np.concatenate([tone(15.0, 150.0), tone(15.0, 700.0), (0.2 * rng.standard_normal(15 * sr)).astype(np.float32)])
    first, last = predictor.predict(clip[: 30 * sr]), predictor.predict(clip[15 * sr :])
    assert max(abs(first[k] - last[k]) for k in LABELS) > 0.05  # so truncating to one window would show
    probs = predictor.predict(clip)
    for label in LABELS:
        assert probs[label] == pytest.approx((first[label] + last[label]) / 2, abs=1e-6)
