"""The Annotate tab's rules without a server: ``AnnotationDesk`` over a real store and a tiny model.

Each test is one promise of issue #14 to a crowd of annotators: a repeated save adds nothing, the
model's guess never pre-selects and can be hidden, the number keys keep their meaning per queue,
clips that still need labels come first, "n of N" progress, an "all done" that names the queue,
agreement per queue without Demo corrections, time spans, and clips stored without predicting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser.model import Predictor
from ser.store import AnnotationStore, InvalidRequest
from ser.ui.annotation_session import AnnotationDesk, NothingOnScreen, keys_text, progress_text
from ser.ui.clip_sources import SourceClip
from tests.tiny_models import LABELS, save_tiny_wav2vec2


def noise(seed: int, seconds: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(int(16000 * seconds))).astype(np.float32).clip(-1, 1)


class CountingPredictor:
    """The real Predictor, counting the clips it is asked to predict (to see when predictions happen)."""

    def __init__(self, predictor: Predictor) -> None:
        self.inner, self.calls = predictor, 0
        self.labels, self.version = predictor.labels, predictor.version

    def predict(self, waveform: np.ndarray) -> dict[str, float]:
        self.calls += 1
        return self.inner.predict(waveform)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SER_RUNTIME", "eager")
        folder = save_tiny_wav2vec2(tmp_path_factory.mktemp("model") / "tiny-peaked", LABELS, init_std=0.5)
        return Predictor.from_pretrained(folder)


@pytest.fixture
def model(predictor: Predictor) -> CountingPredictor:
    return CountingPredictor(predictor)


@pytest.fixture
def store(tmp_path: Path):
    with AnnotationStore(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def desk(store: AnnotationStore, model: CountingPredictor) -> AnnotationDesk:
    return AnnotationDesk(store, lambda: model)


def source_clips(n: int, first_seed: int = 0) -> list[SourceClip]:
    return [SourceClip(name=f"clip{i}.wav", decode=lambda i=i: noise(first_seed + i)) for i in range(n)]


def test_a_repeated_save_adds_no_row_and_the_count_does_not_jump(desk: AnnotationDesk, store) -> None:
    """Issue #14, problem 4: a double click on Save stored two rows for one clip and annotator."""
    desk.add_clips(source_clips(3), "q", "folder", fill=False)
    on_screen = desk.next("ann", "q", "fifo", None).state
    first = desk.save("ann", "q", "fifo", on_screen, "sad")
    again = desk.save("ann", "q", "fifo", on_screen, "sad")  # the same page state, sent twice
    assert store.count_labels("ann") == 1 and len(store.labels_for(on_screen.sha)) == 1
    assert "saved **1** label" in first.message and "not saved twice" in again.message
    assert "saved **1** label" in again.message
    also = desk.save("ann", "q", "fifo", on_screen, "angry")  # a stale page with another pick: still no row
    assert store.count_labels("ann") == 1 and store.votes()[on_screen.sha]["ann"][1] == "sad"
    assert "not saved twice" in also.message

    edited = store.save_queue_label(on_screen.sha, "ann", "angry", "q", edit=True)  # an explicit edit replaces it
    assert edited.added and store.count_labels("ann") == 1 and store.votes()[on_screen.sha]["ann"][1] == "angry"


def test_undo_then_save_is_the_edit_that_stores_a_new_label(desk: AnnotationDesk, store) -> None:
    desk.add_clips(source_clips(2), "q", "folder", fill=False)
    shown = desk.next("ann", "q", "fifo", None)
    after = desk.save("ann", "q", "fifo", shown.state, "sad")
    back = desk.undo("ann", "q", "fifo", after.state, own_labels_only=True)
    assert back.state.sha == shown.state.sha and store.count_labels("ann") == 0
    desk.save("ann", "q", "fifo", back.state, "happy")
    assert store.votes()[shown.state.sha]["ann"][1] == "happy" and store.count_labels("ann") == 1
    with pytest.raises(NothingOnScreen, match="no label saved from this page"):
        desk.undo("ann", "q", "fifo", None, own_labels_only=True)


