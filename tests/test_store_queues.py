"""The store's queue records (schema 4): idempotent queue saves, minimum annotators, time spans,
agreement per queue, and a version-3 store migrated with its labels filed under their queues."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from ser.store import MIGRATIONS, SCHEMA_VERSION, AnnotationStore, InvalidRequest


def tone(seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32).clip(-1, 1)


@pytest.fixture
def store(tmp_path):
    with AnnotationStore(tmp_path / "store") as opened:
        yield opened


def test_a_queue_save_is_idempotent_even_when_two_requests_race(store) -> None:
    sha = store.add_clip(tone(1), queue="q")
    results = []
    barrier = threading.Barrier(4)

    def save() -> None:
        barrier.wait()
        results.append(store.save_queue_label(sha, "ann", "sad", "q"))

    threads = [threading.Thread(target=save) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.added for result in results) == [False, False, False, True]
    assert len({result.label_id for result in results}) == 1 and store.count_labels("ann") == 1
    other_queue = store.save_queue_label(sha, "ann", "sad", "elsewhere")  # the key is (annotator, clip, queue)
    assert other_queue.added
    edit = store.save_queue_label(sha, "ann", "angry", "q", edit=True)
    assert edit.added and len(store.labels_for(sha, include_undone=True)) == 3
    assert [label["label"] for label in store.labels_for(sha) if label["queue"] == "q"] == ["angry"]


def test_a_demo_correction_never_counts_in_a_queue(store) -> None:
    sha = store.add_clip(tone(2), queue="q")
    store.save_queue_label(sha, "a", "sad", "q")
    store.add_label(sha, "visitor", "happy")  # the Demo tab's correction: no queue
    assert store.votes()[sha].keys() == {"a", "visitor"}
    assert store.votes("q", queued=True)[sha].keys() == {"a"}
    assert store.queue_agreement("q").clips == {}  # one queue label is no agreement


def test_queue_agreement_counts_majorities_per_annotator(store) -> None:
    shas = [store.add_clip(tone(seed), queue="q") for seed in range(3)]
    votes = {0: {"a": "sad", "b": "sad", "c": "angry"}, 1: {"a": "happy", "b": "sad"}, 2: {"a": "neutral"}}
    for index, by in votes.items():
        for name, label in by.items():
            store.save_queue_label(shas[index], name, label, "q")
    result = store.queue_agreement("q")
    assert set(result.clips) == {shas[0], shas[1]}
    assert result.clips[shas[0]].majority == "sad" and result.clips[shas[1]].majority is None  # a tie
    a = result.annotators["a"]
    assert (a.labels, a.done, a.total, a.majority_clips, a.with_majority) == (3, 3, 3, 1, 1)
    assert result.annotators["c"].majority_share == 0.0
    assert result.kappa is not None and result.alpha is not None


def test_queue_records_keep_their_keys_and_options(store) -> None:
    made = store.ensure_queue("q", ["Anger", "sad"], suggestion="hide", min_annotators=3)
    assert (made.keys, made.suggestion, made.min_annotators) == (["angry", "sad"], "hide", 3)
    again = store.ensure_queue("q", ["calm", "happy"])  # keys are fixed once the queue has them
    assert again.keys == ["angry", "sad"] and again.suggestion == "hide"
    store.add_clip(tone(3), queue="clips-only")
    assert store.list_queues() == ["clips-only", "q"]
    with pytest.raises(InvalidRequest, match="suggestion"):
        store.ensure_queue("q", [], suggestion="preselect")
    with pytest.raises(InvalidRequest):
        store.ensure_queue("q", ["not-an-emotion"])


def test_min_annotators_serves_clips_under_the_minimum_first(store) -> None:
    shas = [store.add_clip(tone(seed), queue="q") for seed in range(3)]
    for name in ("a", "b"):
        store.save_queue_label(shas[0], name, "sad", "q")
    assert store.next_clip("c", "q", max_labels=2) == shas[1]
    assert store.next_clip("c", "q") == shas[0]


def test_region_labels_are_stored_with_start_and_end(store) -> None:
    sha = store.add_clip(tone(4, seconds=4.0), queue="long")
    store.add_region(sha, "ann", "angry", 2.0, 4.0, queue="long")
    store.add_region(sha, "ann", "sad", 0.5, 1.5)
    assert [(r["start_s"], r["end_s"], r["label"]) for r in store.regions_for(sha)] == [
        (0.5, 1.5, "sad"), (2.0, 4.0, "angry")]
    for start, end in ((1.0, 1.0), (3.0, 4.5), (float("nan"), 1.0)):
        with pytest.raises(InvalidRequest):
            store.add_region(sha, "ann", "sad", start, end)
    changes, cursor = store.changes_since()  # replicas (the Hub sync) get the spans too
    assert [(row["label"], row["start_s"]) for row in changes["regions"]] == [("angry", 2.0), ("sad", 0.5)]
    assert store.changes_since(cursor)[0]["regions"] == []
    store.delete_clips([sha], "test")
    assert store._read("SELECT COUNT(*) FROM regions")[0][0] == 0


def test_migrates_a_version_3_store_filing_labels_under_their_queues(tmp_path) -> None:
    root = tmp_path / "old"
    with AnnotationStore(root) as current:  # a clip file on disk, then the rows rebuilt at version 3
        queued = current.add_clip(tone(5), queue="q")
        demo = current.add_clip(tone(6), private=True)
    (root / "annotations.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (root / f"annotations.sqlite{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(root / "annotations.sqlite")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for number, steps in enumerate(MIGRATIONS[:3], start=1):
        for statement in steps:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 'then')", (number,))
    for sha, queue, private in ((queued, "q", 0), (demo, None, 1)):
        conn.execute("INSERT INTO clips (sha256, path, duration_s, queue, created_at, private) VALUES (?, ?, 0.5, ?, 'then', ?)",
                     (sha, f"clips/{sha[:2]}/{sha}.flac", queue, private))
        conn.execute("INSERT INTO labels (sha256, annotator, label, created_at) VALUES (?, 'ann', 'sad', 'then')", (sha,))
    conn.commit()
    conn.close()
    with AnnotationStore(root) as migrated:
        assert migrated.schema_version() == SCHEMA_VERSION == 4
        assert {label["queue"] for label in migrated.labels_for(queued)} == {"q"}
        assert {label["queue"] for label in migrated.labels_for(demo)} == {None}
        assert migrated.list_queues() == ["q"]
        assert migrated.save_queue_label(queued, "ann", "sad", "q").added is False  # the old label counts
