"""The annotation store's API: clips, labels, the queue, agreement, model versions, datasets."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import soundfile as sf

from ser.audio import InvalidAudio
from ser.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AnnotationStore,
    StoreError,
    fleiss_kappa,
    krippendorff_alpha,
)


def tone(seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32).clip(-1, 1)


@pytest.fixture
def store(tmp_path) -> AnnotationStore:
    with AnnotationStore(tmp_path / "store") as opened:
        yield opened


def clips(store: AnnotationStore, n: int, **kwargs) -> list[str]:
    return [store.add_clip(tone(i), source=f"clip{i}.wav", **kwargs) for i in range(n)]


# -- clips ---------------------------------------------------------------------------------------


def test_clip_round_trips_exactly_and_dedups(store):
    wave = tone(1)
    sha = store.add_clip(wave, source="a.wav", speaker="03")
    again = store.add_clip(wave, source="b.wav")
    assert sha == again and store.count_clips() == 1
    loaded = store.load_clip(sha)
    assert loaded.dtype == np.float32 and loaded.shape == wave.shape
    assert np.max(np.abs(loaded - wave)) <= 1 / 32768  # PCM16 quantisation only
    assert store.add_clip(loaded) == sha  # stored samples hash to the same id
    info = store.clip_info(sha)
    assert info["speaker"] == "03" and info["source"] == "a.wav" and info["duration_s"] == pytest.approx(0.5)
    assert sf.info(str(store.clip_path(sha))).samplerate == 16000


def test_user_file_names_never_become_paths(store):
    sha = store.add_clip(tone(2), source="../../../etc/passwd\x00\n")
    path = store.clip_path(sha)
    assert path.is_relative_to(store.root / "clips") and path.name == f"{sha}.flac"
    assert store.clip_info(sha)["source"] == "passwd"
    with pytest.raises(ValueError):
        store.clip_path("../" + sha[3:])
    with pytest.raises(KeyError):
        store.clip_path("0" * 64)


@pytest.mark.parametrize(
    "bad", [np.zeros(0, np.float32), np.zeros((2, 100), np.float32), np.array([0.1, np.nan], np.float32), np.ones(10, np.int16)]
)
def test_invalid_waveforms_are_rejected(store, bad):
    with pytest.raises(InvalidAudio):
        store.add_clip(bad)
    assert store.count_clips() == 0


# -- labels --------------------------------------------------------------------------------------


def test_labels_are_canonical_counted_and_undone(store):
    a, b = clips(store, 2)
    first = store.add_label(a, "ann", "Anger", note="loud", model_version="v1", model_probs={"angry": 0.6, "sad": 0.4})
    store.add_label(b, "ann", "sad")
    store.add_label(a, "bob", "happy")
    assert store.count_labels() == 3 and store.count_labels("ann") == 2
    (label,) = store.labels_for(a)[:1]
    assert (label["id"], label["label"], label["note"], label["model_probs"]) == (first, "angry", "loud", {"angry": 0.6, "sad": 0.4})
    undone = store.undo_last("ann")
    assert undone is not None and [l["label"] for l in store.labels_for(b)] == []
    assert len(store.labels_for(b, include_undone=True)) == 1
    assert store.count_labels("ann") == 1
    assert store.undo_last("ann") == first and store.undo_last("ann") is None
    assert store.count_labels() == 1


def test_bad_labels_and_unknown_clips_are_refused(store):
    (sha,) = clips(store, 1)
    with pytest.raises(ValueError, match="unknown emotion"):
        store.add_label(sha, "ann", "hungry")
    with pytest.raises(ValueError, match="annotator"):
        store.add_label(sha, "  \n", "sad")
    with pytest.raises(KeyError):
        store.add_label("f" * 64, "ann", "sad")
    assert store.count_labels() == 0


# -- the queue -----------------------------------------------------------------------------------


def test_next_clip_serves_each_annotator_unlabelled_unskipped_clips(store):
    a, b, c = clips(store, 3, queue="batch1")
    other = store.add_clip(tone(99), queue="batch2")
    assert store.next_clip("ann", queue="batch1") == a
    store.add_label(a, "ann", "sad")
    store.skip(b, "ann")
    assert store.next_clip("ann", queue="batch1") == c
    assert store.next_clip("bob", queue="batch1") == a  # others still get every clip
    assert store.count_remaining("ann", queue="batch1") == 1
    store.add_label(c, "ann", "happy")
    assert store.next_clip("ann", queue="batch1") is None
    assert store.next_clip("ann") == other  # no queue: any clip
    store.undo_last("ann")
    assert store.next_clip("ann", queue="batch1") == c  # an undone label puts the clip back


def test_least_confident_order_and_max_labels(store):
    a, b, c = clips(store, 3)
    store.set_prediction(a, "v1", {"angry": 0.9, "sad": 0.1})
    store.set_prediction(b, "v1", {"angry": 0.4, "sad": 0.35, "happy": 0.25})
    assert store.prediction_for(b) == {"angry": 0.4, "sad": 0.35, "happy": 0.25}
    assert store.prediction_for(c) is None
    assert store.next_clip("ann", order="least_confident") == b
    store.skip(b, "ann")
    assert store.next_clip("ann", order="least_confident") == a
    store.skip(a, "ann")
    assert store.next_clip("ann", order="least_confident") == c  # unpredicted clips come last
    store.add_label(b, "x", "sad")
    store.add_label(b, "y", "sad")
    assert store.next_clip("bob", order="least_confident", max_labels=2) == a
    with pytest.raises(ValueError):
        store.next_clip("ann", order="random")


# -- agreement -----------------------------------------------------------------------------------


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert fleiss_kappa([[3, 0], [2, 0]]) is None  # one category only: undefined
    assert fleiss_kappa([]) is None


def test_agreement_figures_on_a_hand_computed_example(store):
    # Two annotators, four clips: (a,a) (a,b) (b,b) (b,b) with a=angry, b=sad.
    # Fleiss: P_i = 1,0,1,1 -> 0.75; p = 3/8, 5/8 -> Pe = 34/64; kappa = (0.75-34/64)/(30/64) = 7/15.
    # Krippendorff (nominal): o_ab = o_ba = 1, n_a = 3, n_b = 5, n = 8 -> 1 - 7*2/(2*15) = 8/15.
    shas = clips(store, 5)
    for sha, (x, y) in zip(shas, [("angry", "angry"), ("angry", "sad"), ("sad", "sad"), ("sad", "sad")]):
        store.add_label(sha, "ann", x)
        store.add_label(sha, "bob", y)
    store.add_label(shas[4], "ann", "happy")  # single-rated clips do not count for kappa/alpha
    assert store.fleiss_kappa() == pytest.approx(7 / 15)
    assert store.krippendorff_alpha() == pytest.approx(8 / 15)
    per_clip = store.clip_agreement()
    assert per_clip[shas[0]] == {"n_labels": 2, "majority": "angry", "agreement": 1.0}
    assert per_clip[shas[1]] == {"n_labels": 2, "majority": None, "agreement": 0.5}
    stats = store.annotator_stats()
    assert stats["ann"] == {"labels": 5, "shared_clips": 4, "agreement": 0.75}
    assert stats["bob"]["labels"] == 4


def test_relabel_by_the_same_annotator_counts_once(store):
    (sha,) = clips(store, 1)
    store.add_label(sha, "ann", "angry")
    store.add_label(sha, "ann", "sad")  # changed their mind
    store.add_label(sha, "bob", "sad")
    assert store.clip_agreement()[sha] == {"n_labels": 2, "majority": "sad", "agreement": 1.0}
    assert store.krippendorff_alpha() is None  # one value in the data: undefined


def test_krippendorff_alpha_handles_missing_ratings():
    nan = np.nan
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3.0]]
    # Krippendorff's two-coder nominal example pattern: compare to a direct computation.
    assert krippendorff_alpha(data) == pytest.approx(_alpha_nominal(np.array(data)))


def _alpha_nominal(data: np.ndarray) -> float:
    values = np.unique(data[~np.isnan(data)])
    coincidence = np.zeros((len(values), len(values)))
    for unit in data.T:
        rated = unit[~np.isnan(unit)]
        if len(rated) < 2:
            continue
        for i, c in enumerate(rated):
            for j, k in enumerate(rated):
                if i != j:
                    coincidence[values == c, values == k] += 1 / (len(rated) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    observed = coincidence.sum() - np.trace(coincidence)
    expected = (n_c.sum() ** 2 - (n_c**2).sum()) / (n - 1)
    return 1 - observed / expected


# -- model versions ------------------------------------------------------------------------------


def test_model_versions(store, tmp_path):
    assert store.active_model() is None and store.list_models() == []
    store.register_model("v1", tmp_path / "m1", {"uar": 0.61})
    store.register_model("v2", tmp_path / "m2", {"uar": 0.70})
    store.set_active("v1")
    store.set_active("v2")
    active = store.active_model()
    assert active["version"] == "v2" and active["metrics"] == {"uar": 0.70} and active["path"] == str(tmp_path / "m2")
    assert [m["active"] for m in store.list_models()] == [False, True]
    with pytest.raises(KeyError):
        store.set_active("v9")
    assert store.active_model()["version"] == "v2"


# -- training data -------------------------------------------------------------------------------


def labelled_store(store: AnnotationStore) -> list[str]:
    """Five clips: unanimous, 2-1 majority, tie, single label, unlabelled."""
    shas = clips(store, 5)
    votes = [
        {"ann": "angry", "bob": "angry", "cat": "angry"},
        {"ann": "sad", "bob": "sad", "cat": "happy"},
        {"ann": "sad", "bob": "happy"},
        {"cat": "neutral"},
        {},
    ]
    for sha, by in zip(shas, votes):
        for annotator, label in by.items():
            store.add_label(sha, annotator, label)
    return shas


def test_majority_policy(store):
    shas = labelled_store(store)
    resolution = store.resolve("majority")
    assert [(c.sha256, c.label) for c in resolution.clips] == [(shas[0], "angry"), (shas[1], "sad"), (shas[3], "neutral")]
    assert dict(resolution.skipped) == {"tie": 1, "unlabelled": 1}
    second = resolution.clips[1]
    assert second.annotators == ["ann", "bob", "cat"] and second.n_labels == 3 and second.agreement == pytest.approx(2 / 3)


def test_min_agreement_policy(store):
    shas = labelled_store(store)
    strict = store.resolve("min_agreement", min_agreement=0.9, min_labels=2)
    assert [c.sha256 for c in strict.clips] == [shas[0]]
    assert dict(strict.skipped) == {"low_agreement": 1, "tie": 1, "too_few_labels": 1, "unlabelled": 1}
    loose = store.resolve("min_agreement", min_agreement=0.6, min_labels=1)
    assert [c.sha256 for c in loose.clips] == [shas[0], shas[1], shas[3]]


def test_latest_trusted_policy(store):
    shas = labelled_store(store)
    trusted = store.resolve("latest_trusted", trusted=["bob"])
    assert [(c.sha256, c.label) for c in trusted.clips] == [(shas[0], "angry"), (shas[1], "sad"), (shas[2], "happy")]
    assert dict(trusted.skipped) == {"no_trusted_label": 1, "unlabelled": 1}
    everyone = store.resolve("latest_trusted")
    assert [c.label for c in everyone.clips] == ["angry", "happy", "happy", "neutral"]  # cat/bob voted last


def test_to_dataset_columns_and_audio(store):
    shas = labelled_store(store)
    ds = store.to_dataset("majority")
    assert ds.num_rows == 3
    assert ds.features["label"].names[ds[0]["label"]] == "angry"
    assert ds.features["audio"].sampling_rate == 16000
    row = ds[1]
    assert row["sha256"] == shas[1] and row["annotators"] == ["ann", "bob", "cat"] and row["n_labels"] == 3
    assert row["agreement"] == pytest.approx(2 / 3) and row["corpus"] == "store"
    audio, rate = sf.read(row["audio"]["path"], dtype="float32")
    assert rate == 16000 and np.array_equal(audio, store.load_clip(shas[1]))
    embedded = store.to_dataset("majority", embed_audio=True)[0]["audio"]
    assert embedded["bytes"] == store.clip_path(shas[0]).read_bytes()
    with pytest.raises(ValueError):
        store.to_dataset("vote")


# -- schema --------------------------------------------------------------------------------------


def test_migrates_a_version_1_store(tmp_path):
    root = tmp_path / "old"
    (root / "clips" / "ab").mkdir(parents=True)
    sha = "ab" + "0" * 62
    sf.write(root / "clips" / "ab" / f"{sha}.flac", np.zeros(1600, np.int16), 16000, format="FLAC")
    conn = sqlite3.connect(root / "annotations.sqlite")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, '2024-01-01')")
    conn.execute("INSERT INTO clips VALUES (?, ?, 0.1, 'old.wav', NULL, 'q', '2024-01-01')", (sha, f"clips/ab/{sha}.flac"))
    conn.execute("INSERT INTO labels (sha256, annotator, label, created_at) VALUES (?, 'ann', 'sad', '2024-01-01')", (sha,))
    conn.commit()
    conn.close()

    with AnnotationStore(root) as store:
        assert store.schema_version() == SCHEMA_VERSION > 1
        assert [l["label"] for l in store.labels_for(sha)] == ["sad"]
        assert store.next_clip("bob", queue="q") == sha
        store.skip(sha, "bob")
        assert store.next_clip("bob", queue="q") is None
        assert store.undo_last("ann") == 1 and store.count_labels() == 0
        assert store.load_clip(sha).shape == (1600,)
    with AnnotationStore(root) as again:  # reopening applies nothing twice
        assert again.schema_version() == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path):
    AnnotationStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "annotations.sqlite")
    conn.execute("INSERT INTO schema_version VALUES (?, 'future')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        AnnotationStore(tmp_path)