def test_every_clip_is_served_fresh_with_the_guess_shown_but_never_picked(desk: AnnotationDesk, store) -> None:
    """Issue #14, problem 10 (anchoring): the model's guess was always pre-selected."""
    desk.add_clips(source_clips(2), "shown", "folder", fill=False)
    served = desk.next("ann", "shown", "fifo", None)
    assert set(served.suggestion) == set(LABELS)  # shown, with its score
    assert served.message == "ann, you have saved **0** labels."
    with pytest.raises(NothingOnScreen, match="Pick an emotion"):
        desk.save("ann", "shown", "fifo", served.state, None)  # nothing is picked for the annotator

    desk.add_clips(source_clips(2, first_seed=10), "blind", "folder", fill=False)
    desk.configure("blind", hide_suggestion=True)
    hidden = desk.next("ann", "blind", "fifo", None)
    assert hidden.suggestion is None and hidden.state.probs is not None  # kept with the label, not shown
    desk.save("ann", "blind", "fifo", hidden.state, "angry")
    (label,) = store.labels_for(hidden.state.sha)
    assert set(label["model_probs"]) == set(LABELS) and label["queue"] == "blind"


def test_the_number_keys_keep_their_meaning_when_the_model_changes(store, predictor, tmp_path: Path) -> None:
    """Issue #14, problem 10: the number keys changed meaning when the model's label set changed."""
    old_model = predictor
    desk = AnnotationDesk(store, lambda: current[0])
    current = [old_model]
    desk.add_clips(source_clips(2), "stable", "folder", fill=False)
    assert desk.next("ann", "stable", "fifo", None).keys == LABELS
    other = save_tiny_wav2vec2(tmp_path / "tiny-other", ["calm", "fearful", "boredom", "sad", "happy"])
    current[0] = Predictor.from_pretrained(other)
    served = desk.next("ann", "stable", "fifo", None)
    assert served.keys == LABELS  # the queue's keys, fixed when it was made
    assert set(served.suggestion) == {"calm", "fearful", "boredom", "sad", "happy"}  # the new model's guess
    assert keys_text(served.keys).startswith("**Keys:** `1` neutral · `2` happy")
    desk.add_clips(source_clips(1, first_seed=50), "new-queue", "folder", fill=False)
    assert desk.next("ann", "new-queue", "fifo", None).keys[0] == "calm"  # a new queue takes the new model's


def test_clips_that_still_need_labels_are_served_first(desk: AnnotationDesk, store) -> None:
    desk.add_clips(source_clips(3), "pairs", "folder", fill=False)
    desk.configure("pairs", min_annotators=2)
    first = desk.next("a", "pairs", "fifo", None).state
    desk.save("a", "pairs", "fifo", first, "sad")
    desk.save("b", "pairs", "fifo", desk.next("b", "pairs", "fifo", None).state, "sad")
    served = desk.next("c", "pairs", "fifo", None)  # fifo alone would serve the first clip again
    assert served.state.sha != first.sha
    seen = [served.state.sha]
    state = desk.save("c", "pairs", "fifo", served.state, "happy").state
    seen.append(state.sha)
    state = desk.save("c", "pairs", "fifo", state, "happy").state
    assert state.sha == first.sha and len(set(seen)) == 2  # the clip with enough labels comes last, not never
    with pytest.raises(InvalidRequest, match="1 to 100"):
        desk.configure("pairs", min_annotators=0)


def test_progress_is_n_of_N_and_all_done_names_the_queue(desk: AnnotationDesk, store) -> None:
    """Issue #14, problem 7: "No clips left for carol in queue default" read as "finished"."""
    desk.add_clips(source_clips(3), "trio", "folder", fill=False)
    desk.add_clips(source_clips(2, first_seed=20), "other", "folder", fill=False)
    served = desk.next("carol", "trio", "fifo", None)
    assert (served.progress.position, served.progress.total) == (1, 3)
    assert progress_text(served.progress) == "Clip **1 of 3** in queue **trio** for carol"
    served = desk.save("carol", "trio", "fifo", served.state, "sad")
    served = desk.skip("carol", "trio", "fifo", served.state)
    assert served.progress.position == 3
    done = desk.save("carol", "trio", "fifo", served.state, "happy")
    assert done.finished and done.progress.finished
    assert "All done: carol, you have finished queue **trio** (3 clips)" in done.info
    assert progress_text(done.progress) == "**3 of 3** in queue **trio**: finished for carol."
    assert desk.next("carol", "other", "fifo", None).progress.total == 2  # another queue: its own count
    assert desk.queues() == ["other", "trio"]


