"""Annotate tab: many people label a queue of clips at once, by keyboard, each at their own pace.

The layout and thin handlers only; the rules (what is served next, idempotent saves, per-queue
keys and suggestion, lazy predictions, agreement) live in ``ser.ui.annotation_session`` and are
tested there without a server. The store decides what each annotator sees next, so annotators
never block or overwrite each other; the page keeps, per browser session, only the clip on screen
and the labels saved from it (so Undo can bring that clip back).
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from ser.audio import SAMPLE_RATE
from ser.store import ORDERS
from ser.ui.annotation_session import (
    IMPORT_PREFIX,
    AgreementView,
    AnnotationDesk,
    ClipOnScreen,
    Served,
    keys_text,
    progress_text,
    queue_key,
)
from ser.ui.clip_sources import NO_ROOTS, iter_files, iter_source
from ser.ui.context import AppContext
from ser.ui.keyboard import SHORTCUTS_HELP
from ser.ui.roles import Role, login_of, require
from ser.ui.users import annotator_name, user_errors

__all__ = ["IMPORT_PREFIX", "build_annotate_tab", "numbered_choices"]

# The page's URL names the queue (?queue=NAME) so a link hands an annotator straight to it; picking
# another queue rewrites the URL in place (no reload) so the link in the address bar stays true.
QUEUE_URL_JS = """
(queue) => {
  const url = new URL(window.location.href);
  if (queue) { url.searchParams.set("queue", queue); } else { url.searchParams.delete("queue"); }
  window.history.replaceState(null, "", url);
  return queue;
}
"""


def numbered_choices(labels: list[str]) -> list[tuple[str, str]]:
    """Radio choices shown as "1 · angry" so the number keys are discoverable."""
    return [(f"{index} · {label}" if index <= 9 else label, label) for index, label in enumerate(labels, start=1)]


def clip_audio_value(waveform: np.ndarray) -> tuple[int, np.ndarray]:
    """A stored clip as (rate, PCM16) for ``gr.Audio``: Gradio writes it to its own cache, so the page
    plays it wherever the store lives (a store path outside the working directory and the temp
    folder would be refused by Gradio's file access check)."""
    return SAMPLE_RATE, np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


def progress_html(served: Served) -> str:
    """'Clip n of N' with a bar, for the annotator's place in the queue."""
    progress = served.progress
    return (f'<div class="ser-progress">{_markdown_bold(progress_text(progress))} '
            f'<progress value="{progress.done}" max="{max(progress.total, 1)}"></progress></div>')


def _markdown_bold(text: str) -> str:
    import html
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def agreement_frames(view: AgreementView) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    return (view.figures, pd.DataFrame(view.clip_rows, columns=list(AgreementView.CLIP_COLUMNS)),
            pd.DataFrame(view.annotator_rows, columns=list(AgreementView.ANNOTATOR_COLUMNS)))


def build_annotate_tab(context: AppContext, admin_token: gr.Textbox, page: gr.Blocks | None = None) -> gr.Textbox:
    """Lay out the Annotate tab inside the current Blocks; returns its annotator box (filled on login).

    ``page``: the whole Blocks, whose ``load`` lists the store's queues and reads ``?queue=`` for
    every new browser session."""
    desk = AnnotationDesk(context.store, lambda: context.predictor)
    context.annotation_desk = desk  # for tests and embedding: the desk this page serves
    labels = list(context.predictor.labels)
    with gr.Column(elem_id="annotate-panel"):
        with gr.Row(equal_height=True):
            annotator = gr.Textbox(label="Annotator", placeholder="your name", elem_id="annotate-annotator", scale=2)
            queue = gr.Dropdown(
                choices=["default"], value="default", allow_custom_value=True, label="Queue (empty: all clips)",
                elem_id="annotate-queue", scale=2,
            )
            order = gr.Radio(choices=list(ORDERS), value="fifo", label="Order (least_confident: model's doubts first)",
                             elem_id="annotate-order", scale=2)
            next_button = gr.Button("Start / next clip", variant="primary", elem_id="annotate-next", scale=1)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                # Two players, one shown: Gradio reads ``autoplay`` only when a player is made, so the
                # checkbox shows the autoplaying one or the quiet one (a hidden player is not rendered).
                clip_audio = gr.Audio(type="filepath", interactive=False, label="Clip", elem_id="annotate-audio",
                                      autoplay=True, buttons=[])
                quiet_audio = gr.Audio(type="filepath", interactive=False, label="Clip", elem_id="annotate-audio-quiet",
                                       autoplay=False, buttons=[], visible=False)
                choice = gr.Radio(choices=numbered_choices(labels), label="Emotion", elem_id="annotate-choice")
                with gr.Row():
                    save_button = gr.Button("Save (Enter)", variant="primary", elem_id="annotate-save")
                    skip_button = gr.Button("Skip (S)", elem_id="annotate-skip")
                    undo_button = gr.Button("Undo (U)", elem_id="annotate-undo")
                status = gr.Markdown(elem_id="annotate-status")
            with gr.Column(scale=2):
                progress = gr.HTML(elem_id="annotate-progress")
                clip_info = gr.Markdown(elem_id="annotate-info")
                keys = gr.Markdown(keys_text(labels), elem_id="annotate-keys")
                autoplay = gr.Checkbox(value=True, label="Play each clip when it is served (P or Space plays / pauses)",
                                       elem_id="annotate-autoplay")
                note = gr.Textbox(label="Note (optional; Enter saves)", max_lines=1, elem_id="annotate-note")
                # every label with its score, and no headline naming the top one: less of an anchor
                guess = gr.Label(num_top_classes=None, label="Model's guess (not pre-selected)", show_heading=False,
                                 elem_id="annotate-guess")
        gr.Markdown(SHORTCUTS_HELP, elem_id="annotate-help")
        current = gr.State(None)  # ClipOnScreen
        with gr.Accordion("Label a time span (long recordings)", open=False, elem_id="region-tools"):
            with gr.Row():
                span_start = gr.Number(label="Start (s)", minimum=0, elem_id="region-start")
                span_end = gr.Number(label="End (s)", minimum=0, elem_id="region-end")
                span_button = gr.Button("Save span with the picked emotion", elem_id="region-save")
            span_status = gr.Markdown(elem_id="region-status")
        with gr.Accordion("Load clips into a queue", open=False, elem_id="queue-tools"):
            with gr.Row():
                source = gr.Textbox(
                    label="Admins: folder, CSV (path,label,speaker) or saved dataset under the server's --data-root",
                    elem_id="queue-source",
                )
                uploads = gr.File(label="...or upload audio files / a CSV", file_count="multiple", height=140,
                                  elem_id="queue-files")
            with gr.Row():
                queue_name = gr.Textbox(label="Queue name", value="default", elem_id="queue-name")
                hide_guess = gr.Checkbox(label="Hide the model's guess from annotators", value=False,
                                         elem_id="queue-hide-guess")
                min_annotators = gr.Number(label="Annotators per clip (served first until reached)", value=1,
                                           minimum=1, maximum=100, precision=0, elem_id="queue-min-annotators")
                load_button = gr.Button("Add to queue", elem_id="queue-load")
            load_status = gr.Markdown(elem_id="queue-status", min_height=40)
        with gr.Accordion("Agreement (the queue above)", open=False, elem_id="agreement-tools"):
            refresh_button = gr.Button("Refresh agreement", elem_id="agreement-refresh")
            figures = gr.Markdown(elem_id="agreement-figures")
            clips_table = gr.Dataframe(label="Per clip (two or more labels)", interactive=False,
                                       elem_id="agreement-clips")
            annotators_table = gr.Dataframe(label="Per annotator", interactive=False, elem_id="agreement-annotators")

    def show(served: Served) -> tuple[Any, ...]:
        """The served clip as component updates: the pick, note and messages always start fresh."""
        audio = None if served.waveform is None else clip_audio_value(served.waveform)
        radio = gr.Radio(choices=numbered_choices(served.keys), value=None)
        shown = gr.Label(value=served.suggestion, visible=served.suggestion is not None or served.finished)
        return (audio, served.state, radio, shown, served.info, "", served.message, progress_html(served),
                keys_text(served.keys), audio)

    def next_clip(typed_name: str, queue_value: str | None, order_value: str, state: ClipOnScreen | None,
                  request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        with user_errors("Could not fetch the next clip"):
            return show(desk.next(name, queue_key(queue_value), order_value or "fifo", state))

    def save(typed_name: str, queue_value: str | None, order_value: str, state: ClipOnScreen | None,
             label: str | None, note_text: str, request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        with user_errors("Could not save"):
            return show(desk.save(name, queue_key(queue_value), order_value or "fifo", state, label, note_text))

    def skip(typed_name: str, queue_value: str | None, order_value: str, state: ClipOnScreen | None,
             request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        with user_errors("Could not skip"):
            return show(desk.skip(name, queue_key(queue_value), order_value or "fifo", state))

    def undo(typed_name: str, queue_value: str | None, order_value: str, state: ClipOnScreen | None,
             request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        with user_errors("Could not undo"):
            # With a login, your own labels; without, a typed name proves nothing: only this page's saves.
            return show(desk.undo(name, queue_key(queue_value), order_value or "fifo", state,
                                  own_labels_only=not login_of(request)))

    def label_span(typed_name: str, state: ClipOnScreen | None, label: str | None, start: float | None,
                   end: float | None, note_text: str, request: gr.Request) -> str:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        with user_errors("Could not save the span"):
            return desk.label_span(name, state, label, start, end, note_text)

    def add_to_queue(source_text: str, files: list[str] | None, queue_text: str, token: str | None,
                     hide: bool, min_count: float | None, request: gr.Request) -> Iterator[tuple[str, Any]]:
        """Store the clips (no predictions), telling how far it got as it goes; the queue is listed
        after its first clip, so annotating can start while the rest are added."""
        queue_value = (queue_text or "").strip() or "default"
        source_text = (source_text or "").strip()
        if not source_text and not files:
            raise gr.Error("Give a folder, CSV or dataset path, or upload some clips.")
        config = context.config
        if source_text:  # the same refusal whatever the path: it must not tell what exists
            require(config, request, Role.ADMIN, "load clips from server folders", token)
        role = require(config, request, Role.ANNOTATOR, "add clips to annotation queues", token)
        roots = context.data_roots if role is Role.ADMIN else NO_ROOTS  # a table's rows may name server files
        with user_errors("Could not read the clips"):
            reports: list[str] = []
            new = context.store.queue_settings(queue_value) is None
            if new or role is Role.ADMIN:  # an existing queue's options are its owner's to change
                settings = desk.configure(queue_value, hide_suggestion=bool(hide),
                                          min_annotators=int(min_count or 1))
            else:
                settings = desk.settings(queue_value)
            sources = []
            if source_text:
                sources.append((iter_source(source_text, roots, context.load_audio), Path(source_text).name))
            if files:
                sources.append((iter_files(files, roots, context.load_audio), "upload"))
            for clips, origin in sources:
                for report in desk.add_clips_stepwise(clips, queue_value, origin):
                    if not report.finished:
                        yield " ".join([*reports, report.text]), gr.Dropdown(value=queue_value, choices=desk.queues())
                reports.append(report.text)
            guess_shown = "hidden" if settings.suggestion == "hide" else "shown with its score"
            reports.append(f"The model's guess is {guess_shown}; {settings.min_annotators} annotator(s) per clip. "
                           "Guesses are computed as clips are served, and in the background.")
        yield " ".join(reports), gr.Dropdown(value=queue_value, choices=desk.queues())

    def refresh(queue_value: str | None, request: gr.Request) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        require(context.config, request, Role.ANNOTATOR, "see the annotators' agreement")
        with user_errors("Could not compute agreement"):
            return agreement_frames(desk.agreement(queue_key(queue_value)))

    def queue_keys(queue_value: str | None, request: gr.Request) -> tuple[Any, Any]:
        """The key map of the chosen queue (fixed with the queue), shown before its first clip."""
        with user_errors("Could not read the queue"):
            keys_now = desk.settings(queue_key(queue_value)).keys
        return keys_text(keys_now), gr.Radio(choices=numbered_choices(keys_now), value=None)

    def open_page(request: gr.Request) -> tuple[Any, ...]:
        """Every new browser session: the store's queues, and the one its URL names (``?queue=``)."""
        with user_errors("Could not list the queues"):
            names = desk.queues()
            asked = queue_key((getattr(request, "query_params", None) or {}).get("queue"))
            chosen = asked if asked is not None else names[0]
            keys_now = desk.settings(chosen).keys
        return (gr.Dropdown(choices=sorted(set(names) | {chosen}), value=chosen), keys_text(keys_now),
                gr.Radio(choices=numbered_choices(keys_now), value=None))

    served = [clip_audio, current, choice, guess, clip_info, note, status, progress, keys, quiet_audio]
    position = [annotator, queue, order, current]
    next_button.click(next_clip, position, served, api_name="next_clip")
    save_button.click(save, [*position, choice, note], served, api_name="annotate_save")
    note.submit(save, [*position, choice, note], served, api_visibility="private")
    skip_button.click(skip, position, served, api_name="annotate_skip")
    undo_button.click(undo, position, served, api_name="annotate_undo")
    span_button.click(label_span, [annotator, current, choice, span_start, span_end, note], span_status,
                      api_name="annotate_span")
    autoplay.change(lambda on: (gr.Audio(visible=bool(on)), gr.Audio(visible=not on)), autoplay,
                    [clip_audio, quiet_audio], api_visibility="private", queue=False)
    queue.change(queue_keys, queue, [keys, choice], js=QUEUE_URL_JS, api_visibility="private")
    load_button.click(add_to_queue, [source, uploads, queue_name, admin_token, hide_guess, min_annotators],
                      [load_status, queue], api_name="load_queue", concurrency_limit=1, show_progress_on=[load_status])
    refresh_button.click(refresh, queue, [figures, clips_table, annotators_table], api_name="agreement")
    if page is not None:
        page.load(open_page, None, [queue, keys, choice], api_visibility="private")
    return annotator
