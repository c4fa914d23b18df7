"""Fine-tuning with Trainer and cross-validation, on a tiny synthetic corpus and tiny models.

The corpus: harmonic tones an octave apart per class, 4 "speakers" (slightly shifted pitch), so a
model that learns anything at all separates the classes, and the run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)
from transformers import logging as hf_logging

from finetune import train as ft
from tests.tiny_models import save_tiny_whisper
from finetune.data import SpeakerSplit, train_val_test_split
from finetune.options import CONFIG_NAME, parse_command, save_config
from ser.cli import dispatch
from ser.corpora import load_corpus

CLASSES = ("neutral", "happy", "sad")
SPEAKERS = 4


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    hf_logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * 0.5)) / 16000
    for c, label in enumerate(CLASSES):
        (root / label).mkdir()
        for speaker in range(SPEAKERS):
            for take in range(3):
                f0 = 150 * 2**c * (1 + 0.03 * speaker) * rng.uniform(0.98, 1.02)
                wave = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(4 * np.pi * f0 * t)
                wave = (wave + 0.02 * rng.standard_normal(len(t))) * rng.uniform(0.5, 1.0)
                sf.write(root / label / f"spk{speaker}_{take}.wav", wave.astype(np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def corpus(corpus_root: Path):
    return load_corpus("folder", corpus_root)


@pytest.fixture(scope="module")
def split(corpus) -> SpeakerSplit:
    return train_val_test_split(corpus, val=0.25, test=0.25, seed=0)


def _losses(history: list[dict]) -> list[float]:
    return [entry["loss"] for entry in history if "loss" in entry]


def _assert_loss_falls(history: list[dict]) -> None:
    losses = _losses(history)
    assert len(losses) >= 4, history
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def _predict_dir(model_dir: Path, corpus, indices) -> list[int]:
    """Predictions of a saved checkpoint, batched exactly as Trainer.predict batches them (8)."""
    model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    import inspect

    collator = ft.AudioCollator.for_model(model, extractor)
    clips = ft.ClipDataset(ft.WaveformCache(corpus), list(corpus["label"]), indices, max_duration_s=30.0, train=False)
    predictions: list[int] = []
    with torch.no_grad():
        for start in range(0, len(clips), 8):
            batch = collator([clips[i] for i in range(start, min(start + 8, len(clips)))])
            batch.pop("labels")
            predictions += model(**batch).logits.argmax(-1).tolist()
    return predictions


# --- tiny transformer checkpoints ---------------------------------------------------------------


def _tiny_wav2vec2(out: Path, kind: str) -> Path:
    config_class, model_class = {
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2ForSequenceClassification),
        "hubert": (HubertConfig, HubertForSequenceClassification),
    }[kind]
    config = config_class(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, layerdrop=0.0, mask_time_prob=0.0,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(out)
    return out


TINY = {"wav2vec2": lambda out: _tiny_wav2vec2(out, "wav2vec2"), "hubert": lambda out: _tiny_wav2vec2(out, "hubert"),
        "whisper": save_tiny_whisper}


@pytest.mark.parametrize("kind", list(TINY))
def test_transformer_backbone_fine_tunes_and_its_checkpoint_reloads(kind, corpus, split, tmp_path) -> None:
    backbone = TINY[kind](tmp_path / "backbone")
    options = ft.TrainOptions(model=str(backbone), max_steps=12, per_device_train_batch_size=6, learning_rate=5e-3,
                              encoder_lr=2e-3, warmup_steps=0.0, logging_steps=1, disable_tqdm=True)
    out = tmp_path / "model"
    result = ft.train_and_evaluate(corpus, split, options, out, corpus="tones")

    _assert_loss_falls(result["history"])
    assert result["n"] == len(split.test)
    assert _predict_dir(out, corpus, split.test) == result["predictions"]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    assert not (out / "checkpoints").exists() and not (out / "training_args.bin").exists()


def test_feature_encoder_is_frozen_and_encoder_and_head_get_their_own_learning_rates(corpus, split, tmp_path) -> None:
    backbone = _tiny_wav2vec2(tmp_path / "backbone", "wav2vec2")
    before = AutoModelForAudioClassification.from_pretrained(backbone).wav2vec2.feature_extractor.state_dict()
    options = ft.TrainOptions(model=str(backbone), max_steps=3, per_device_train_batch_size=6, learning_rate=1e-3,
                              encoder_lr=1e-5, weighted_layer_sum=True, disable_tqdm=True)
    result = ft.fit(corpus, split.train, split.val, options, tmp_path / "work")

    model = result.model
    assert model.config.use_weighted_layer_sum
    for name, weight in model.wav2vec2.feature_extractor.state_dict().items():
        assert torch.equal(weight, before[name]), name
    assert not any(p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    rates = {}
    encoder_ids = {id(p) for p in model.wav2vec2.parameters()}
    for group, base_lr in zip(result.trainer.optimizer.param_groups, result.trainer.lr_scheduler.base_lrs):
        for param in group["params"]:
            rates[id(param)] = base_lr
    assert rates[id(model.layer_weights)] == 1e-3
    assert rates[id(model.classifier.weight)] == 1e-3
    assert {rates[i] for i in encoder_ids if i in rates} == {1e-5}
    assert result.best_val is not None and set(result.best_val) == {"uar", "accuracy", "macro_f1"}


@pytest.mark.parametrize("kind", ["light-cnn", "light-bilstm"])
def test_light_model_trains_from_the_command_line_and_serves_through_the_predictor(
    kind, corpus_root, corpus, split, tmp_path
) -> None:
    from ser.model import Predictor

    out = tmp_path / kind
    argv = ["--corpus", "folder", "--root", str(corpus_root), "--model", kind, "--out", str(out),
            "--num_train_epochs", "4", "--per_device_train_batch_size", "6", "--val", "0.25", "--test", "0.25",
            "--logging-steps", "1", "--disable_tqdm", "true"]
    code = dispatch("python -m finetune", "", {"train": ("finetune.train", "")}, ["train", *argv])
    assert code == 0
    # the run recorded what it resolved, and a run repeated from that record resolves the same
    assert parse_train(["--config", str(out / CONFIG_NAME)]) == parse_train(argv)

    record = json.loads((out / "metrics.json").read_text())
    _assert_loss_falls(record["history"])
    assert record["uar"] > 0.5  # chance is 1/3; the classes are an octave apart
    assert record["labels"] == list(CLASSES)
    assert set(record["speakers"]["test"]).isdisjoint(record["speakers"]["train"])
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "Speaker-independent" in card and "Data licence" in card and f"{record['uar']:.4f}" in card

    # the reloaded checkpoint reproduces the test confusion matrix the run recorded
    assert _confusion_matrix(corpus, split.test, _predict_dir(out, corpus, split.test)) == record["confusion_matrix"]
    predictor = Predictor.from_pretrained(out, runtime="eager")
    assert predictor.labels == list(CLASSES)
    assert predictor.version == record["model_version"]
    probs = predictor.predict(str(corpus[int(split.test[0])]["path"]))
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)


def _confusion_matrix(corpus, indices, predictions: list[int]) -> list[list[int]]:
    truth = np.asarray(corpus["label"])[np.asarray(indices)]
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for t, p in zip(truth, predictions):
        matrix[t, p] += 1
    return matrix.tolist()


def test_training_resumes_from_its_last_checkpoint(corpus, split, tmp_path) -> None:
    work = tmp_path / "work"
    first = ft.TrainOptions(model="light-bilstm", max_steps=4, per_device_train_batch_size=6, disable_tqdm=True,
                            logging_steps=1)
    ft.fit(corpus, split.train, split.val, first, work)
    assert (work / "checkpoint-4").is_dir()

    second = ft.TrainOptions(model="light-bilstm", max_steps=6, per_device_train_batch_size=6, disable_tqdm=True,
                             logging_steps=1, resume=True)
    result = ft.fit(corpus, split.train, split.val, second, work)
    assert result.trainer.state.global_step == 6
    logged_steps = [entry["step"] for entry in result.trainer.state.log_history if "loss" in entry]
    assert logged_steps[:4] == [1, 2, 3, 4]  # restored from the checkpoint, not retrained


def test_balanced_class_weights() -> None:
    weights = ft.balanced_class_weights([0, 0, 0, 1], 3)
    assert weights.tolist() == pytest.approx([4 / 6, 4 / 2, 1.0])


def parse_train(argv: list[str]) -> tuple:
    return parse_command((ft.TrainCommand, ft.TrainOptions), argv, prog="python -m finetune train")


def test_options_accept_mappings_and_refuse_bad_values() -> None:
    options = ft.options_from({"model": "light-cnn", "num_train_epochs": 2.0, "corpus": "x", "learning_rate": None})
    assert options.num_train_epochs == 2.0
    assert options.learning_rate == ft.HEAD_LR["light"]  # None: the model family's default
    assert ft.options_from({"model": "facebook/wav2vec2-base"}).learning_rate == ft.HEAD_LR["transformer"]
    with pytest.raises(ValueError, match="features must be one of logmel, mfcc"):
        ft.options_from({"features": "spectrogram"})
    with pytest.raises(ValueError, match="frame_stride"):
        ft.options_from({"frame_stride": 0})


def test_trainer_flags_and_the_project_flags_parse_under_their_names(tmp_path) -> None:
    """TrainingArguments' own flags, underscored or dashed; the project's dashed flags as before."""
    args, options = parse_train([
        "--corpus", "folder", "--root", "r", "--out", str(tmp_path), "--label-map", "four-class",
        "--learning_rate", "0.02", "--num-train-epochs", "3", "--per_device_train_batch_size", "5",
        "--gradient_accumulation_steps", "2", "--frame-stride", "4", "--no-freeze-feature-encoder",
        "--weighted-layer-sum", "--no-class-weights", "--max-steps", "7",
    ])
    assert (args.label_map, args.out) == ("four-class", str(tmp_path))
    assert (options.learning_rate, options.num_train_epochs, options.per_device_train_batch_size) == (0.02, 3, 5)
    assert (options.gradient_accumulation_steps, options.max_steps, options.frame_stride) == (2, 7, 4)
    assert not options.freeze_feature_encoder and options.weighted_layer_sum and not options.class_weights
    _, defaults = parse_train(["--corpus", "folder", "--root", "r", "--out", str(tmp_path)])
    assert defaults == ft.TrainOptions()  # one declaration: the parser's defaults are the dataclass's
    assert (defaults.num_train_epochs, defaults.seed, defaults.warmup_steps) == (20.0, 0, 0.1)
    for bad in (["--features", "spectrogram"], ["--epochs", "3"]):
        with pytest.raises(SystemExit):
            parse_train(["--corpus", "folder", "--root", "r", "--out", str(tmp_path), *bad])


def test_a_saved_config_repeats_the_run_and_stands_alone(tmp_path) -> None:
    argv = ["--corpus", "folder", "--root", "r", "--out", str(tmp_path), "--model", "light-bilstm",
            "--learning_rate", "0.005", "--seed", "3", "--lr_scheduler_type", "cosine", "--frame-stride", "2"]
    parsed = parse_train(argv)
    path = save_config(tmp_path, parsed)
    record = json.loads(path.read_text())
    assert record["learning_rate"] == 0.005 and record["model"] == "light-bilstm" and record["corpus"] == "folder"
    assert not any(key.endswith("_token") for key in record)
    assert parse_train(["--config", str(path)]) == parsed
    with pytest.raises(SystemExit):
        parse_train(["--config", str(path), "--seed", "4"])


def test_trainer_flags_reach_the_trainer(corpus, split, tmp_path) -> None:
    _, options = parse_train(["--corpus", "folder", "--root", "r", "--out", str(tmp_path), "--max_steps", "2",
                              "--learning_rate", "0.004", "--per_device_train_batch_size", "3",
                              "--gradient_accumulation_steps", "2", "--lr_scheduler_type", "constant",
                              "--disable_tqdm", "true"])
    result = ft.fit(corpus, split.train, split.val, options, tmp_path / "work")
    args = result.trainer.args
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (0.004, 3, 2)
    assert args.lr_scheduler_type == "constant" and args.output_dir == str(tmp_path / "work")
    assert {group["lr"] for group in result.trainer.optimizer.param_groups} == {0.004}  # light model: all head
    assert result.trainer.state.global_step == 2


def test_help_lists_the_commands_and_each_commands_flags(capsys) -> None:
    from finetune.__main__ import COMMANDS

    for argv, expected in ((["--help"], "probe"), (["train", "--help"], "--learning_rate"),
                           (["probe", "--help"], "--pooling"), (["classical", "--help"], "--estimator"),
                           (["cv", "--help"], "--method")):
        with pytest.raises(SystemExit) as exit_code:
            dispatch("python -m finetune", "", COMMANDS, argv)
        assert exit_code.value.code == 0
        assert expected in capsys.readouterr().out, argv


def test_cv_command_reports_mean_and_std_over_speaker_folds(corpus_root, tmp_path) -> None:
    """Two speaker folds of the train method (with on-the-fly augmentation); each fold early-stops on one
    of its own training speakers."""
    out = tmp_path / "cv"
    code = dispatch("python -m finetune", "", {"cv": ("finetune.cv", "")}, [
        "cv", "--method", "train", "--folds", "2", "--corpus", "folder", "--root", str(corpus_root),
        "--out", str(out), "--", "--model", "light-bilstm", "--num_train_epochs", "2", "--per_device_train_batch_size",
        "6", "--val", "0.5", "--augment", "--disable_tqdm", "true",
    ])
    assert code == 0
    result = json.loads((out / "cv.json").read_text())
    assert result["folds"] == 2
    speakers = [set(fold["test_speakers"]) for fold in result["per_fold"]]
    assert speakers[0].isdisjoint(speakers[1]) and len(speakers[0] | speakers[1]) == SPEAKERS
    uars = [fold["uar"] for fold in result["per_fold"]]
    assert result["summary"]["uar"]["mean"] == pytest.approx(np.mean(uars))
    assert result["summary"]["uar"]["std"] == pytest.approx(np.std(uars, ddof=1))
    assert result["pooled"]["n"] == len(CLASSES) * SPEAKERS * 3
    table = (out / "cv.md").read_text()
    assert "mean ± std" in table and (out / "confusion_matrix.png").is_file()


def test_cv_parses_the_options_after_the_separator_as_the_method_declares_them() -> None:
    from finetune.classical import ClassicalOptions
    from finetune.cv import method_options
    from finetune.probe import ProbeOptions

    train = method_options("train", ["--model", "light-bilstm", "--learning_rate", "0.01", "--frame-stride", "2"])
    assert isinstance(train, ft.TrainOptions) and (train.learning_rate, train.frame_stride) == (0.01, 2)
    probe = method_options("probe", ["--model", "whisper-tiny.en-offline", "--pooling", "attentive"])
    assert probe == ProbeOptions(backbone="whisper-tiny.en-offline", pooling="attentive")
    assert method_options("classical", ["--estimator", "tree"]) == ClassicalOptions(estimator="tree")
    with pytest.raises(SystemExit):  # the data are cv's own flags, not the method's
        method_options("classical", ["--corpus", "emodb"])


def test_cv_refuses_a_bad_fold_spec(corpus) -> None:
    from finetune.cv import make_folds

    with pytest.raises(ValueError, match="loso"):
        make_folds(corpus, "many")
    assert len(make_folds(corpus, "loso")) == SPEAKERS


def test_training_clips_are_cropped_and_augmented_reproducibly() -> None:
    waves = {0: np.sin(np.arange(16000 * 3) / 10).astype(np.float32)}

    def clips(seed: int) -> list[np.ndarray]:
        dataset = ft.ClipDataset(waves, [2], [0, 0, 0], max_duration_s=2.0, train=True, augment=True, seed=seed)
        return [dataset[i]["waveform"] for i in range(len(dataset))]

    first, again, other = clips(1), clips(1), clips(2)
    assert all(len(clip) == 32000 and clip.dtype == np.float32 for clip in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    evaluation = ft.ClipDataset(waves, [2], [0], max_duration_s=2.0, train=False)[0]
    assert evaluation["labels"] == 2 and np.array_equal(evaluation["waveform"], waves[0][:32000])


def test_denoise_option_denoises_training_audio_and_the_checkpoint_serves_it_denoised(
    corpus_root, corpus, split, tmp_path
) -> None:
    pytest.importorskip("noisereduce")
    from ser.denoise import denoise
    from ser.model import Predictor

    rng = np.random.default_rng(4)
    waves = {0: (np.sin(np.arange(16000 * 3) / 10) + 0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)}
    evaluation = ft.ClipDataset(waves, [2], [0], max_duration_s=2.0, train=False, denoise="spectral")[0]
    np.testing.assert_array_equal(evaluation["waveform"], denoise(waves[0], "spectral")[:32000])
    plain = ft.ClipDataset(waves, [2], [0], max_duration_s=5.0, train=True, seed=1, denoise="spectral")[0]["waveform"]
    assert len(plain) == len(waves[0]) and np.array_equal(plain, denoise(waves[0], "spectral"))  # no crop needed

    out = tmp_path / "denoised"
    argv = ["--corpus", "folder", "--root", str(corpus_root), "--model", "light-cnn", "--out", str(out),
            "--num_train_epochs", "1", "--per_device_train_batch_size", "6", "--val", "0.25", "--test", "0.25",
            "--disable_tqdm", "true", "--denoise", "spectral"]
    assert dispatch("python -m finetune", "", {"train": ("finetune.train", "")}, ["train", *argv]) == 0
    assert json.loads((out / "config.json").read_text())["ser_denoise"] == "spectral"
    assert Predictor.from_pretrained(out, runtime="eager").denoise == "spectral"
