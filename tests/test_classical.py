"""The classical path: features, training, the skops model format, Predictor and the CLI.

Runs on a tiny synthetic corpus (one tone colour per emotion, four speakers with their own pitch),
so it needs no shared data and trains in seconds.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE, InvalidAudio
from ser.classical import FEATURE_SETS, ClassicalModel, extract_features, feature_dim, is_classical_dir

SPEAKERS = ("spk1", "spk2", "spk3", "spk4")
# Base pitch (Hz) and loudness per class: separable, as emotions are in prosody.
CLASSES = {"angry": (320.0, 0.5), "sad": (110.0, 0.05), "happy": (220.0, 0.25)}
CLIPS_PER_SPEAKER = 3


def tone(pitch: float, loudness: float, seed: int, seconds: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    vibrato = 1 + 0.02 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(pitch * vibrato) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (loudness * voiced / 2 + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<emotion>/<speaker>_<n>.wav``: the "folder" corpus layout of ser.corpora."""
    root = tmp_path_factory.mktemp("synthetic_corpus")
    seed = 0
    for label, (pitch, loudness) in CLASSES.items():
        (root / label).mkdir()
        for number, speaker in enumerate(SPEAKERS):
            for take in range(CLIPS_PER_SPEAKER):
                seed += 1
                wave = tone(pitch * (1 + 0.06 * number) * (1 + 0.02 * take), loudness, seed)
                sf.write(root / label / f"{speaker}_{take}.wav", wave, SAMPLE_RATE)
    return root


@pytest.fixture(scope="module")
def dataset(corpus_root: Path):
    from ser.corpora import load_corpus

    return load_corpus("folder", corpus_root)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


@pytest.mark.filterwarnings("ignore:Segment too short")  # openSMILE's NaNs for 0.05 s become zeros
@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_features_have_fixed_length_and_are_finite(feature_set: str) -> None:
    for seconds in (0.05, 0.6, 2.0):  # shorter than the MFCC delta window, and longer
        vector = extract_features(tone(200.0, 0.3, seed=1, seconds=seconds), feature_set)
        assert vector.shape == (feature_dim(feature_set),)
        assert vector.dtype == np.float32
        assert np.all(np.isfinite(vector))


def test_combined_features_are_the_parts_side_by_side() -> None:
    wave = tone(180.0, 0.2, seed=2)
    combined = extract_features(wave, "mfcc+egemaps")
    parts = np.concatenate([extract_features(wave, "mfcc"), extract_features(wave, "egemaps")])
    np.testing.assert_allclose(combined, parts, rtol=1e-6)
    assert feature_dim("egemaps") == 88


@pytest.mark.parametrize(
    "bad", [np.zeros(0, dtype=np.float32), np.zeros((2, 800), dtype=np.float32), np.full(800, np.nan, dtype=np.float32)]
)
def test_invalid_waveforms_raise_invalid_audio(bad: np.ndarray) -> None:
    with pytest.raises(InvalidAudio):
        extract_features(bad, "mfcc")


def test_unknown_feature_set_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature set"):
        extract_features(tone(200.0, 0.3, seed=1), "wav2vec")


@pytest.mark.parametrize("estimator", ["svm", "tree", "mlp"])
def test_each_estimator_trains_and_round_trips(dataset, cache_dir: Path, tmp_path: Path, estimator: str) -> None:
    from finetune.classical import train_model

    options = {"features": "egemaps", "estimator": estimator, "cache_dir": str(cache_dir)}
    model = train_model(dataset, np.arange(len(dataset)), options)
    clips = [tone(320.0, 0.5, seed=99), tone(110.0, 0.05, seed=98)]
    before = model.predict_proba(clips)
    assert before.shape == (2, len(model.labels))
    np.testing.assert_allclose(before.sum(axis=1), 1.0)

    model.save(tmp_path / "model")
    assert is_classical_dir(tmp_path / "model")
    loaded = ClassicalModel.load(tmp_path / "model")
    assert loaded.labels == model.labels == ["happy", "sad", "angry"]
    assert np.array_equal(loaded.predict_proba(clips), before)
    config = json.loads((tmp_path / "model" / "classical.json").read_text())
    assert config["feature_set"] == "egemaps"
    assert config["sklearn_version"]


def test_run_fold_predicts_unseen_speakers(dataset, cache_dir: Path) -> None:
    from finetune.classical import run_fold

    speakers = np.asarray(dataset["speaker"])
    train_idx, test_idx = np.flatnonzero(speakers != "spk4"), np.flatnonzero(speakers == "spk4")
    options = {"features": "mfcc+egemaps", "estimator": "svm", "cache_dir": str(cache_dir)}
    y_true, y_pred = run_fold(dataset, train_idx, test_idx, options)
    assert len(y_true) == len(y_pred) == len(test_idx)
    assert np.array_equal(y_true, np.asarray(dataset["label"])[test_idx])
    assert np.mean(y_true == y_pred) >= 0.75  # the classes are separable; chance is 1/3


