"""Annotate tab: many people label a queue of clips at once, by keyboard, each at their own pace.

The store decides what each annotator sees next (a clip they have neither labelled nor skipped),
so annotators never block or overwrite each other; the page only keeps, per browser session, the
clip on screen and the labels saved from it (so Undo can bring that clip back). The model's guess
pre-fills the form: confirming is one key, and least-confident-first order spends human time
where the model is unsure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from ser.audio import SAMPLE_RATE
from ser.store import ORDERS, InvalidRequest
from ser.ui.clip_sources import NO_ROOTS, SourceClip, UnusableSource, iter_files, iter_source
from ser.ui.context import AppContext
from ser.ui.keyboard import SHORTCUTS_HELP
from ser.ui.roles import Role, login_of, require
from ser.ui.users import USER_ERRORS, annotator_name, labels_saved, message, user_errors

IMPORT_PREFIX = "import:"  # labels that came with a queue's CSV or dataset are filed under this annotator
MAX_REPORTED_FAILURES = 5


def numbered_choices(labels: list[str]) -> list[tuple[str, str]]:
    """Radio choices shown as "1 · angry" so the number keys are discoverable."""
    return [(f"{index} · {label}" if index <= 9 else label, label) for index, label in enumerate(labels, start=1)]


def load_queue(context: AppContext, clips: list[SourceClip], queue: str, origin: str,
               progress: gr.Progress | None = None) -> str:
    """Add clips to the store under ``queue`` with the model's guess (for least-confident order).

    Clips that fail to decode are counted and named, never fatal: one broken file in a folder of
    hundreds must not lose the rest.
    """
    model, store = context.predictor, context.store
    added, failures = 0, []
    iterable = progress.tqdm(clips, desc="Adding clips") if progress is not None else clips
    for clip in iterable:
        try:
            waveform = clip.decode()
            sha = store.add_clip(waveform, source=clip.name, speaker=clip.speaker, queue=queue)
            store.set_prediction(sha, model.version, model.predict(waveform))
            if clip.label:
                try:
                    store.add_label(sha, f"{IMPORT_PREFIX}{origin}", clip.label, note="label from the queue's source")
                except InvalidRequest:
                    if clip.from_table:  # a table's cells are never echoed: it may be any file on the server
                        raise UnusableSource("its label is not an emotion this app knows") from None
                    raise
        except (*USER_ERRORS, OSError) as error:  # OSError: a file that cannot be read
            failures.append(f"{clip.name}: {message(error)}")
            continue
        added += 1
    report = f"Added **{added}** clips to queue **{queue}** (now {store.count_clips(queue)} clips)."
    if failures:
        shown = "; ".join(failures[:MAX_REPORTED_FAILURES])
        more = f" and {len(failures) - MAX_REPORTED_FAILURES} more" if len(failures) > MAX_REPORTED_FAILURES else ""
        report += f" Skipped {len(failures)} unusable: {shown}{more}."
    return report


def agreement_tables(context: AppContext) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Per-clip votes and majority, per-annotator counts, and chance-corrected agreement."""
    store = context.store
    votes = store.votes()
    summary = store.clip_agreement()
    clip_rows = [
        {
            "clip": sha[:12],
            "source": store.clip_info(sha)["source"],
            "labels": summary[sha]["n_labels"],
            "majority": summary[sha]["majority"] or "(tie)",
            "agreement": round(summary[sha]["agreement"], 3),
            "votes": "; ".join(f"{name}: {label}" for name, (_, label) in sorted(by_annotator.items())),
        }
        for sha, by_annotator in votes.items()
    ]
    annotator_rows = [
        {
            "annotator": name,
            "labels": stats["labels"],
            "shared clips": stats["shared_clips"],
            "agrees with others": None if stats["agreement"] is None else round(stats["agreement"], 3),
        }
        for name, stats in sorted(context.store.annotator_stats().items())
    ]
    multi = sum(1 for by_annotator in votes.values() if len(by_annotator) >= 2)
    kappa, alpha = store.fleiss_kappa(), store.krippendorff_alpha()
    if multi == 0:
        figures = "Agreement needs clips labelled by at least two people: none yet."
    else:
        fmt = lambda value: "undefined" if value is None else f"{value:.3f}"  # noqa: E731
        figures = (f"Over **{multi}** clips with ≥ 2 labels: Fleiss' κ = **{fmt(kappa)}**, "
                   f"Krippendorff's α (nominal) = **{fmt(alpha)}**.")
    clip_columns = ["clip", "source", "labels", "majority", "agreement", "votes"]
    annotator_columns = ["annotator", "labels", "shared clips", "agrees with others"]
    return pd.DataFrame(clip_rows, columns=clip_columns), pd.DataFrame(annotator_rows, columns=annotator_columns), figures


