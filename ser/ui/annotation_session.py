"""The Annotate tab's logic, without Gradio: what an annotator is served, and what Save, Skip, Undo
and a time-span label do.

The tab's handlers only check roles, call one method here and turn the returned dataclass into
component updates, so the rules that keep a crowd's labels trustworthy are tested without a server:

- a save is idempotent per (annotator, clip, queue): a double click or a resent request adds no row;
- everything about a clip (pick, note, messages) is served fresh with the clip, never carried over;
- the model's guess is shown with its score or hidden (per queue), never pre-selected;
- the number keys pick the labels fixed with the queue, whatever labels the model in use has;
- clips that still need labels (a queue's minimum annotators per clip) are served first;
- clips are stored without predicting them: a guess is computed when a clip is served (or by a
  background pass that ranks the queue for least-confident order), so the first clip is served at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ser.audio import check_judgeable
from ser.model import Predictor
from ser.store import AnnotationStore, InvalidRequest, QueueAgreement, QueueSettings
from ser.ui.clip_sources import SourceClip, UnusableSource
from ser.ui.users import USER_ERRORS, labels_saved, message

IMPORT_PREFIX = "import:"  # labels that came with a queue's CSV or dataset are filed under this annotator
MAX_REPORTED_FAILURES = 5
MAX_KEYS = 9
FILL_DELAY_S = 1.0  # the background pass starts after this, so the first clip served has the CPU to itself
FILL_YIELD_S = 0.05  # and waits while a served clip is being predicted
HISTORY = 50  # saves per page that Undo can bring back

log = logging.getLogger(__name__)


class NothingOnScreen(InvalidRequest):
    """Save, Skip, Undo or a span label with nothing to act on; the message says what to do."""


@dataclass
class ClipOnScreen:
    """One browser session's place: the clip on screen and the labels saved from this page (Undo may
    only withdraw those when there is no login: a typed name proves nothing)."""

    sha: str | None = None
    queue: str | None = None  # the queue the clip is filed under: its labels are filed there too
    version: str | None = None
    probs: dict[str, float] | None = None
    duration_s: float = 0.0
    history: list[tuple[int, str]] = field(default_factory=list)  # (label id, clip)


@dataclass
class Progress:
    """Where an annotator stands in a queue: ``done`` of ``total`` clips labelled or skipped."""

    done: int
    total: int
    queue: str | None
    annotator: str

    @property
    def position(self) -> int:
        """The number of the clip on screen ("3 of 50"), or ``total`` when finished."""
        return min(self.done + 1, self.total)

    @property
    def finished(self) -> bool:
        return self.done >= self.total


@dataclass
class Served:
    """What the page shows after any action: the clip (or none: finished), its keys and the guess."""

    state: ClipOnScreen
    waveform: np.ndarray | None
    keys: list[str]  # the labels keys 1..9 pick, in order
    suggestion: dict[str, float] | None  # the model's guess to show (None: hidden for this queue, or no clip)
    info: str
    progress: Progress
    message: str  # what the last action did (the status line)

    @property
    def finished(self) -> bool:
        return self.state.sha is None


@dataclass
class AddReport:
    added: int
    failures: list[str]
    queue: str
    total: int
    finished: bool = True

    @property
    def text(self) -> str:
        if not self.finished:
            return (f"Adding clips to queue **{self.queue}**: **{self.added}** so far ({len(self.failures)} unusable); "
                    "the ones added can be annotated already.")
        text = f"Added **{self.added}** clips to queue **{self.queue}** (now {self.total} clips)."
        if self.failures:
            shown = "; ".join(self.failures[:MAX_REPORTED_FAILURES])
            extra = len(self.failures) - MAX_REPORTED_FAILURES
            text += f" Skipped {len(self.failures)} unusable: {shown}{f' and {extra} more' if extra > 0 else ''}."
        return text


def queue_key(value: str | None) -> str | None:
    """The queue a page value names; empty means every queue."""
    return (value or "").strip() or None


def keys_text(keys: list[str]) -> str:
    """The key map as one line, shown above the choices."""
    return "**Keys:** " + " · ".join(f"`{index}` {label}" for index, label in enumerate(keys[:MAX_KEYS], start=1))


def progress_text(progress: Progress) -> str:
    where = f"queue **{progress.queue}**" if progress.queue else "all queues"
    if progress.total == 0:
        return f"No clips in {where} yet."
    if progress.finished:
        return f"**{progress.total} of {progress.total}** in {where}: finished for {progress.annotator}."
    return f"Clip **{progress.position} of {progress.total}** in {where} for {progress.annotator}"


class AnnotationDesk:
    """The annotation workflow over one store; ``predictor`` gives the model in use (it can change)."""

    def __init__(self, store: AnnotationStore, predictor: Callable[[], Predictor]) -> None:
        self.store = store
        self._predictor = predictor
        self._filler: threading.Thread | None = None
        self._filler_lock = threading.Lock()
        self._fill_wanted = threading.Event()
        self._on_demand = 0  # guesses being computed for a served clip right now
        self._on_demand_lock = threading.Lock()

    # -- queues ---------------------------------------------------------------------------------

    def queues(self) -> list[str]:
        """Every queue in the store (what each new page lists), "default" when there are none."""
        return self.store.list_queues() or ["default"]

    def settings(self, queue: str | None) -> QueueSettings:
        """A queue's settings. A queue's keys are fixed (to the serving model's labels) when its first
        clips are added or it is first served; a name no clip is filed under is never written down,
        so a page asking about any name it likes leaves the store as it was."""
        labels = list(self._predictor().labels)
        if queue is None:
            return QueueSettings(name="", keys=labels)
        found = self.store.queue_settings(queue)
        if found is not None and found.keys:
            return found
        if found is None and self.store.count_clips(queue) == 0:
            return QueueSettings(name=queue, keys=labels)
        return self.store.ensure_queue(queue, labels)

    def configure(self, queue: str, *, hide_suggestion: bool | None = None,
                  min_annotators: int | None = None) -> QueueSettings:
        suggestion = None if hide_suggestion is None else ("hide" if hide_suggestion else "show")
        return self.store.ensure_queue(queue, self._predictor().labels, suggestion,
                                       None if min_annotators is None else int(min_annotators))

    def add_clips(self, clips: Iterable[SourceClip], queue: str, origin: str, *, fill: bool = True) -> AddReport:
        """Store clips under ``queue`` without predicting them (see ``add_clips_stepwise``); the final report."""
        for report in self.add_clips_stepwise(clips, queue, origin, fill=fill):
            pass
        return report

    def add_clips_stepwise(self, clips: Iterable[SourceClip], queue: str, origin: str, *, fill: bool = True,
                           every: int = 25) -> Iterator[AddReport]:
        """Store clips under ``queue`` without predicting them, reporting after the first clip and every
        ``every`` clips (each clip is committed on its own, so it can be served while the rest are
        added); the last report is the final one. With ``fill``, a background pass then predicts
        them for least-confident order.

        Clips that fail to decode are counted and named, never fatal: one broken file in a folder of
        hundreds must not lose the rest."""
        store = self.store
        store.ensure_queue(queue, self._predictor().labels)  # its key map: the model serving when it was made
        added, failures = 0, []
        for clip in clips:
            try:
                # refused now, not when served: a queue must never hold a clip no model can judge
                waveform = check_judgeable(clip.decode())
                sha = store.add_clip(waveform, source=clip.name, speaker=clip.speaker, queue=queue)
                if clip.label:
                    try:
                        store.save_queue_label(sha, f"{IMPORT_PREFIX}{origin}", clip.label, queue,
                                               note="label from the queue's source")
                    except InvalidRequest:
                        if clip.from_table:  # a table's cells are never echoed: it may be any file on the server
                            raise UnusableSource("its label is not an emotion this app knows") from None
                        raise
            except (*USER_ERRORS, OSError) as error:  # OSError: a file that cannot be read
                failures.append(f"{clip.name}: {message(error)}")
                continue
            added += 1
            if added == 1 or added % every == 0:
                yield AddReport(added=added, failures=list(failures), queue=queue, total=0, finished=False)
        if fill and added:
            self.fill_in_background()
        yield AddReport(added=added, failures=failures, queue=queue, total=store.count_clips(queue))

    # -- predictions ---------------------------------------------------------------------------

    def guess(self, sha: str, waveform: np.ndarray | None = None, *, background: bool = False) -> tuple[str, dict[str, float]]:
        """The serving model's guess for a stored clip: the stored one, else predicted now and stored."""
        model = self._predictor()
        probs = self.store.prediction_for(sha, model.version)
        if probs is None:
            if not background:
                with self._on_demand_lock:
                    self._on_demand += 1
            try:
                probs = model.predict(self.store.load_clip(sha) if waveform is None else waveform)
            finally:
                if not background:
                    with self._on_demand_lock:
                        self._on_demand -= 1
            self.store.set_prediction(sha, model.version, probs)
        return model.version, probs

    def fill_predictions(self, queue: str | None = None, limit: int | None = None, *, yield_to_serving: bool = False) -> int:
        """Predict stored clips the serving model has no guess for yet (oldest first); returns how many.

        ``yield_to_serving``: wait while a served clip is being predicted (the background pass)."""
        done = 0
        while limit is None or done < limit:
            batch = self.store.unpredicted(self._predictor().version, queue, limit=16)
            if not batch:
                break
            for sha in batch:
                if limit is not None and done >= limit:
                    break
                while yield_to_serving and self._on_demand:
                    time.sleep(FILL_YIELD_S)
                try:
                    self.guess(sha, background=yield_to_serving)
                except (*USER_ERRORS, OSError) as error:  # a clip deleted meanwhile, a full disk
                    log.warning("could not predict clip %s: %s", sha[:12], message(error))
                    return done
                done += 1
        return done

    def fill_in_background(self) -> None:
        """Start (or wake) the one background thread that fills in predictions."""
        with self._filler_lock:
            self._fill_wanted.set()
            if self._filler is None:
                self._filler = threading.Thread(target=self._fill_loop, name="ser-predict-queue", daemon=True)
                self._filler.start()

    def _fill_loop(self) -> None:
        try:  # below the page's own requests: a served clip's guess must not wait behind the queue's
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        time.sleep(FILL_DELAY_S)
        while True:
            with self._filler_lock:
                if not self._fill_wanted.is_set():
                    self._filler = None
                    return
                self._fill_wanted.clear()
            try:
                self.fill_predictions(yield_to_serving=True)
            except Exception:  # a background pass must never take anything down: log, wait for the next wake
                log.exception("background predictions stopped")

    # -- serving -------------------------------------------------------------------------------

    def progress(self, annotator: str, queue: str | None) -> Progress:
        total = self.store.count_public(queue)
        return Progress(done=total - self.store.count_remaining(annotator, queue), total=total, queue=queue,
                        annotator=annotator)

    def _pick(self, annotator: str, queue: str | None, order: str, settings: QueueSettings) -> str | None:
        """Clips that still need labels (fewer than the queue's minimum annotators) first, then the rest."""
        if settings.min_annotators > 1:
            sha = self.store.next_clip(annotator, queue, order, max_labels=settings.min_annotators)
            if sha is not None:
                return sha
        return self.store.next_clip(annotator, queue, order)

    def serve(self, annotator: str, queue: str | None, order: str, history: list[tuple[int, str]],
              message_text: str = "", sha: str | None = None) -> Served:
        """The next clip for ``annotator`` (or ``sha``, a clip Undo brings back), with everything
        about it fresh: no pick, no note, the keys of its queue and the guess as the queue wants it."""
        store = self.store
        settings = self.settings(queue)
        sha = sha or self._pick(annotator, queue, order or "fifo", settings)
        progress = self.progress(annotator, queue)
        if sha is None:
            where = f"queue **{queue}**" if queue else "any queue"
            done = (f"All done: {annotator}, you have finished {where} ({progress.total} clips). "
                    "Pick another queue, or come back when more clips are added.")
            return Served(ClipOnScreen(history=history), None, settings.keys, None, done, progress,
                          " ".join(part for part in (message_text, done) if part))
        waveform = store.load_clip(sha)
        version, probs = self.guess(sha, waveform)
        info = store.clip_info(sha)
        others = len({label["annotator"] for label in store.labels_for(sha)})
        remaining = progress.total - progress.done
        text = (f"Clip `{sha[:12]}` · {info['source'] or 'no name'} · {info['duration_s']:.1f} s · "
                f"labelled by {others} so far · {remaining} left for {annotator}")
        state = ClipOnScreen(sha=sha, queue=info["queue"], version=version, probs=probs,
                             duration_s=float(info["duration_s"]), history=history)
        shown = None if settings.suggestion == "hide" else probs
        return Served(state, waveform, settings.keys, shown, text, progress, message_text)

    def next(self, annotator: str, queue: str | None, order: str, state: ClipOnScreen | None) -> Served:
        history = list(state.history) if state else []
        return self.serve(annotator, queue, order, history, labels_saved(annotator, self.store.count_labels(annotator)))

    def save(self, annotator: str, queue: str | None, order: str, state: ClipOnScreen | None, label: str | None,
             note: str = "", *, edit: bool = False) -> Served:
        """Save the pick for the clip on screen, then serve the next clip. Saving a clip this annotator
        already has a standing label for in its queue adds nothing unless ``edit``. With no clip on
        screen there is nothing to save: Enter starts the queue (the keyboard alone is enough)."""
        if state is None or state.sha is None:
            return self.next(annotator, queue, order, state)
        if not label:
            raise NothingOnScreen("Pick an emotion first (number keys 1-9).")
        saved = self.store.save_queue_label(state.sha, annotator, label, state.queue, note=note or "",
                                            model_version=state.version, model_probs=state.probs, edit=edit)
        history = list(state.history)
        if saved.added:
            history = [*history, (saved.label_id, state.sha)][-HISTORY:]
            said = f"Saved **{saved.label}**."
        else:
            said = (f"Already saved **{saved.label}** for clip `{state.sha[:12]}`: not saved twice "
                    "(Undo, then save, to change it).")
        count = labels_saved(annotator, self.store.count_labels(annotator))
        return self.serve(annotator, queue, order, history, f"{said} {count}")

    def skip(self, annotator: str, queue: str | None, order: str, state: ClipOnScreen | None) -> Served:
        if state is None or state.sha is None:
            raise NothingOnScreen("No clip on screen: press 'Start / next clip' first.")
        self.store.skip(state.sha, annotator)
        return self.serve(annotator, queue, order, list(state.history), f"Skipped `{state.sha[:12]}`.")

    def undo(self, annotator: str, queue: str | None, order: str, state: ClipOnScreen | None,
             *, own_labels_only: bool) -> Served:
        """Withdraw this annotator's latest label and bring its clip back (with a fresh pick).

        ``own_labels_only``: only labels this page saved (no login: a typed name proves nothing)."""
        history = list(state.history) if state else []
        own = [label_id for label_id, _ in history] if own_labels_only else None
        undone = self.store.undo_last(annotator, among=own)
        if undone is None:
            raise NothingOnScreen(f"{annotator}, you have no label saved from this page to undo.")
        back = history.pop()[1] if history and history[-1][0] == undone else None
        said = f"Undid your last label. {labels_saved(annotator, self.store.count_labels(annotator))}"
        return self.serve(annotator, queue, order, history, said, sha=back)

    def label_span(self, annotator: str, state: ClipOnScreen | None, label: str | None, start_s: float | None,
                   end_s: float | None, note: str = "") -> str:
        """Label a time span of the clip on screen (it stays on screen: a long recording has several)."""
        if state is None or state.sha is None:
            raise NothingOnScreen("No clip on screen: press 'Start / next clip' first.")
        if not label:
            raise NothingOnScreen("Pick an emotion first (number keys 1-9).")
        if start_s is None or end_s is None:
            raise NothingOnScreen("Give the span's start and end in seconds.")
        self.store.add_region(state.sha, annotator, label, start_s, end_s, queue=state.queue, note=note or "")
        spans = self.store.regions_for(state.sha)
        listed = "; ".join(f"{r['start_s']:.2f}-{r['end_s']:.2f} s {r['label']} ({r['annotator']})" for r in spans)
        return f"Saved span **{float(start_s):.2f}-{float(end_s):.2f} s: {label}**. Spans of this clip: {listed}."

    # -- agreement -----------------------------------------------------------------------------

    def agreement(self, queue: str | None) -> AgreementView:
        return agreement_view(self.store, self.store.queue_agreement(queue))


@dataclass
class AgreementView:
    """A queue's agreement as the page shows it: a headline and two tables (lists of rows)."""

    figures: str
    clip_rows: list[dict[str, Any]]
    annotator_rows: list[dict[str, Any]]

    CLIP_COLUMNS = ("clip", "source", "labels", "majority", "agreement", "votes")
    ANNOTATOR_COLUMNS = ("annotator", "labels", "progress", "clips with a majority", "agrees with majority")


def agreement_view(store: AnnotationStore, result: QueueAgreement) -> AgreementView:
    where = f"queue **{result.queue}**" if result.queue else "all queues"
    fmt = lambda value: "undefined" if value is None else f"{value:.3f}"  # noqa: E731
    if not result.clips:
        figures = f"Agreement in {where} needs clips labelled by at least two people: none yet."
    else:
        figures = (f"In {where}, over **{len(result.clips)}** clips with ≥ 2 labels (Demo corrections not "
                   f"counted): Fleiss' κ = **{fmt(result.kappa)}**, Krippendorff's α (nominal) = **{fmt(result.alpha)}**.")
    clip_rows = [
        {
            "clip": sha[:12],
            "source": store.clip_info(sha)["source"],
            "labels": clip.n_labels,
            "majority": clip.majority or "(tie)",
            "agreement": round(clip.agreement, 3),
            "votes": "; ".join(f"{name}: {label}" for name, label in clip.votes.items()),
        }
        for sha, clip in result.clips.items()
    ]
    annotator_rows = [
        {
            "annotator": name,
            "labels": stats.labels,
            "progress": f"{stats.done} of {stats.total}",
            "clips with a majority": stats.majority_clips,
            "agrees with majority": None if stats.majority_share is None else round(stats.majority_share, 3),
        }
        for name, stats in sorted(result.annotators.items())
    ]
    return AgreementView(figures, clip_rows, annotator_rows)
