"""Demo tab: record or upload, see one bar per emotion, and correct the model in one click.

A correction is the most valuable thing a visitor gives, so the relabel panel sits right under
the bars, pre-selected to the model's guess (saving it unchanged confirms the guess), and saves
the clip with the model's probabilities and version so retraining knows what the model got wrong.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from ser.adaptation import MIN_CONTEXT_CLIPS, SpeakerContext
from ser.audio import SAMPLE_RATE
from ser.model import Predictor
from ser.labels import canonical
from ser.store import clip_sha256
from ser.ui.context import AppContext
from ser.ui.event_status import without_error_pills
from ser.ui.roles import login_of
from ser.ui.users import annotator_name, labels_saved, user_errors

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
TIMELINE_MIN_WINDOWS = 2  # a timeline needs a clip of at least this many windows (config window_s)
# Tableau 10 (Vega's default): one colour per emotion, in the model's label order.
PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac")
NEW_CLIP_JS = "() => ['', '', null]"  # a new clip: no note, no save message, no pick until it is predicted
NEW_ANSWER_JS = "() => ['', '']"  # a new answer for the clip: no note, no save message (the pick is its guess)


def model_markdown(predictor: Predictor) -> str:
    return f"**Model:** `{predictor.name}` · version `{predictor.version}` · {len(predictor.labels)} emotions"


def timeline_frame(timeline: list[dict[str, Any]]) -> pd.DataFrame:
    """Long format (one row per window and emotion) as ``gr.LinePlot`` wants it, at window centres."""
    rows = [
        {"time_s": round((window["start"] + window["end"]) / 2, 3), "emotion": label, "probability": prob}
        for window in timeline
        for label, prob in window["probs"].items()
    ]
    return pd.DataFrame(rows, columns=["time_s", "emotion", "probability"])


def analyse(model: Predictor, waveform: np.ndarray, window_s: float, hop_s: float,
            context: SpeakerContext | None = None,
            denoise: str | None = None) -> tuple[dict[str, float], list[dict[str, Any]] | None]:
    """Probabilities for a clip, and its timeline when it holds at least ``TIMELINE_MIN_WINDOWS``
    windows' worth of audio (a 4 s clip's "timeline" was two overlapping points: no movement to show).

    The probabilities are ``Predictor.predict``'s, whatever the clip's length, so the Demo tab gives
    the answer the Annotate tab, the HTTP API and the CLI give for the same clip; the timeline is
    only the plot of how it moves. ``context`` (the visitor's voice so far) adapts it to that voice;
    ``denoise`` is the visitor's "reduce background noise" choice (``Predictor.heard`` decides).
    """
    probs = model.predict(waveform, context=context, denoise=denoise)
    if len(waveform) / SAMPLE_RATE < TIMELINE_MIN_WINDOWS * window_s:
        return probs, None
    return probs, model.timeline(waveform, window_s, hop_s, denoise=denoise)


def emotion_colours(labels: list[str]) -> dict[str, str]:
    """A fixed colour per emotion (in the model's label order), shared by the plot and its legend."""
    return {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(labels)}


def legend_html(colours: dict[str, str]) -> str:
    """The timeline's legend as wrapping HTML: every emotion stays visible however narrow the screen."""
    items = "".join(
        f'<span class="ser-legend-item" style="display:inline-flex;align-items:center;gap:4px;margin:2px 12px 2px 0">'
        f'<span style="display:inline-block;width:12px;height:12px;border-radius:50%;background:{colour}"></span>'
        f"{html.escape(label)}</span>"
        for label, colour in colours.items()
    )
    return f'<div class="ser-legend" style="display:flex;flex-wrap:wrap">{items}</div>'


def adaptation_note(model: Predictor, speaker: SpeakerContext | None) -> str:
    """Say whether the answer was adapted to the visitor's voice, and when it will be."""
    if speaker is None:
        return "this model cannot adapt to a voice"
    if len(speaker) < MIN_CONTEXT_CLIPS:
        return f"voice adaptation starts at clip {MIN_CONTEXT_CLIPS} ({len(speaker)} so far)"
    return f"adapted to your voice ({len(speaker)} clips)"


def example_clips(folder: Path = EXAMPLES_DIR) -> tuple[list[list[str]], list[str]]:
    """The example clips and their captions (``labels.csv``'s label when it has one)."""
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3"})
    captions = {}
    labels_csv = folder / "labels.csv"
    if labels_csv.is_file():
        table = pd.read_csv(labels_csv)
        if {"path", "label"} <= set(table.columns):
            captions = {str(p): str(label) for p, label in zip(table["path"], table["label"])}
    named = []
    for clip in clips:
        relative = clip.relative_to(folder)
        name = " ".join([*relative.parent.parts, relative.stem])  # "nemo EB0 happy"
        label = captions.get(relative.as_posix())
        named.append(f"{name} ({label})" if label and label != relative.stem else name)
    return [[str(p)] for p in clips], named


def consent_text(retention_days: float | None) -> str:
    """What a visitor agrees to before their recording is kept: what, why, who sees it, for how long."""
    kept = f"for up to {retention_days:g} days" if retention_days else "until it is deleted"
    return (
        "I agree that saving keeps this recording and my label on this server "
        f"{kept}, to measure and retrain the emotion model. Annotators see it only if an admin adds it "
        "to a queue, and I can delete what I saved during this visit with 'Delete what I saved'."
    )


def session_of(request: gr.Request | None) -> str:
    """The browser session (one page load): the owner of what it saved."""
    session = getattr(request, "session_hash", None) if request is not None else None
    if not session:
        raise gr.Error("This action needs a browser session; reload the page.")
    return str(session)


@dataclass
class SavedLabel:
    """One label a browser session saved for one clip under one name (see ``SessionSaves``)."""

    label_id: int
    label: str
    note: str


class SessionSaves:
    """What each browser session saved for each clip, so that Save is idempotent.

    A double click, a second click after the answer, or a client that retries must not store a
    second row for the same (session, clip, annotator): the running count would jump and the clip
    would weigh twice. Saving the same label and note again is answered "already saved"; a changed
    label or note is an edit and replaces the earlier row (withdrawn as Undo withdraws it). Held in
    the server's memory (bounded), beside the lock that keeps the check and the write together even
    when two requests of one session arrive at once.
    """

    def __init__(self, limit: int = 20_000) -> None:
        self.lock = threading.Lock()
        self._saved: OrderedDict[tuple[str, str, str], SavedLabel] = OrderedDict()
        self._limit = limit

    def get(self, session: str, sha: str, name: str) -> SavedLabel | None:
        return self._saved.get((session, sha, name))

    def put(self, session: str, sha: str, name: str, saved: SavedLabel) -> None:
        self._saved[(session, sha, name)] = saved
        self._saved.move_to_end((session, sha, name))
        while len(self._saved) > self._limit:
            self._saved.popitem(last=False)

    def forget_label(self, label_id: int) -> None:
        """An undone label is no longer saved: saving that clip again stores it again."""
        with self.lock:
            for key in [key for key, saved in self._saved.items() if saved.label_id == label_id]:
                del self._saved[key]

    def forget_session(self, session: str) -> None:
        with self.lock:
            for key in [key for key in self._saved if key[0] == session]:
                del self._saved[key]


def _canonical_or_same(label: str) -> str:
    """The store's name for a label; an unknown one stays as it is (``add_label`` refuses it readably)."""
    try:
        return canonical(label)
    except KeyError:
        return label


def relabel_choices(model: Predictor, value: str | None = None) -> Any:
    """The relabel panel's choices are the serving model's emotions (a switch can change them)."""
    return gr.Radio(choices=model.labels, value=value)


def demo_page_state(context: AppContext) -> tuple[str, Any]:
    """What the Demo tab shows of the server's state, read when a page loads (not when the app was
    built): the serving model's line and its emotions in the relabel panel."""
    model = context.predictor
    return model_markdown(model), relabel_choices(model)


@dataclass
class DemoTab:
    """The Demo tab's components other parts of the page update."""

    model_info: gr.Markdown
    annotator: gr.Textbox
    relabel: gr.Radio


def build_demo_tab(context: AppContext) -> DemoTab:
    """Lay out the Demo tab inside the current Blocks.

    Order matters on a phone, where the two columns stack: the audio, the Predict button and the
    bars come first (the answer is above the fold), then the options and the model line; the
    correction panel is the second column (beside the bars on a wide screen, below them on a phone).
    """
    predictor = context.predictor
    saves = SessionSaves()
    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(
                sources=["microphone", "upload"], type="filepath", label="Speech (record or upload)", elem_id="demo-audio"
            )
            predict_button = gr.Button("Predict", variant="primary", elem_id="demo-predict")
            # num_top_classes=None: a bar for every label, however many the (switchable) model has
            bars = gr.Label(num_top_classes=None, label="Emotion", elem_id="demo-bars")
            with gr.Accordion("Options", open=False, elem_id="demo-options"):
                adapt = gr.Checkbox(
                    label=f"Adapt to my voice: from my {MIN_CONTEXT_CLIPS}rd recording in this visit on, judge each "
                    "clip against my earlier ones (nothing is stored)",
                    value=False, elem_id="demo-adapt",
                )
                reduce_noise = gr.Checkbox(
                    label="Reduce background noise first (spectral gating; off by default: on clean speech it "
                    "costs accuracy, see the README's robustness table)",
                    value=False, elem_id="demo-denoise",
                )
            model_info = gr.Markdown(model_markdown(predictor), elem_id="model-info")
        with gr.Column(scale=1):
            with gr.Group(elem_id="relabel-panel"):
                relabel = gr.Radio(
                    choices=predictor.labels,
                    label="Right emotion (pre-selected to the model's guess: saving it confirms the guess)",
                    elem_id="relabel-choice",
                )
                note = gr.Textbox(label="Note (optional)", max_lines=2, elem_id="relabel-note")
                annotator = gr.Textbox(label="Annotator", placeholder="your name", elem_id="relabel-annotator")
                consent = gr.Checkbox(label=consent_text(context.config.retention_days), value=False,
                                      elem_id="relabel-consent")
                with gr.Row():
                    save_button = gr.Button("Save label", variant="primary", elem_id="relabel-save")
                    undo_button = gr.Button("Undo my last save", elem_id="relabel-undo")
                    delete_button = gr.Button("Delete what I saved", variant="stop", elem_id="relabel-delete")
                status = gr.Markdown(elem_id="relabel-status")
    # Vega's own legend is one row that drops the emotions it cannot fit (a phone shows 5 of 8), so
    # the plot's legend is off (colors_in_legend=[]) and an HTML legend that wraps stands below it.
    timeline_plot = gr.LinePlot(
        x="time_s", y="probability", color="emotion", y_lim=[0, 1], label="Emotion over time",
        x_title="time (s)", colors_in_legend=[], visible=False, elem_id="demo-timeline",
    )
    timeline_legend = gr.HTML(visible=False, elem_id="demo-timeline-legend")
    last_prediction = gr.State(None)
    # This visit's SpeakerContext: pooled features of its last clips (at most ~0.7 MB), in memory only,
    # dropped after the same idle time as the visit's uploads so abandoned sessions do not pile up.
    voice = gr.State(None, time_to_live=context.config.cache_max_age_s)
    saved_ids = gr.State([])  # label ids this page saved: the only ones its Undo may withdraw

    def predict(audio_path: str | None, adapt_to_voice: bool = False,
                voice_so_far: SpeakerContext | None = None, denoise_first: bool = False) -> tuple[Any, ...]:
        if not audio_path:
            raise gr.Error("Record or upload some speech first.")
        model = context.predictor
        speaker = None
        if adapt_to_voice and model.adapts_to_speakers:
            speaker = voice_so_far if isinstance(voice_so_far, SpeakerContext) else SpeakerContext()
        with user_errors("Could not use this audio"):
            waveform = context.load_audio(audio_path)
            probs, timeline = analyse(model, waveform, context.config.window_s, context.config.hop_s, speaker,
                                      denoise="spectral" if denoise_first else None)
        if timeline:
            plot = gr.LinePlot(value=timeline_frame(timeline), color_map=emotion_colours(model.labels), visible=True)
        else:
            plot = gr.LinePlot(visible=False)
        guess = max(probs, key=probs.get)
        prediction = {"audio": audio_path, "probs": probs, "version": model.version, "timeline": bool(timeline)}
        info = model_markdown(model)
        if adapt_to_voice:
            info += " · " + adaptation_note(model, speaker)
        if denoise_first or model.denoise:
            info += " · background noise reduced"
        return probs, plot, info, relabel_choices(model, guess), prediction, speaker

    def save(audio_path: str | None, label: str | None, note: str, typed_name: str, agreed: bool,
             prediction: dict[str, Any] | None, saved: list[int] | None,
             request: gr.Request) -> tuple[str, dict[str, Any] | None, list[int]]:
        name = annotator_name(typed_name, request)
        if agreed is not True:
            raise gr.Error("Tick the box that agrees to keeping this recording first: nothing was saved.")
        session = session_of(request)
        if not audio_path:
            raise gr.Error("Record or upload the clip you want to label first.")
        if not label:
            raise gr.Error("Pick the right emotion first.")
        note = (note or "").strip()
        with user_errors("Could not save"):
            waveform = context.load_audio(audio_path)
            if prediction is None or prediction.get("audio") != audio_path:
                model = context.predictor
                prediction = {"audio": audio_path, "probs": model.predict(waveform), "version": model.version}
            store = context.store
            sha = clip_sha256(waveform)
            with saves.lock:
                before = saves.get(session, sha, name)
                if before is not None and not any(row["id"] == before.label_id for row in store.labels_for(sha)):
                    before = None  # undone or deleted since: saving stores it again
                if before is not None and (before.label, before.note) == (_canonical_or_same(label), note):
                    count = store.count_labels(name)
                    return (f"Already saved: **{label}** for this clip. {labels_saved(name, count)} "
                            "Change the emotion or the note to update it.", prediction, list(saved or []))
                # private: a visitor's voice reaches annotators only when an admin queues it
                store.add_clip(waveform, source=Path(audio_path).name, private=True, session=session)
                store.set_prediction(sha, prediction["version"], prediction["probs"])
                label_id = store.add_label(sha, name, label, note=note, model_version=prediction["version"],
                                           model_probs=prediction["probs"])
                if before is not None:  # an edit replaces this page's earlier label for the clip
                    store.undo_last(name, among=[before.label_id])
                saves.put(session, sha, name, SavedLabel(label_id, canonical(label), note))
            count = store.count_labels(name)
        guess = max(prediction["probs"], key=prediction["probs"].get)
        verdict = "confirmed the model's guess" if label == guess else f"corrected the model's *{guess}*"
        action = "Updated your label to" if before is not None else "Saved"
        kept = [i for i in (saved or []) if before is None or i != before.label_id]
        return (f"{action} **{label}** ({verdict}). {labels_saved(name, count)}", prediction,
                [*kept, label_id][-200:])

    def undo(typed_name: str, saved: list[int] | None, request: gr.Request) -> str:
        name = annotator_name(typed_name, request)
        with user_errors("Could not undo"):
            # With a login, your own labels; without, a typed name proves nothing: only this page's saves.
            undone = context.store.undo_last(name, among=None if login_of(request) else list(saved or []))
            count = context.store.count_labels(name)
        if undone is None:
            return f"{name}, you have no label saved from this page to undo."
        saves.forget_label(undone)
        return f"Removed your last label. {labels_saved(name, count)}"

    def delete_mine(request: gr.Request) -> tuple[str, list[int]]:
        session = session_of(request)
        with user_errors("Could not delete"):
            deleted = context.store.delete_session(session)
        saves.forget_session(session)
        return f"Deleted **{deleted}** recording{'' if deleted == 1 else 's'} you saved during this visit, with their labels.", []

    def show_legend(prediction: dict[str, Any] | None) -> Any:
        """The page's legend for the timeline just drawn (the API's /predict answer stays as it was)."""
        if not prediction or not prediction.get("timeline"):
            return gr.HTML(visible=False)
        return gr.HTML(value=legend_html(emotion_colours(list(prediction["probs"]))), visible=True)

    predict_outputs = [bars, timeline_plot, model_info, relabel, last_prediction, voice]
    predict_inputs = [audio, adapt, voice, reduce_noise]
    # One event for the button, an upload and a finished recording: a click while the upload's
    # prediction runs is dropped ("once") instead of answering again later and resetting the pick
    # the visitor made in between.
    predict_event = gr.on([predict_button.click, audio.upload, audio.stop_recording], predict, predict_inputs,
                          predict_outputs, api_name="predict", trigger_mode="once")
    # Per-clip state: a new clip (or a new answer for it) starts with no note and no old message, so
    # a note written for one clip is never saved with the next. In the browser only: no round trip.
    audio.change(None, None, [note, status, relabel], js=NEW_CLIP_JS)
    without_error_pills(predict_event, predict_outputs)
    predict_event.success(None, None, [note, status], js=NEW_ANSWER_JS)
    predict_event.success(show_legend, [last_prediction], [timeline_legend], show_progress="hidden", queue=False,
                          api_visibility="private")
    save_outputs = [status, last_prediction, saved_ids]
    without_error_pills(save_button.click(save, [audio, relabel, note, annotator, consent, last_prediction, saved_ids],
                                          save_outputs, api_name="save_correction"), save_outputs)
    without_error_pills(undo_button.click(undo, [annotator, saved_ids], [status], api_name="undo_correction"),
                        [status])
    without_error_pills(delete_button.click(delete_mine, None, [status, saved_ids], api_name="delete_my_clips"),
                        [status, saved_ids])
    examples, captions = example_clips()
    if examples:
        gr.Examples(examples=examples, inputs=[audio], outputs=predict_outputs, fn=predict, run_on_click=True,
                    cache_examples=False, example_labels=captions, label="Example clips",
                    api_visibility="private")
    return DemoTab(model_info, annotator, relabel)
