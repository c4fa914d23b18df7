"""The store's queue under change (frontiers, private clips) and its deletion and retention tools."""

from __future__ import annotations

import random

import pytest

from ser.store import AnnotationStore
from tests.test_store import clips, tone


@pytest.fixture
def store(tmp_path) -> AnnotationStore:
    with AnnotationStore(tmp_path / "store") as opened:
        yield opened


def brute_force_next(store: AnnotationStore, annotator: str, queue: str | None, order: str) -> str | None:
    """What next_clip must answer, computed the slow obvious way."""
    rows = store._read("SELECT rowid, sha256, rank, queue, private FROM clips ORDER BY rowid")
    done = {r[0] for r in store._read(
        "SELECT sha256 FROM labels WHERE annotator = ? AND undone_at IS NULL UNION SELECT sha256 FROM skips "
        "WHERE annotator = ?", (annotator, annotator))}
    pending = [r for r in rows if not r["private"] and (queue is None or r["queue"] == queue) and r["sha256"] not in done]
    key = (lambda r: r["rowid"]) if order == "fifo" else (lambda r: (r["rank"], r["rowid"]))
    return min(pending, key=key)["sha256"] if pending else None


@pytest.mark.parametrize("order", ["fifo", "least_confident"])
def test_frontier_never_hides_a_clip(store, order):
    """Random saves, skips, undos, new clips and changed predictions: next_clip and count_remaining
    always agree with a brute-force answer (the frontier is only a shortcut)."""
    rng = random.Random(7)
    shas = clips(store, 12, queue="q")
    for step in range(150):
        action = rng.choice(["label", "label", "skip", "undo", "predict", "add", "add_other"])
        who = rng.choice(["ann", "bob"])
        served = store.next_clip(who, "q", order)
        assert served == brute_force_next(store, who, "q", order), (step, action)
        assert store.next_clip(who, None, order) == brute_force_next(store, who, None, order)
        if action == "label" and served:
            store.add_label(served, who, "sad")
        elif action == "skip" and served:
            store.skip(served, who)
        elif action == "undo":
            store.undo_last(who)
        elif action == "predict":
            store.set_prediction(rng.choice(shas), "v1", {"sad": rng.random()})
        elif action == "add":
            shas.append(store.add_clip(tone(1000 + step), queue="q"))
        else:
            store.add_clip(tone(2000 + step), queue="other")
        done = {r[0] for r in store._read("SELECT sha256 FROM labels WHERE annotator = ? AND undone_at IS NULL "
                                          "UNION SELECT sha256 FROM skips WHERE annotator = ?", (who, who))}
        assert store.count_remaining(who, "q") == len([s for s in shas if s not in done])


def test_private_clips_are_never_served_until_published(store):
    public, = clips(store, 1, queue="q")
    private = store.add_clip(tone(50), private=True, session="s1")
    assert store.next_clip("ann") == public and store.count_remaining("ann") == 1
    store.add_label(public, "ann", "sad")
    assert store.next_clip("ann") is None and store.count_private() == 1
    store.add_clip(tone(50), queue="q")  # the same audio queued by someone else stays private
    assert store.next_clip("ann") is None
    assert store.publish_clips("review") == 1
    assert store.next_clip("ann") == private and store.count_remaining("ann", "review") == 1


def test_visitor_deletes_their_session_and_admin_deletes_annotator_and_old_clips(store, tmp_path):
    mine = store.add_clip(tone(1), private=True, session="s1")
    store.add_label(mine, "visitor", "sad")
    theirs = store.add_clip(tone(2), private=True, session="s2")
    store.add_label(theirs, "other", "happy")
    path = store.clip_path(mine)
    assert store.delete_session("s1") == 1
    assert not path.exists() and store.count_labels("visitor") == 0
    with pytest.raises(KeyError):
        store.clip_info(mine)
    assert store.delete_session("s1") == 0 and store.clip_info(theirs)

    queued, = clips(store, 1, queue="q")
    store.add_label(queued, "other", "sad")
    assert store.delete_annotator("other") == (2, 1)  # both labels; their private recording, not the queued clip
    assert store.clip_info(queued) and store.count_labels("other") == 0
    store._conn().execute("UPDATE clips SET created_at = '2000-01-01T00:00:00.000000+00:00' WHERE sha256 = ?",
                          (queued,))
    assert store.purge_older_than(30) == 1 and store.count_clips() == 0
    with pytest.raises(ValueError):
        store.purge_older_than(0)
    changes, _ = store.changes_since()
    assert {row["sha256"] for row in changes["deletions"]} >= {mine, theirs, queued}
    assert all("audio" not in row for row in changes["deletions"])


def test_rowids_never_reused_after_deleting_the_newest_clip(store):
    first, second = clips(store, 2)
    _, cursor = store.changes_since()
    store.delete_clips([second], "test")
    third = store.add_clip(tone(99))
    changes, _ = store.changes_since(cursor)
    assert [row["sha256"] for row in changes["clips"]] == [third]  # a replica's cursor still sees it


def test_previous_model_is_what_served_before(store, tmp_path):
    for version in ("v1", "v2"):
        store.register_model(version, tmp_path / version)
    assert store.previous_model() is None
    store.set_active("v1")
    store.set_active("v2")
    assert store.previous_model()["version"] == "v1"
    store.set_active("v1")
    assert store.previous_model()["version"] == "v2"


def test_undo_is_limited_to_the_given_label_ids(store):
    sha, = clips(store, 1)
    mine = store.add_label(sha, "ann", "sad")
    other_page = store.add_label(sha, "ann", "happy")
    assert store.undo_last("ann", among=[mine]) == mine
    assert store.undo_last("ann", among=[]) is None
    assert [row["id"] for row in store.labels_for(sha)] == [other_page]


def test_names_are_counted_as_they_are_stored(store):
    sha, = clips(store, 1)
    store.add_label(sha, "ann\x07" + "x" * 200, "sad")
    assert store.count_labels("ann\x07" + "x" * 200) == 1