def test_features_are_cached_per_clip(dataset, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import finetune.classical as classical

    first = classical.corpus_features(dataset, "mfcc", cache_dir)

    def no_extraction(*args, **kwargs):
        raise AssertionError("a cached clip was extracted again")

    monkeypatch.setattr(classical, "extract_features", no_extraction)
    np.testing.assert_array_equal(classical.corpus_features(dataset, "mfcc", cache_dir), first)


class NotAnEstimator:
    """A type skops does not know: a model file holding it must not load."""


def test_load_refuses_unknown_types(dataset, cache_dir: Path, tmp_path: Path) -> None:
    import skops.io

    from finetune.classical import train_model

    model = train_model(dataset, np.arange(len(dataset)), {"features": "mfcc", "estimator": "tree", "cache_dir": str(cache_dir)})
    model.save(tmp_path)
    model.pipeline.steps.insert(0, ("sneaky", NotAnEstimator()))
    skops.io.dump(model.pipeline, tmp_path / "pipeline.skops")
    with pytest.raises(ValueError, match="not safe to load"):
        ClassicalModel.load(tmp_path)


def test_predictor_serves_a_classical_model(dataset, cache_dir: Path, tmp_path: Path, corpus_root: Path) -> None:
    from finetune.classical import train_model
    from ser.model import Predictor

    model = train_model(dataset, np.arange(len(dataset)), {"features": "egemaps", "estimator": "mlp", "cache_dir": str(cache_dir)})
    model.save(tmp_path / "model")
    predictor = Predictor.from_pretrained(tmp_path / "model")
    probs = predictor.predict(corpus_root / "angry" / "spk1_0.wav")
    assert list(probs) == predictor.labels == model.labels
    assert sum(probs.values()) == pytest.approx(1.0)


def test_denoised_training_is_recorded_and_served_denoised(dataset, cache_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("noisereduce")
    from finetune.classical import corpus_features, train_model
    from ser.denoise import denoise
    from ser.model import Predictor

    options = {"features": "mfcc", "estimator": "mlp", "cache_dir": str(cache_dir), "denoise": "spectral"}
    model = train_model(dataset, np.arange(len(dataset)), options)
    model.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "classical.json").read_text())["denoise"] == "spectral"
    # the training features are those of the denoised clips, cached apart from the raw ones
    denoised = corpus_features(dataset, "mfcc", cache_dir, "spectral")
    first = denoise(tone(*CLASSES["angry"], seed=99), "spectral")
    assert not np.allclose(denoised, corpus_features(dataset, "mfcc", cache_dir))
    assert list(cache_dir.glob("mfcc-v*-denoise_spectral"))

    predictor = Predictor.from_pretrained(tmp_path / "model")
    assert predictor.denoise == "spectral"
    seen = []
    real = predictor.model.predict_proba
    monkeypatch.setattr(predictor.model, "predict_proba", lambda waves: seen.extend(waves) or real(waves))
    noisy = tone(*CLASSES["angry"], seed=99)
    predictor.predict(noisy)
    np.testing.assert_array_equal(seen[0], first)
    assert not np.allclose(seen[0], noisy, atol=1e-3)


def test_cli_writes_model_metrics_report_and_card(corpus_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    from finetune.__main__ import COMMANDS
    from finetune.classical import ClassicalCommand, ClassicalOptions
    from finetune.options import CONFIG_NAME, parse_command
    from ser.cli import dispatch

    out = tmp_path / "model"
    argv = ["classical", "--corpus", "folder", "--root", str(corpus_root), "--features", "egemaps",
            "--estimator", "svm", "--out", str(out), "--cache-dir", str(cache_dir), "--test-size", "0.25"]
    assert dispatch("python -m finetune", "test", COMMANDS, argv) == 0
    # the run recorded what it resolved, and a run repeated from that record resolves the same
    parse = partial(parse_command, (ClassicalCommand, ClassicalOptions), prog="classical")
    assert parse(["--config", str(out / CONFIG_NAME)]) == parse(argv[1:])
    for name in ("classical.json", "pipeline.skops", "metrics.json", "confusion_matrix.png", "README.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["uar"] <= 1.0
    assert len(metrics["test_speakers"]) == 1
    assert not set(metrics["test_speakers"]) & set(metrics["train_speakers"])
    assert ClassicalModel.load(out).metrics["uar"] == metrics["uar"]
    assert re.fullmatch(r"model-\d{8}T\d{6}Z", metrics["model_version"])  # finetune.card.version_id
    assert ClassicalModel.load(out).info["version"] == metrics["model_version"]


def test_every_run_writer_uses_one_version_format() -> None:
    """train, classical, probe, retrain and make_default all name versions with ``finetune.card.version_id``."""
    import inspect

    from finetune import card, classical, make_default, probe, retrain, train

    assert card.version_id("probe-emodb", 0) == "probe-emodb-19700101T000000Z"
    for module in (train, classical, probe, retrain, make_default):
        source = inspect.getsource(module)
        assert "version_id(" in source and "strftime" not in source, module.__name__
