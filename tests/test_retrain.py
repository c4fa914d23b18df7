"""The retraining loop end to end: a correction saved in the store changes what the next model says.

The synthetic corpus has one pure tone per class (a different frequency each, shifted a little
per speaker), encoded by a tiny randomly initialised wav2vec2: tones an octave apart give clearly
different hidden states, so the classes are learnable and the results deterministic (fixed seeds).
The corrections are clips of a tone no corpus class uses, labelled ``fearful`` (a class the first
model cannot even say): after retraining, the new model must predict ``fearful`` for them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.tiny_models import save_tiny_wav2vec2

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
CLASS_TONES = {"neutral": 220.0, "happy": 440.0, "sad": 880.0, "angry": 1760.0}
CORRECTED_TONE, CORRECTED_LABEL = 3520.0, "fearful"
SPEAKERS, TAKES, CORRECTIONS = 6, 2, 4
# Tones separate within a few epochs. With holdout 0.5, three of the six corpus speakers and one of the
# four corrections (always the same one: a correction's side is hashed from its clip) are held out.
FAST = ["--epochs", "120", "--patience", "20", "--holdout", "0.5"]


def tone(freq: float, seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.3 + 0.1 * rng.random()) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def corrected_clip(k: int) -> np.ndarray:
    return tone(CORRECTED_TONE * (1 + 0.02 * k), seed=1000 + k)


def write_corpus(root: Path) -> Path:
    """``root/<label>/spk<k>_<take>.wav``: the ``folder`` layout, speaker from the file name."""
    for c, (label, freq) in enumerate(CLASS_TONES.items()):
        (root / label).mkdir(parents=True)
        for speaker in range(SPEAKERS):
            for take in range(TAKES):
                samples = tone(freq * (1 + 0.02 * speaker), seed=100 * c + 10 * speaker + take)
                sf.write(root / label / f"spk{speaker}_{take}.wav", samples, RATE, subtype="PCM_16")
    return root


def silence_front_end(backbone: Path, out: Path) -> Path:
    """The tiny encoder with its first convolution zeroed: every clip encodes alike (a useless backbone)."""
    from transformers import AutoFeatureExtractor, Wav2Vec2ForSequenceClassification

    model = Wav2Vec2ForSequenceClassification.from_pretrained(backbone)
    model.wav2vec2.feature_extractor.conv_layers[0].conv.weight.data.zero_()
    model.save_pretrained(out)
    AutoFeatureExtractor.from_pretrained(backbone).save_pretrained(out)
    return out


def retrain_args(world: dict, **overrides) -> argparse.Namespace:
    from finetune import retrain

    parser = argparse.ArgumentParser()
    retrain.add_arguments(parser)
    argv = ["--store", str(world["store_dir"]), "--out", str(world["models"]), "--corpus", "folder",
            "--root", str(world["corpus"]), "--cache-dir", str(world["cache"]), *FAST]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def top(probs: dict[str, float]) -> str:
    return max(probs, key=probs.get)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Corpus, store and backbone; then v1 from the corpus alone, corrections, and v2 with them."""
    import torch

    from finetune import retrain
    from ser.model import Predictor
    from ser.store import AnnotationStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: tiny models gain nothing from more
    tmp = tmp_path_factory.mktemp("retrain")
    world = {
        "corpus": write_corpus(tmp / "corpus"),
        "store_dir": tmp / "store",
        "models": tmp / "models",
        "cache": tmp / "cache",
        "backbone": save_tiny_wav2vec2(tmp / "backbone"),
    }
    store = AnnotationStore(world["store_dir"])
    world["store"] = store

    world["rc_v1"] = retrain.run(retrain_args(world, model=world["backbone"], activate=True))
    v1 = store.active_model()
    world["v1"] = v1
    first = Predictor.from_pretrained(v1["path"], runtime="eager")
    world["v1_labels"] = first.labels
    world["corrected"] = []
    for k in range(CORRECTIONS):  # the user records a clip, sees the wrong guess and corrects it
        samples = corrected_clip(k)
        sha = store.add_clip(samples, source=f"mic-{k}.wav")
        guess = first.predict(samples)
        for annotator in ("ana", "ben"):
            store.add_label(sha, annotator, CORRECTED_LABEL, model_version=first.version, model_probs=guess)
        world["corrected"].append((sha, top(guess)))

    world["rc_v2"] = retrain.run(retrain_args(world))  # backbone: the active model's
    world["models_after_v2"] = store.list_models()
    yield world
    store.close()
    torch.set_num_threads(threads)