def clip_audio_value(waveform: np.ndarray) -> tuple[int, np.ndarray]:
    """A stored clip as (rate, PCM16) for ``gr.Audio``: Gradio writes it to its own cache, so the page
    plays it wherever the store lives (a store path outside the working directory and the temp
    folder would be refused by Gradio's file access check)."""
    return SAMPLE_RATE, np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


def build_annotate_tab(context: AppContext, admin_token: gr.Textbox) -> gr.Textbox:
    """Lay out the Annotate tab inside the current Blocks; returns its annotator box (filled on login)."""
    labels = context.predictor.labels
    known_queues = {"default"}
    with gr.Column(elem_id="annotate-panel"):
        gr.Markdown(SHORTCUTS_HELP)
        with gr.Accordion("Load clips into a queue", open=False):
            with gr.Row():
                source = gr.Textbox(
                    label="Admins: folder, CSV (path,label,speaker) or saved dataset under the server's --data-root",
                    elem_id="queue-source",
                )
                uploads = gr.File(label="...or upload audio files / a CSV", file_count="multiple", height=140,
                                  elem_id="queue-files")
            with gr.Row():
                queue_name = gr.Textbox(label="Queue name", value="default", elem_id="queue-name")
                load_button = gr.Button("Add to queue", elem_id="queue-load")
            load_status = gr.Markdown(elem_id="queue-status")
        with gr.Row():
            annotator = gr.Textbox(label="Annotator", placeholder="your name", elem_id="annotate-annotator")
            queue = gr.Dropdown(
                choices=["default"], value="default", allow_custom_value=True, label="Queue (empty: all clips)",
                elem_id="annotate-queue",
            )
            order = gr.Radio(choices=list(ORDERS), value="fifo", label="Order (least_confident: model's doubts first)")
            next_button = gr.Button("Start / next clip", variant="primary", elem_id="annotate-next")
        with gr.Row():
            with gr.Column():
                clip_audio = gr.Audio(type="filepath", interactive=False, label="Clip", elem_id="annotate-audio")
                clip_info = gr.Markdown(elem_id="annotate-info")
            guess = gr.Label(num_top_classes=None, label="Model's guess", elem_id="annotate-guess")  # every label
        choice = gr.Radio(choices=numbered_choices(labels), label="Emotion", elem_id="annotate-choice")
        note = gr.Textbox(label="Note (optional; Enter saves)", max_lines=1, elem_id="annotate-note")
        with gr.Row():
            save_button = gr.Button("Save (Enter)", variant="primary", elem_id="annotate-save")
            skip_button = gr.Button("Skip (S)", elem_id="annotate-skip")
            undo_button = gr.Button("Undo (U)", elem_id="annotate-undo")
        status = gr.Markdown(elem_id="annotate-status")
        current = gr.State(None)  # {"sha", "probs", "version", "history": [(label id, sha), ...]}
        with gr.Accordion("Agreement", open=False):
            refresh_button = gr.Button("Refresh agreement", elem_id="agreement-refresh")
            figures = gr.Markdown(elem_id="agreement-figures")
            clips_table = gr.Dataframe(label="Per clip", interactive=False, elem_id="agreement-clips")
            annotators_table = gr.Dataframe(label="Per annotator", interactive=False, elem_id="agreement-annotators")

    def serve(sha: str | None, name: str, queue_value: str | None, history: list, note_text: str) -> tuple[Any, ...]:
        store = context.store
        queue_key = queue_value or None
        if sha is None:
            state = {"sha": None, "probs": None, "version": None, "history": history}
            done = f"No clips left for **{name}**" + (f" in queue **{queue_key}**." if queue_key else ".")
            return None, state, gr.Radio(value=None), None, done, note_text
        model = context.predictor
        waveform = store.load_clip(sha)
        probs = model.predict(waveform)
        store.set_prediction(sha, model.version, probs)
        info = store.clip_info(sha)
        others = len(store.labels_for(sha))
        remaining = store.count_remaining(name, queue_key)
        text = (f"Clip `{sha[:12]}` · {info['source'] or 'no name'} · {info['duration_s']:.1f} s · "
                f"labelled by {others} so far · {remaining} left for {name}")
        state = {"sha": sha, "probs": probs, "version": model.version, "history": history}
        radio = gr.Radio(choices=numbered_choices(model.labels), value=max(probs, key=probs.get))
        return clip_audio_value(waveform), state, radio, probs, text, ""

    def next_clip(typed_name: str, queue_value: str | None, order_value: str, state: dict | None,
                  request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        history = (state or {}).get("history", [])
        with user_errors("Could not fetch the next clip"):
            sha = context.store.next_clip(name, queue_value or None, order_value or "fifo")
            return (*serve(sha, name, queue_value, history, ""), labels_saved(name, context.store.count_labels(name)))

    def save(typed_name: str, queue_value: str | None, order_value: str, state: dict | None, label: str | None,
             note_text: str, request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        if not state or not state.get("sha"):
            raise gr.Error("No clip on screen: press 'Start / next clip' first.")
        if not label:
            raise gr.Error("Pick an emotion first (number keys 1-9).")
        store = context.store
        with user_errors("Could not save"):
            label_id = store.add_label(state["sha"], name, label, note=note_text or "",
                                       model_version=state["version"], model_probs=state["probs"])
            history = [*state.get("history", []), (label_id, state["sha"])][-50:]
            sha = store.next_clip(name, queue_value or None, order_value or "fifo")
            served = serve(sha, name, queue_value, history, "")
        return (*served, f"Saved **{label}**. {labels_saved(name, store.count_labels(name))}")

    def skip(typed_name: str, queue_value: str | None, order_value: str, state: dict | None,
             request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        if not state or not state.get("sha"):
            raise gr.Error("No clip on screen: press 'Start / next clip' first.")
        with user_errors("Could not skip"):
            context.store.skip(state["sha"], name)
            sha = context.store.next_clip(name, queue_value or None, order_value or "fifo")
            served = serve(sha, name, queue_value, state.get("history", []), "")
        return (*served, f"Skipped `{state['sha'][:12]}`.")

    def undo(typed_name: str, queue_value: str | None, order_value: str, state: dict | None,
             request: gr.Request) -> tuple[Any, ...]:
        require(context.config, request, Role.ANNOTATOR, "annotate queues")
        name = annotator_name(typed_name, request)
        history = list((state or {}).get("history", []))
        store = context.store
        with user_errors("Could not undo"):
            # With a login, your own labels; without, a typed name proves nothing: only this page's saves.
            own = None if login_of(request) else [label_id for label_id, _ in history]
            undone = store.undo_last(name, among=own)
            if undone is None:
                raise gr.Error(f"{name}, you have no label saved from this page to undo.")
            if history and history[-1][0] == undone:  # bring back the clip whose label was withdrawn
                sha = history.pop()[1]
            else:
                sha = store.next_clip(name, queue_value or None, order_value or "fifo")
            served = serve(sha, name, queue_value, history, "")
        return (*served, f"Undid your last label. {labels_saved(name, store.count_labels(name))}")

    def add_to_queue(source_text: str, files: list[str] | None, queue_text: str, token: str | None,
                     request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
        queue_key = (queue_text or "").strip() or "default"
        source_text = (source_text or "").strip()
        if not source_text and not files:
            raise gr.Error("Give a folder, CSV or dataset path, or upload some clips.")
        config = context.config
        if source_text:  # the same refusal whatever the path: it must not tell what exists
            require(config, request, Role.ADMIN, "load clips from server folders", token)
        role = require(config, request, Role.ANNOTATOR, "add clips to annotation queues", token)
        roots = context.data_roots if role is Role.ADMIN else NO_ROOTS  # a table's rows may name server files
        with user_errors("Could not read the clips"):
            reports = []
            if source_text:
                origin = Path(source_text).name
                reports.append(load_queue(context, list(iter_source(source_text, roots, context.load_audio)),
                                          queue_key, origin, progress))
            if files:
                reports.append(load_queue(context, list(iter_files(files, roots, context.load_audio)), queue_key,
                                          "upload", progress))
        known_queues.add(queue_key)
        return " ".join(reports), gr.Dropdown(value=queue_key, choices=sorted(known_queues))

    def refresh(request: gr.Request) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        require(context.config, request, Role.ANNOTATOR, "see the annotators' agreement")
        with user_errors("Could not compute agreement"):
            clips, annotators, text = agreement_tables(context)
        return text, clips, annotators

    served = [clip_audio, current, choice, guess, clip_info, note, status]
    position = [annotator, queue, order, current]
    next_button.click(next_clip, position, served, api_name="next_clip")
    save_button.click(save, [*position, choice, note], served, api_name="annotate_save")
    note.submit(save, [*position, choice, note], served, api_visibility="private")
    skip_button.click(skip, position, served, api_name="annotate_skip")
    undo_button.click(undo, position, served, api_name="annotate_undo")
    load_button.click(add_to_queue, [source, uploads, queue_name, admin_token], [load_status, queue],
                      api_name="load_queue", concurrency_limit=1)
    refresh_button.click(refresh, None, [figures, clips_table, annotators_table], api_name="agreement")
    return annotator