def test_agreement_is_per_queue_over_clips_with_two_labels_without_demo_corrections(desk: AnnotationDesk, store) -> None:
    """Issue #14, problem 7: agreement mixed Demo corrections with queue clips and counted one-label clips."""
    desk.add_clips(source_clips(3), "q1", "folder", fill=False)
    desk.add_clips(source_clips(2, first_seed=30), "q2", "folder", fill=False)
    q1 = [desk.next(name, "q1", "fifo", None).state for name in ("a", "b", "c")]
    assert q1[0].sha == q1[1].sha == q1[2].sha
    for name, label in zip("abc", ("sad", "sad", "happy")):
        desk.save(name, "q1", "fifo", q1["abc".index(name)], label)
    second = desk.next("a", "q1", "fifo", None).state
    desk.save("a", "q1", "fifo", second, "angry")  # one label: not agreement
    store.add_label(second.sha, "demo-visitor", "angry")  # a Demo correction on a queue clip
    q2 = desk.next("a", "q2", "fifo", None).state
    desk.save("a", "q2", "fifo", q2, "neutral")
    desk.save("b", "q2", "fifo", desk.next("b", "q2", "fifo", None).state, "happy")

    view = desk.agreement("q1")
    assert [row["clip"] for row in view.clip_rows] == [q1[0].sha[:12]]
    (row,) = view.clip_rows
    assert (row["labels"], row["majority"], row["agreement"]) == (3, "sad", pytest.approx(0.667, abs=1e-3))
    people = {r["annotator"]: r for r in view.annotator_rows}
    assert "demo-visitor" not in people and "over **1** clips" in view.figures and "queue **q1**" in view.figures
    assert people["a"]["progress"] == "2 of 3" and people["a"]["labels"] == 2
    assert people["a"]["agrees with majority"] == 1.0 and people["c"]["agrees with majority"] == 0.0
    q2_view = desk.agreement("q2")
    assert len(q2_view.clip_rows) == 1 and q2_view.clip_rows[0]["majority"] == "(tie)"
    assert len(desk.agreement(None).clip_rows) == 2  # every queue, still without the correction
    empty = AnnotationDesk(store, desk._predictor).agreement("nobody-here")
    assert "none yet" in empty.figures and not empty.clip_rows


def test_a_time_span_of_a_long_clip_is_labelled_with_start_and_end(desk: AnnotationDesk, store) -> None:
    desk.add_clips([SourceClip(name="long.wav", decode=lambda: noise(99, seconds=6.0))], "long", "folder", fill=False)
    state = desk.next("ann", "long", "fifo", None).state
    said = desk.label_span("ann", state, "angry", 1.5, 3.25)
    desk.label_span("ann", state, "sad", 0.0, 1.0, note="sigh")
    assert "1.50-3.25 s: angry" in said
    spans = store.regions_for(state.sha)
    assert [(r["start_s"], r["end_s"], r["label"], r["queue"]) for r in spans] == [
        (0.0, 1.0, "sad", "long"), (1.5, 3.25, "angry", "long")]
    for start, end in ((3.0, 2.0), (-1.0, 2.0), (5.0, 6.5)):
        with pytest.raises(InvalidRequest, match="inside the clip"):
            desk.label_span("ann", state, "sad", start, end)
    assert store.count_labels("ann") == 0  # a span is not a whole-clip label


