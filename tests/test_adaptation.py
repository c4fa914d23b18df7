"""Speaker adaptation: statistics by hand, the adapted head beating the plain one on voices with
strong offsets, corpus balancing, and the Predictor's session context and speaker groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

from finetune import probe as fp
from ser.adaptation import MIN_CONTEXT_CLIPS, PRIOR_CLIPS, SpeakerContext, speaker_stats, standardise, standardise_groups
from ser.model import Predictor
from ser.probe import SPEAKER_HEAD_WEIGHTS
from tests.test_probe import CLASSES, _tone, backbone, corpus, corpus_dir, shared_cache  # noqa: F401  (fixtures)


def test_stats_by_hand_and_shrinkage_towards_the_prior():
    features = np.array([[[1.0, 2.0]], [[3.0, 6.0]]])  # 2 clips, 1 layer, width 2
    stats = speaker_stats(features)
    np.testing.assert_allclose(stats.mean, [[2.0, 4.0]])
    np.testing.assert_allclose(stats.std, [[1.0, 2.0]])
    prior = np.array([[4.0, 4.0]])
    shrunk = speaker_stats(features, prior)  # (2 * var + 5 * 16) / 7
    np.testing.assert_allclose(shrunk.std, np.sqrt([[(2 * 1 + PRIOR_CLIPS * 16) / 7, (2 * 4 + PRIOR_CLIPS * 16) / 7]]))
    one = speaker_stats(features[:1], prior)  # a single clip: its own spread is 0, the prior decides
    np.testing.assert_allclose(one.std, np.sqrt(PRIOR_CLIPS * 16 / 6) * np.ones((1, 2)))
    np.testing.assert_allclose(standardise(features, stats)[:, 0], [[-1.0, -1.0], [1.0, 1.0]])


def test_each_group_is_centred_on_itself():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 2, 3)) + np.repeat([0.0, 50.0, -20.0], 4)[:, None, None]
    groups = np.repeat(["a", "b", "c"], 4)
    out = standardise_groups(features, groups)
    for group in "abc":
        np.testing.assert_allclose(out[groups == group].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(out[groups == group].std(0), 1, atol=1e-2)


def _offset_voices(backbone: str, seed: int = 0) -> tuple[Dataset, fp.CachedFeatures]:
    """Fake pooled features: the class shifts one direction a little, each speaker shifts every
    direction a lot. A plain head learns the training speakers' offsets; standardising each voice
    by its own statistics removes them."""
    config = fp.encoder_probe(backbone).config
    layers, width = config.num_layers, config.hidden_size
    rng = np.random.default_rng(seed)
    labels, speakers, rows = [], [], []
    for s in range(6):
        offset = rng.normal(scale=8.0, size=(layers, width))
        for c in range(2):
            for _ in range(10):
                x = offset + rng.normal(scale=0.5, size=(layers, width))
                x[:, 0] += 2.0 * c
                rows.append(x)
                labels.append(c)
                speakers.append(f"s{s}")
    features = Features({"label": ClassLabel(names=["neutral", "angry"]), "speaker": Value("string"), "corpus": Value("string")})
    dataset = Dataset.from_dict({"label": labels, "speaker": speakers, "corpus": ["fake"] * len(labels)}, features=features)
    n = len(labels)
    cached = fp.CachedFeatures(torch.tensor(np.stack(rows), dtype=torch.float32), None, np.arange(n), np.zeros(n, dtype=int))
    return dataset, cached


def test_adapted_head_removes_voice_offsets_the_plain_head_cannot(backbone: str):  # noqa: F811
    dataset, features = _offset_voices(backbone)
    options = fp.options_from({"backbone": backbone, "adapt": True, "l2": 1e-2})
    speakers = np.asarray(dataset["speaker"])
    labels = np.asarray(dataset["label"])
    plain_hits, adapted_hits = [], []
    for held_out in sorted(set(speakers)):
        train, test = np.flatnonzero(speakers != held_out), np.flatnonzero(speakers == held_out)
        head, _, _ = fp.fit_head(dataset, train, features, options)
        plain_hits += (fp.predict_rows(head, features, test) == labels[test]).tolist()
        module, adapted = fp.fit_speaker_head(dataset, train, features, options)
        adapted_hits += (fp.predict_rows(module.head, adapted, test) == labels[test]).tolist()
    assert np.mean(adapted_hits) > 0.95
    assert np.mean(plain_hits) < 0.8


def test_corpus_balance_gives_each_corpus_class_pair_equal_weight(backbone: str):  # noqa: F811
    features = Features({"label": ClassLabel(names=["neutral", "angry"]), "speaker": Value("string"), "corpus": Value("string")})
    dataset = Dataset.from_dict(
        {"label": [0, 0, 0, 1, 0, 1], "speaker": list("aaabcc"), "corpus": ["big"] * 4 + ["small"] * 2}, features=features
    )
    cached = fp.CachedFeatures(torch.zeros(6, 1, 1), None, np.arange(6), np.zeros(6, dtype=int))
    weights = fp.row_weights(dataset, cached, np.arange(6), "corpus")
    # cells: big/neutral x3, big/angry x1, small/neutral x1, small/angry x1 -> 1/3, 1, 1, 1, normalised to mean 1
    expected = np.array([1 / 3, 1 / 3, 1 / 3, 1, 1, 1]) * 6 / 4
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    by_class = fp.row_weights(dataset, cached, np.arange(6), "class")
    np.testing.assert_allclose(by_class.numpy(), np.array([1 / 4] * 3 + [1 / 2, 1 / 4, 1 / 2]) * 6 / 2, rtol=1e-6)


@pytest.fixture(scope="module")
def adapted_model(corpus, backbone: str, shared_cache: str, tmp_path_factory) -> Path:  # noqa: F811
    model, _ = fp.train_probe(corpus, options={"backbone": backbone, "adapt": True, "cache_dir": shared_cache})
    out = tmp_path_factory.mktemp("adapted") / "probe"
    model.save_pretrained(out)
    return out


def test_speaker_head_is_saved_and_reloaded(adapted_model: Path):
    assert (adapted_model / SPEAKER_HEAD_WEIGHTS).is_file()
    predictor = Predictor.from_pretrained(adapted_model, runtime="eager")
    assert predictor.adapts_to_speakers
    assert float(predictor.model.speaker_head.prior_std.std()) > 0  # trained statistics, not the init's ones


def test_context_uses_the_plain_head_until_enough_clips_then_adapts(adapted_model: Path):
    predictor = Predictor.from_pretrained(adapted_model, runtime="eager")
    clips = [_tone(freq, 0.5, seed) for seed, freq in enumerate([140, 420, 900, 150, 430, 880])]
    context = SpeakerContext()
    with_context = [predictor.predict(clip, context=context) for clip in clips]
    alone = [predictor.predict(clip) for clip in clips]
    for i in range(MIN_CONTEXT_CLIPS - 1):
        assert with_context[i] == pytest.approx(alone[i], abs=1e-4)
    assert len(context) == len(clips)
    # From the MIN_CONTEXT_CLIPS-th clip on: the adapted head on statistics of the clips so far.
    pooled = np.stack([predictor._pooled_features(clip) for clip in clips])
    prior = predictor.model.speaker_head.prior_std.numpy()
    last = standardise(pooled[-1], speaker_stats(pooled, prior))
    with torch.no_grad():
        logits = predictor.model.speaker_head.head.forward_pooled(torch.from_numpy(last)[None])[0]
    expected = torch.softmax(logits, -1).numpy()
    assert list(with_context[-1].values()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_group_prediction_equals_single_clips_below_the_minimum(adapted_model: Path):
    predictor = Predictor.from_pretrained(adapted_model, runtime="eager")
    clips = [_tone(300, 0.5, 1), _tone(700, 0.5, 2)][: MIN_CONTEXT_CLIPS - 1]
    assert predictor.predict_group(clips) == [predictor.predict(c) for c in clips]
    many = [_tone(f, 0.5, i) for i, f in enumerate([140, 420, 900, 160, 400])]
    grouped = predictor.predict_group(many)
    assert len(grouped) == len(many) and all(abs(sum(p.values()) - 1) < 1e-5 for p in grouped)
    assert grouped != [predictor.predict(c) for c in many]


def test_app_adapts_to_a_visitors_voice_within_their_session(adapted_model: Path, tmp_path: Path):
    """The Demo tab over the real server: one browser session's recordings form its voice context;
    another session starts from nothing."""
    import soundfile as sf
    from gradio_client import Client, handle_file

    from ser.ui import AppConfig
    from tests.app_server import running_app

    clips = []
    for i, freq in enumerate([140, 420, 900, 150]):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], _tone(freq, 0.6, i), 16000)
    config = AppConfig(model=str(adapted_model), store=tmp_path / "store", models_dir=tmp_path / "models")
    with running_app(config) as (_, url):
        visitor = Client(url, verbose=False, download_files=str(tmp_path / "dl1"))
        notes = [visitor.predict(handle_file(c), True, api_name="/predict")[2] for c in clips]
        assert f"starts at clip {MIN_CONTEXT_CLIPS} (1 so far)" in notes[0]
        assert f"adapted to your voice ({len(clips)} clips)" in notes[-1]
        adapted_bars = visitor.predict(handle_file(clips[0]), True, api_name="/predict")[0]
        other = Client(url, verbose=False, download_files=str(tmp_path / "dl2"))
        plain_bars, _, note, _ = other.predict(handle_file(clips[0]), False, api_name="/predict")
        assert "adapt" not in note
        assert adapted_bars["confidences"] != plain_bars["confidences"]


def test_cli_adapts_by_folder_like_predict_group(adapted_model: Path, tmp_path: Path):
    """`ser predict DIR --adapt-by folder`: each folder's clips predicted as one voice, bad files reported."""
    import json
    import subprocess
    import sys

    import soundfile as sf

    from tests.conftest import REPO

    voices = {"a": [140, 420, 900, 160], "b": [150, 430, 880]}
    for voice, freqs in voices.items():
        (tmp_path / voice).mkdir()
        for i, freq in enumerate(freqs):
            sf.write(tmp_path / voice / f"{i}.wav", _tone(freq, 0.6, 10 * i + len(voice)), 16000)
    (tmp_path / "b" / "broken.wav").write_bytes(b"not audio at all" * 10)
    command = [sys.executable, "-m", "ser", "predict", str(tmp_path / "a"), str(tmp_path / "b"), "--adapt-by", "folder",
               "--json", "--model", str(adapted_model), "--runtime", "eager"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 1 and "broken.wav" in result.stderr  # the bad file is reported, the rest predicted
    got = {Path(r["path"]).relative_to(tmp_path).as_posix(): r["probs"] for r in map(json.loads, result.stdout.splitlines())}
    predictor = Predictor.from_pretrained(adapted_model, runtime="eager")
    for voice in voices:
        clips = sorted((tmp_path / voice).glob("[0-9].wav"))
        for clip, expected in zip(clips, predictor.predict_group(clips)):
            assert got[clip.relative_to(tmp_path).as_posix()] == pytest.approx(expected, abs=1e-5)