def test_first_retrain_without_serving_model_writes_and_activates(world):
    assert world["rc_v1"] == 0
    v1 = world["v1"]
    assert re.fullmatch(r"v0001-\d{8}T\d{6}Z", v1["version"])  # finetune.card.version_id, numbered
    folder = Path(v1["path"])
    for name in ("config.json", "head.safetensors", "metrics.json", "README.md", "confusion_matrix.png"):
        assert (folder / name).is_file(), name
    assert world["v1_labels"] == list(CLASS_TONES)  # EMOTIONS order happens to match
    assert v1["metrics"]["uar"] >= 0.75  # tones are learnable: a real signal, not chance (0.25)


def test_corrections_retrain_to_a_model_that_predicts_the_corrected_label(world):
    from ser.model import Predictor

    assert world["rc_v2"] == 0
    assert all(guess != CORRECTED_LABEL for _, guess in world["corrected"])  # v1 could not say it
    versions = [m["version"] for m in world["models_after_v2"]]
    assert len(versions) == 2 and versions[1].startswith("v0002-")
    store = world["store"]
    assert store.active_model()["version"] == world["v1"]["version"]  # no --activate: the app switches
    store.set_active(versions[1])
    new = Predictor.from_pretrained(store.active_model()["path"], runtime="eager")
    assert CORRECTED_LABEL in new.labels
    for sha, _ in world["corrected"]:  # the held-out one too: the corrected class generalises
        assert top(new.predict(store.load_clip(sha))) == CORRECTED_LABEL
    for label, freq in CLASS_TONES.items():  # and the corpus classes are still known
        assert top(new.predict(tone(freq * 1.05, seed=7))) == label


def test_metrics_json_holds_both_models_and_the_decision(world):
    import json

    record = next(m for m in world["store"].list_models() if m["version"].startswith("v0002-"))
    metrics = json.loads((Path(record["path"]) / "metrics.json").read_text())
    assert metrics["decision"]["accepted"] is True
    serving = metrics["serving_model"]
    assert serving["version"] == world["v1"]["version"]
    assert set(serving["metrics"]) >= {"uar", "accuracy", "macro_f1", "confusion_matrix"}
    assert metrics["uar"] >= serving["metrics"]["uar"]
    assert 1 <= metrics["evaluation"]["test_corrections"] < CORRECTIONS  # corrections on both sides
    assert metrics["decision"]["caveat"] is None  # v1 came from the same split: a fair comparison
    assert metrics["training_data"]["corrections"] == CORRECTIONS
    assert record["metrics"]["uar"] == pytest.approx(metrics["uar"])


def test_corrections_override_corpus_labels_of_the_same_audio(world, tmp_path):
    from finetune.retrain import merge_training_data, store_corrections
    from ser.audio import load_audio
    from ser.corpora import label_names, load_corpus
    from ser.store import AnnotationStore

    corpus = load_corpus("folder", world["corpus"])
    target = world["corpus"] / "neutral" / "spk0_0.wav"
    store = AnnotationStore(tmp_path / "store")
    sha = store.add_clip(load_audio(target))  # the same clip, uploaded in the browser
    store.add_label(sha, "ana", "sad")
    data = merge_training_data(store, corpus, store_corrections(store))
    assert (data.overridden, data.changed, len(data.dataset)) == (1, 1, len(corpus))  # replaced, not added
    names = label_names(data.dataset)
    labels = dict(zip(data.dataset["path"], (names[i] for i in data.dataset["label"])))
    assert labels[str(target)] == "sad"
    assert labels[str(world["corpus"] / "neutral" / "spk0_1.wav")] == "neutral"