def test_clips_are_stored_without_predicting_and_predicted_when_served(desk: AnnotationDesk, store, model) -> None:
    """Issue #14, problem 8: every clip of a folder was predicted before the first was served."""
    report = desk.add_clips(source_clips(10), "lazy", "folder", fill=False)
    assert report.added == 10 and model.calls == 0
    assert len(store.unpredicted(model.version, "lazy")) == 10
    served = desk.next("ann", "lazy", "fifo", None)
    assert model.calls == 1 and set(served.suggestion) == set(LABELS)
    desk.next("other", "lazy", "fifo", None)
    assert model.calls == 1  # the stored guess is reused, not predicted again
    assert desk.fill_predictions("lazy") == 9 and model.calls == 10 and not store.unpredicted(model.version)

    shas = [row[0] for row in store._read("SELECT sha256 FROM clips WHERE queue = 'lazy' ORDER BY rowid")]
    confidence = {sha: max(store.prediction_for(sha).values()) for sha in shas}
    expected = sorted(confidence, key=confidence.get)
    order, state = [], None
    for _ in range(10):
        state = desk.next("lc", "lazy", "least_confident", None).state if state is None else \
            desk.skip("lc", "lazy", "least_confident", state).state
        order.append(state.sha)
    assert order == expected  # least-confident order over the filled-in guesses


def test_the_background_pass_fills_in_every_guess(desk: AnnotationDesk, store, model) -> None:
    desk.add_clips(source_clips(4), "bg", "folder")  # fill=True: a background thread predicts them
    thread = desk._filler
    if thread is not None:
        thread.join(timeout=120)
    assert not store.unpredicted(model.version, "bg") and model.calls == 4


def test_imported_labels_count_once_and_unknown_ones_are_reported(desk: AnnotationDesk, store) -> None:
    clips = [SourceClip(name="a.wav", decode=lambda: noise(1), label="angry"),
             SourceClip(name="b.wav", decode=lambda: noise(2), label="not-an-emotion", from_table=True),
             SourceClip(name="c.wav", decode=lambda: np.zeros(0, np.float32))]
    report = desk.add_clips(clips, "csv", "table.csv", fill=False)
    assert report.added == 1 and len(report.failures) == 2 and "not an emotion this app knows" in report.text
    assert "not-an-emotion" not in report.text  # a table's cells are never echoed
    desk.add_clips(clips[:1], "csv", "table.csv", fill=False)  # the same source added again
    assert store.count_labels("import:table.csv") == 1


def test_asking_about_a_queue_name_writes_nothing(desk: AnnotationDesk, store) -> None:
    assert desk.settings("made-up-name").keys == LABELS  # what its keys would be
    assert store.queue_settings("made-up-name") is None and "made-up-name" not in store.list_queues()
    assert desk.next("ann", "made-up-name", "fifo", None).finished
    assert store.queue_settings("made-up-name") is None


def test_a_big_folder_can_be_annotated_while_it_is_still_being_added(desk: AnnotationDesk, store, model) -> None:
    steps = desk.add_clips_stepwise(source_clips(60), "big", "folder", fill=False, every=25)
    first = next(steps)
    assert (first.added, first.finished) == (1, False) and "1** so far" in first.text
    served = desk.next("ann", "big", "fifo", None)  # the other 59 are not stored yet
    assert served.state.sha is not None and served.progress.total == 1 and model.calls == 1
    reports = list(steps)
    assert [report.added for report in reports] == [25, 50, 60] and reports[-1].finished
    assert "Added **60** clips to queue **big** (now 60 clips)." in reports[-1].text and model.calls == 1


def test_a_clip_too_short_to_judge_is_refused_when_added_and_the_rest_are_served(desk: AnnotationDesk, store) -> None:
    """Issue #14, problem 10: a 0.1 s clip got a confident guess; in a queue it must not block the annotator."""
    clips = [SourceClip(name="click.wav", decode=lambda: noise(7, seconds=0.1)), *source_clips(2)]
    report = desk.add_clips(clips, "q", "folder", fill=False)
    assert report.added == 2 and len(report.failures) == 1
    assert "click.wav" in report.failures[0] and "too short to judge" in report.failures[0]
    served = desk.next("ann", "q", "fifo", None)
    assert served.state.sha is not None and store.count_clips("q") == 2
