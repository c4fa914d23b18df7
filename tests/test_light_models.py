"""The light CNN/BiLSTM and their feature extractor: shapes, padding, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
)

from ser.light_models import (
    LightBiLSTMForAudioClassification,
    LightCNNForAudioClassification,
    LightFeatureExtractor,
    _pool_frames,
    create_light_model,
)

LABELS = ["neutral", "happy", "sad"]


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """A gliding harmonic tone with noise: enough spectral structure for features to differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 120 + 60 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wave = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.01 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


@pytest.mark.parametrize("feature_type, size", [("logmel", 64), ("mfcc", 40)])
def test_features_have_100_frames_per_second_and_a_mask(feature_type: str, size: int) -> None:
    extractor = LightFeatureExtractor(feature_type=feature_type)
    batch = extractor([_speechlike(1.0, 0), _speechlike(0.5, 1)], sampling_rate=16000, return_tensors="np")
    features, mask = batch["input_features"], batch["attention_mask"]
    assert features.shape == (2, 101, size)
    assert features.dtype == np.float32
    assert mask[0].sum() == 101 and mask[1].sum() == 51
    assert np.all(features[1, 51:] == 0.0)  # padding is zeros
    assert np.isfinite(features).all()


def test_log_mel_features_ignore_recording_gain() -> None:
    extractor = LightFeatureExtractor(feature_type="logmel")
    wave = _speechlike(1.0, 0)
    quiet, loud = extractor.features(0.1 * wave), extractor.features(wave)
    difference = np.abs(quiet - loud)
    assert np.percentile(difference, 99) < 0.05  # only bins near the log floor (1e-6) move
    assert np.abs(loud).max() > 1.0  # the spectral shape is still there


def test_extractor_refuses_other_sampling_rates() -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        LightFeatureExtractor()(_speechlike(0.5, 0), sampling_rate=8000)


def test_extractor_handles_clips_shorter_than_one_window() -> None:
    features = LightFeatureExtractor().features(np.full(100, 0.1, dtype=np.float32))
    assert features.shape[1] == 64 and np.isfinite(features).all()


@pytest.mark.parametrize(
    "kind, model_class",
    [("light-cnn", LightCNNForAudioClassification), ("light-bilstm", LightBiLSTMForAudioClassification)],
)
def test_light_model_round_trips_through_the_auto_classes(kind: str, model_class: type, tmp_path) -> None:
    torch.manual_seed(0)
    model, extractor = create_light_model(kind, LABELS)
    model.eval()
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)

    assert AutoConfig.from_pretrained(tmp_path).id2label == dict(enumerate(LABELS))
    loaded_extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded_extractor, LightFeatureExtractor)
    assert isinstance(loaded, model_class)
    assert loaded_extractor.feature_type == extractor.feature_type

    wave = _speechlike(1.2, 3)
    with torch.no_grad():
        original = model(**extractor(wave, sampling_rate=16000, return_tensors="pt")).logits
        reloaded = loaded(**loaded_extractor(wave, sampling_rate=16000, return_tensors="pt")).logits
    torch.testing.assert_close(reloaded, original, atol=1e-6, rtol=1e-6)  # identical weights; LSTM kernels differ in the last bit


@pytest.mark.parametrize("kind, config", [("light-cnn", {}), ("light-bilstm", {}), ("light-bilstm", {"frame_stride": 4})])
def test_padding_in_a_batch_does_not_change_a_clips_logits(kind: str, config: dict) -> None:
    torch.manual_seed(0)
    model, extractor = create_light_model(kind, LABELS, **config)
    model.eval()
    waves = [_speechlike(seconds, seed) for seed, seconds in enumerate((0.5, 0.77, 1.0, 0.19))]
    with torch.no_grad():
        batched = model(**extractor(waves, sampling_rate=16000, return_tensors="pt")).logits
        single = torch.cat([model(**extractor(w, sampling_rate=16000, return_tensors="pt")).logits for w in waves])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_light_model_returns_a_loss_with_labels_and_gradients_reach_the_first_layer() -> None:
    torch.manual_seed(0)
    model, extractor = create_light_model("light-cnn", LABELS, channels=(4, 8))
    inputs = extractor([_speechlike(0.5, 0), _speechlike(0.6, 1)], sampling_rate=16000, return_tensors="pt")
    out = model(**inputs, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    out.loss.backward()
    assert model.blocks[0]["conv"].weight.grad.abs().sum() > 0


def test_predictor_loads_a_light_checkpoint(tmp_path) -> None:
    from ser.model import Predictor

    torch.manual_seed(0)
    model, extractor = create_light_model("light-bilstm", LABELS, hidden_size=8, num_layers=1)
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    predictor = Predictor.from_pretrained(tmp_path, runtime="eager")
    probs = predictor.predict(_speechlike(1.0, 0))
    assert list(probs) == LABELS
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)


def test_unknown_light_model_is_refused() -> None:
    with pytest.raises(ValueError, match="light-cnn"):
        create_light_model("light-transformer", LABELS)


def test_frame_stride_averages_real_frames_only() -> None:
    features = torch.arange(1.0, 8.0).reshape(1, 7, 1).repeat(2, 1, 1)
    mask = torch.tensor([[1.0] * 7, [1.0] * 5 + [0.0] * 2])
    pooled, pooled_mask = _pool_frames(features, mask, 3)
    assert pooled[0, :, 0].tolist() == [2.0, 5.0, 7.0]
    assert pooled[1, :, 0].tolist() == [2.0, 4.5, 0.0]  # frames 6-7 of the second clip are padding
    assert pooled_mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]