def test_worse_retrain_is_rejected_unless_forced(world, tmp_path):
    """A useless backbone cannot beat the serving model: exit 3 and nothing written; --force writes it."""
    from finetune import retrain

    store = world["store"]
    useless = silence_front_end(world["backbone"], tmp_path / "useless")
    before_models, before_dirs = store.list_models(), sorted(p.name for p in world["models"].iterdir())
    command = [sys.executable, "-m", "finetune", "retrain", "--store", str(world["store_dir"]),
               "--out", str(world["models"]), "--corpus", "folder", "--root", str(world["corpus"]),
               "--model", str(useless), "--cache-dir", str(world["cache"]), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "REJECTED" in done.stdout and "serving UAR" in done.stdout
    assert store.list_models() == before_models
    assert sorted(p.name for p in world["models"].iterdir()) == before_dirs

    assert retrain.run(retrain_args(world, model=useless, force=True)) == 0
    forced = store.list_models()[-1]
    assert forced["version"].startswith("v0003-") and "forced" in forced["metrics"]["decision"]


def test_bad_input_exits_2_with_one_line(tmp_path):
    command = [sys.executable, "-m", "finetune", "retrain", "--store", str(tmp_path / "none"), "--out", str(tmp_path)]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no annotation store" in done.stderr


def test_empty_store_without_corpus_exits_2(tmp_path):
    from finetune import retrain
    from ser.store import AnnotationStore

    AnnotationStore(tmp_path / "store").close()
    args = argparse.Namespace(**vars(retrain_args({"store_dir": tmp_path / "store", "models": tmp_path / "m",
                                                   "corpus": tmp_path, "cache": tmp_path / "c"})))
    args.corpus = args.root = None
    assert retrain.run(args) == 2


def test_split_is_speaker_disjoint_and_stable_as_corrections_grow():
    from datasets import Dataset

    from finetune.data import speaker_groups
    from finetune.retrain import split_rows

    def rows(corrections: int) -> Dataset:
        return Dataset.from_dict({
            "speaker": [f"s{i % 5}" for i in range(20)] + [f"clip-{i:04d}" for i in range(corrections)],
            "corpus": ["tones"] * 20 + ["store"] * corrections,
            "label": [i % 2 for i in range(20 + corrections)],
        })

    few, many = rows(10), rows(40)
    _, test_few = split_rows(few, 0.2, seed=0)
    train_many, test_many = split_rows(many, 0.2, seed=0)
    groups = speaker_groups(many)
    assert not set(groups[train_many]) & set(groups[test_many])
    assert set(test_few) == set(test_many) & set(range(30))  # old rows keep their side
    assert 0 < len(set(test_many) - set(range(20))) < 40  # corrections on both sides


def test_decide():
    from finetune.retrain import decide

    assert decide(0.5, None).accepted
    assert decide(0.7, 0.7).accepted
    assert not decide(0.69, 0.7).accepted
    assert decide(0.69, 0.7, tolerance=0.02).accepted
    assert decide(0.1, 0.7, force=True).accepted


def test_a_retrained_version_keeps_the_serving_models_recipe(tmp_path):
    """The default model's corpus balance and speaker-adapted head survive a retrain from the app."""
    import json

    from finetune.retrain import ServingModel, serving_recipe
    from ser.model import DEFAULT_MODEL_DIR

    recipe = serving_recipe(ServingModel("default", str(DEFAULT_MODEL_DIR)))
    assert recipe["adapt"] is True and recipe["balance"] == "corpus" and recipe["l2"] == 0.01
    assert "backbone" not in recipe and "cache_dir" not in recipe  # where and how to encode stay the retrain's
    (tmp_path / "metrics.json").write_text(json.dumps({"uar": 0.5}))
    assert serving_recipe(ServingModel("bare", str(tmp_path))) == {} and serving_recipe(None) == {}


def test_an_unexpected_failure_keeps_its_traceback(monkeypatch, capsys):
    """A bug in the pipeline: the traceback goes to the log, the last line still says what failed."""
    from finetune import retrain

    def broken(args: argparse.Namespace) -> int:
        raise KeyError("probs")

    monkeypatch.setattr(retrain, "retrain", broken)
    assert retrain.run(argparse.Namespace()) == retrain.EXIT_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):" and 'raise KeyError("probs")' in "\n".join(lines)
    assert lines[-1] == "retrain: failed: KeyError: 'probs'"
