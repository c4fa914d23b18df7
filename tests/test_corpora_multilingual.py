"""nEMO, EMOVO and TurEV-DB adapters on tiny corpora laid out like the real ones, the corpus
registry, training on several corpora at once (harmonised labels) and leave-one-corpus-out folds;
the real corpora where they have been downloaded (``SER_CORPORA``, ``data/`` or a ``corpora/`` folder above)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetune.data import loco_folds, loso_folds, speaker_groups
from ser.corpora import CORPORA, CORPUS_SPECS, CorpusError, corpus_spec, label_names, load_corpora, read_corpus
from tests.test_corpora import rows, write_wav


def test_nemo_layout(tmp_path):
    for name in ["EB0_anger_1.wav", "EB0_neutral_13.wav", "WR0_surprised_64.wav", "SB0_happiness_2.wav",
                 "KL0_fear_7.wav", "KL0_sadness_9.wav", "README.wav"]:
        write_wav(tmp_path / "samples" / name)
    dataset, report = read_corpus("nemo", tmp_path)
    assert rows(dataset) == [
        ("EB0_anger_1.wav", "angry", "EB0"),
        ("EB0_neutral_13.wav", "neutral", "EB0"),
        ("KL0_fear_7.wav", "fearful", "KL0"),
        ("KL0_sadness_9.wav", "sad", "KL0"),
        ("SB0_happiness_2.wav", "happy", "SB0"),
        ("WR0_surprised_64.wav", "surprised", "WR0"),
    ]
    assert [Path(p).name for p in report.unparsed] == ["README.wav"]


def test_emovo_layout_codes_are_italian_words(tmp_path):
    for name in ["f1/rab-f1-b2.wav", "f1/neu-f1-l1.wav", "m3/gio-m3-n5.wav", "m3/tri-m3-d1.wav", "m2/pau-m2-b1.wav",
                 "m2/dis-m2-b3.wav", "m2/sor-m2-l4.wav", "m2/xyz-m2-b1.wav"]:
        write_wav(tmp_path / name, rate=48000)
    dataset, report = read_corpus("emovo", tmp_path)
    assert rows(dataset) == [
        ("dis-m2-b3.wav", "disgust", "m2"),
        ("gio-m3-n5.wav", "happy", "m3"),
        ("neu-f1-l1.wav", "neutral", "f1"),
        ("pau-m2-b1.wav", "fearful", "m2"),
        ("rab-f1-b2.wav", "angry", "f1"),
        ("sor-m2-l4.wav", "surprised", "m2"),
        ("tri-m3-d1.wav", "sad", "m3"),
    ]
    assert [label for _, label in report.unknown_labels] == ["xyz"]


def test_turev_reads_only_the_original_recordings(tmp_path):
    repo = tmp_path / "TurEV-DB"
    for name in ["Angry/1358_kz_beste.wav", "Calm/1358_sk_beste.wav", "Happy/2011_mt_dolap.wav", "Sad/2011_hl_dolap.wav"]:
        write_wav(repo / "Sound Source" / name, rate=44100)
    write_wav(repo / "Filtered" / "Angry" / "1358_kz_beste.wav")  # the repository's filtered copies
    dataset, _ = read_corpus("turev", repo)
    assert rows(dataset) == [
        ("1358_kz_beste.wav", "angry", "1358"),
        ("1358_sk_beste.wav", "calm", "1358"),
        ("2011_hl_dolap.wav", "sad", "2011"),
        ("2011_mt_dolap.wav", "happy", "2011"),
    ]


def test_registry_names_aliases_and_licences():
    assert {"emodb", "ravdess", "crema-d", "tess", "nemo", "emovo", "turev", "folder", "csv", "hub"} <= set(CORPORA)
    assert corpus_spec("CremaD").name == "crema-d"
    assert corpus_spec("TurEV_DB").name == "turev"
    assert not CORPUS_SPECS["turev"].shippable  # no-derivatives: evaluation only
    assert "(CC BY-NC-SA 4.0)" in CORPUS_SPECS["nemo"].licence
    with pytest.raises(CorpusError, match="unknown corpus 'iemocap'"):
        corpus_spec("iemocap")


def _three_corpora(tmp_path: Path) -> tuple[str, str]:
    for name in ["03a01Na.wav", "03a01Wa.wav", "03a01Lb.wav", "08a01Fa.wav", "08a01Ta.wav"]:
        write_wav(tmp_path / "emodb" / "wav" / name)
    for name in ["EB0_neutral_1.wav", "EB0_anger_1.wav", "WR0_happiness_1.wav", "WR0_surprised_1.wav"]:
        write_wav(tmp_path / "nemo" / "samples" / name, rate=24000)
    for name in ["Calm/1358_sk_a.wav", "Angry/1358_kz_a.wav", "Sad/2011_hl_b.wav", "Happy/2011_mt_b.wav"]:
        write_wav(tmp_path / "turev" / "Sound Source" / name, rate=44100)
    return "emodb,nemo,turev", ",".join(str(tmp_path / n) for n in ("emodb", "nemo", "turev"))


def test_several_corpora_get_one_harmonised_label_set(tmp_path):
    names, roots = _three_corpora(tmp_path)
    dataset = load_corpora(names, roots)
    assert label_names(dataset) == ["neutral", "happy", "sad", "angry", "surprised"]
    labelled = {(c, Path(p).name): label_names(dataset)[i] for c, p, i in zip(dataset["corpus"], dataset["path"], dataset["label"])}
    assert labelled[("turev", "1358_sk_a.wav")] == "neutral"  # TurEV-DB's calm
    assert ("emodb", "03a01Lb.wav") not in labelled  # EmoDB's boredom: no other corpus has it
    assert labelled[("nemo", "WR0_surprised_1.wav")] == "surprised"
    four = load_corpora(names, roots, label_map="four-class")
    assert label_names(four) == ["neutral", "happy", "sad", "angry"]


def test_roots_must_match_corpora(tmp_path):
    with pytest.raises(CorpusError, match="3 corpora .* need as many roots, got 2"):
        load_corpora("emodb,nemo,turev", "a,b")


def test_speakers_of_different_corpora_never_collide(tmp_path):
    write_wav(tmp_path / "a" / "wav" / "03a01Na.wav")
    write_wav(tmp_path / "a" / "wav" / "03a01Wa.wav")
    write_wav(tmp_path / "b" / "Actor_03" / "03-01-01-01-01-01-03.wav")
    write_wav(tmp_path / "b" / "Actor_03" / "03-01-05-01-01-01-03.wav")
    dataset = load_corpora("emodb,ravdess", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert list(dataset["speaker"]) == ["03", "03", "03", "03"]  # the same id in both corpora...
    assert sorted(set(speaker_groups(dataset))) == ["emodb/03", "ravdess/03"]  # ...two people
    assert len(loso_folds(dataset)) == 2


def test_leave_one_corpus_out_never_mixes_corpora(tmp_path):
    names, roots = _three_corpora(tmp_path)
    dataset = load_corpora(names, roots)
    corpus = np.asarray(dataset["corpus"])
    folds = loco_folds(dataset)
    assert [sorted(set(corpus[test])) for _, test in folds] == [["emodb"], ["nemo"], ["turev"]]
    for train, test in folds:
        assert not set(corpus[train]) & set(corpus[test])
        assert len(train) + len(test) == len(dataset)
    with pytest.raises(ValueError, match="at least two corpora"):
        loco_folds(dataset.filter(lambda row: row["corpus"] == "nemo"))


REAL = {"nemo": (4481, 9), "emovo": (588, 6), "turev": (1735, 6)}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_corpus_counts(name):
    from tests.test_download import _local_copy

    root = _local_copy(name)
    if root is None:
        pytest.skip(f"no local copy of {name} (python -m finetune download {name} --to DIR; set SER_CORPORA=DIR)")
    dataset, report = read_corpus(name, root)
    clips, speakers = REAL[name]
    assert (len(dataset), len(set(dataset["speaker"])), report.problems) == (clips, speakers, 0)


def test_evaluation_only_corpora_are_tested_but_never_trained_on(tmp_path):
    names, roots = _three_corpora(tmp_path)
    dataset = load_corpora(names, roots)
    corpus = np.asarray(dataset["corpus"])
    folds = loco_folds(dataset, evaluation_only={"turev"})
    assert [sorted(set(corpus[test])) for _, test in folds] == [["emodb"], ["nemo"], ["turev"]]
    assert all("turev" not in set(corpus[train]) for train, _ in folds)
    assert sorted(set(corpus[folds[2][0]])) == ["emodb", "nemo"]


def test_default_model_recipe_scores_each_held_out_corpus_through_the_shared_loop(tmp_path):
    """``finetune.make_default.loco_predictions``: one ``finetune.cv`` run per head, a UAR per held-out corpus."""
    from finetune import make_default, probe
    from tests.tiny_models import save_tiny_wav2vec2

    names, roots = _three_corpora(tmp_path)
    dataset = load_corpora(names, roots, label_map="four-class")
    backbone = str(save_tiny_wav2vec2(tmp_path / "backbone", kind="wav2vec2"))
    options = probe.options_from({**make_default.RECIPE, "backbone": backbone, "adapt": False,
                                  "cache_dir": str(tmp_path / "cache")})
    evaluation = make_default.loco_predictions(dataset, options, {"turev"})
    single = evaluation["single"]
    assert list(evaluation["per_corpus"]) == ["emodb", "nemo", "turev"]
    assert [v["single clip"] for v in evaluation["per_corpus"].values()] == [f["uar"] for f in single.per_fold]
    assert single.summary["uar"]["std"] == pytest.approx(np.std([f["uar"] for f in single.per_fold], ddof=1))
    assert evaluation["adapted"].pooled["n"] == single.pooled["n"] == len(dataset)
