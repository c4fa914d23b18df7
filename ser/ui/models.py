"""Models tab: which model versions exist, which one serves, and retraining from the corrections.

A retrain's output is adopted only when it exits cleanly; until then (and if it fails) the app
keeps serving the model it had, and the failure is shown in the log box, not raised.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ser.store import POLICIES
from ser.ui.context import AppContext
from ser.ui.demo import model_markdown
from ser.ui.event_status import without_error_pills
from ser.ui.retrain_runner import Progress, RetrainRunner
from ser.ui.roles import Role, require
from ser.ui.users import message, user_errors

log = logging.getLogger(__name__)
METRIC_KEYS = ("uar", "accuracy", "macro_f1")
LOG_TAIL_LINES = 200
EXIT_REJECTED = 3  # `finetune retrain`: the new model scored worse than the serving one and was not written


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """UAR, accuracy and macro-F1 wherever a run recorded them (top level or one level down, e.g. ``test``)."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        if key in METRIC_KEYS and isinstance(value, (int, float)):
            found[key] = float(value)
        elif isinstance(value, dict):
            for inner, inner_value in value.items():
                if inner in METRIC_KEYS and isinstance(inner_value, (int, float)):
                    found.setdefault(inner, float(inner_value))
    return found


def models_frame(context: AppContext) -> pd.DataFrame:
    rows = []
    for record in context.store.list_models():
        row = {"version": record["version"], "active": "✓" if record["active"] else "", "created": record["created_at"][:19]}
        row.update({key: round(value, 4) for key, value in headline_metrics(record["metrics"]).items()})
        row["path"] = record["path"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["version", "active", "created", *METRIC_KEYS, "path"])


def retrain_result(lines: list[str]) -> dict[str, Any]:
    """The ``result: {json}`` line ``finetune retrain`` prints last (version, path, decision)."""
    for line in reversed(lines):
        if line.startswith("result: "):
            try:
                return json.loads(line[len("result: "):])
            except ValueError:
                return {}
    return {}


def _uar(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def verdict_text(returncode: int | None, result: dict[str, Any], serving: str, last_line: str,
                 adopted: str | None = None) -> str:
    """A finished retrain in words, first: adopted, kept aside (and why), or failed, with the UAR
    of both models on the same held-out clips."""
    figures = f"new UAR {_uar(result.get('new_uar'))} vs serving UAR {_uar(result.get('serving_uar'))}"
    reason = result.get("reason") or ""
    if returncode == 0 and adopted:
        return (f"### Adopted: now serving `{adopted}`\n{figures} on the same held-out clips ({reason}). "
                f"'Roll back' returns to `{serving}`.")
    if returncode == EXIT_REJECTED and result.get("version"):
        return (f"### Kept aside: `{result['version']}` is not serving\n{figures}: {reason}. The app keeps "
                f"serving `{serving}`; 'Adopt the candidate anyway' switches to it.")
    if returncode == EXIT_REJECTED:
        return f"### Rejected: nothing written\n{figures}: {reason}. The app keeps serving `{serving}`."
    if returncode == 0:
        return f"### Finished, but no new model was registered\nThe app keeps serving `{serving}`."
    return (f"### Failed (exit code {returncode}): the app keeps serving `{serving}`\n"
            f"{last_line or 'no output'}")


def progress_html(progress: Progress | None, running: bool = True) -> str:
    """One clean progress bar for the run (the raw lines are in the full log)."""
    if progress is None:
        return "<div id='retrain-progress-text'>Starting the retrain…</div>" if running else ""
    percent = round(100 * progress.fraction)
    text = html.escape(f"Stage {progress.stage} of {progress.stages}: {progress.text}")
    return (f"<progress id='retrain-progress-bar' max='100' value='{percent}' style='width:100%'></progress>"
            f"<div id='retrain-progress-text'>{percent}% · {text}</div>")


def base_corpus_note(context: AppContext) -> str:
    """Say what a retrain will learn from, and when that is too little to beat the serving model."""
    config = context.config
    labelled = context.store.count_labels()
    if config.retrain_corpus:
        # the corpus's name only: every visitor sees this line, and server paths are the admins' business
        return (f"Retraining starts from the base corpus **{config.retrain_corpus}** with the **{labelled}** "
                "stored labels on top.")
    if config.has_base_corpus:
        return (f"Retraining starts from the base corpus in `--retrain-args` with the **{labelled}** stored labels "
                "on top.")
    return (f"**No base corpus is configured**: a retrain would learn from the **{labelled}** labels in the store "
            "alone, which is small and likely to be rejected (or to know fewer emotions than the serving model). "
            "Start the app with `--retrain-corpus NAME --retrain-root DIR` (e.g. `--retrain-corpus emodb "
            "--retrain-root data/emodb`) so the corrections are added to a real corpus.")


@dataclass
class ModelsTab:
    """The Models tab's components that page load refreshes."""

    table: gr.Dataframe
    version: gr.Dropdown
    corpus_note: gr.Markdown


def models_page_state(context: AppContext) -> tuple[pd.DataFrame, Any, str]:
    """The versions table, the version dropdown (set to the serving model) and the base-corpus note,
    read when a page loads: a page built at start-up would list only the versions that existed then."""
    frame = models_frame(context)
    dropdown = gr.Dropdown(choices=list(frame["version"]), value=context.predictor.version)
    return frame, dropdown, base_corpus_note(context)


def build_models_tab(context: AppContext, model_info: gr.Markdown, admin_token: gr.Textbox) -> ModelsTab:
    """Lay out the Models tab; switching a model also refreshes the Demo tab's model line."""
    config = context.config
    runner = RetrainRunner(context.store.root, config.retrain_out, config.retrain_command_args,
                           nice=config.retrain_nice)
    with gr.Column(elem_id="models-panel"):
        table = gr.Dataframe(value=models_frame(context), label="Model versions", interactive=False, elem_id="models-table")
        with gr.Row():
            version = gr.Dropdown(choices=list(models_frame(context)["version"]), value=context.predictor.version,
                                  label="Model version", elem_id="models-version")
            switch_button = gr.Button("Use this model", variant="primary", elem_id="models-switch")
            refresh_button = gr.Button("Refresh", elem_id="models-refresh")
        switch_status = gr.Markdown(elem_id="models-status")
        gr.Markdown(
            "**Retrain** (admins) a new model version from the labels saved in the store "
            "(`python -m finetune retrain`). It runs in a separate process and compares the new model with the "
            "serving one on held-out speakers; when it is at least as good (same emotions, UAR not lower) the app "
            "switches to it. A worse candidate is kept aside: adopting it is a second, explicit step. "
            "'Roll back' returns to the model that served before."
        )
        corpus_note = gr.Markdown(base_corpus_note(context), elem_id="models-corpus-note")
        with gr.Row():
            policy = gr.Dropdown(choices=list(POLICIES), value="majority", label="When annotators disagree",
                                 elem_id="models-policy")
        with gr.Row():
            retrain_button = gr.Button("Retrain from stored labels", elem_id="models-retrain")
            stop_button = gr.Button("Stop", elem_id="models-stop")
            adopt_button = gr.Button("Adopt the candidate anyway", elem_id="models-adopt")
            rollback_button = gr.Button("Roll back to the previous model", elem_id="models-rollback")
        verdict = gr.Markdown(elem_id="models-verdict")
        progress_bar = gr.HTML(elem_id="models-progress")
        with gr.Accordion("Full retrain log", open=False, elem_id="models-log-panel"):
            retrain_log = gr.Textbox(label="Retrain log", lines=12, max_lines=12, autoscroll=True,
                                     elem_id="models-log")
        with gr.Accordion("Recordings and retention (admins)", open=False):
            with gr.Row():
                publish_queue = gr.Textbox(label="Queue for visitors' saved recordings", value="visitors",
                                           elem_id="data-publish-queue")
                publish_button = gr.Button("Add visitors' recordings to this queue", elem_id="data-publish")
            with gr.Row():
                doomed = gr.Textbox(label="Annotator whose labels and recordings to delete", elem_id="data-annotator")
                delete_button = gr.Button("Delete everything from this annotator", variant="stop",
                                          elem_id="data-delete-annotator")
            purge_button = gr.Button(
                f"Delete clips older than {context.config.retention_days:g} days" if context.config.retention_days
                else "Delete clips older than the retention limit (--retention-days)", elem_id="data-purge")
            data_status = gr.Markdown(elem_id="data-status")

    def listing() -> tuple[pd.DataFrame, Any]:
        frame = models_frame(context)
        active = context.predictor.version
        return frame, gr.Dropdown(choices=list(frame["version"]), value=active)

    def adopt(version: str, why: str) -> tuple[str, str, pd.DataFrame, Any]:
        with user_errors(f"Could not switch to {version}"):
            predictor = context.switch_model(version)
        frame, dropdown = listing()
        return f"Now serving **{predictor.version}** ({why}).", model_markdown(predictor), frame, dropdown

    def switch(chosen: str | None, token: str | None, request: gr.Request) -> tuple[str, str, pd.DataFrame, Any]:
        require(context.config, request, Role.ADMIN, "switch the serving model", token)
        if not chosen:
            raise gr.Error("Pick a model version first.")
        return adopt(chosen, "switched by an admin")

    def adopt_candidate(token: str | None, request: gr.Request) -> tuple[str, str, pd.DataFrame, Any]:
        require(context.config, request, Role.ADMIN, "adopt a retrained model", token)
        candidate = context.pending_candidate
        if candidate is None:
            raise gr.Error("There is no candidate waiting: a retrain that scores worse leaves one here.")
        result = adopt(candidate["version"], f"adopted by an admin despite: {candidate['reason']}")
        context.pending_candidate = None
        return result

    def rollback(token: str | None, request: gr.Request) -> tuple[str, str, pd.DataFrame, Any]:
        require(context.config, request, Role.ADMIN, "roll back the serving model", token)
        previous = context.store.previous_model()
        if previous is None:
            raise gr.Error("No model served before this one.")
        return adopt(previous["version"], "rolled back")

    def retrain(policy: str, token: str | None,
                request: gr.Request) -> Iterator[tuple[str, str, str, str, pd.DataFrame, Any]]:
        require(context.config, request, Role.ADMIN, "retrain the model", token)
        before = {m["version"] for m in context.store.list_models()}
        frame, dropdown = listing()
        info = model_markdown(context.predictor)
        serving = context.predictor.version
        running = "### Retraining…\nThe app keeps serving `" + serving + "` until the new model has been compared."
        run = None
        try:
            for run in runner.run(["--policy", policy or "majority", "--keep-rejected"]):
                yield (running, progress_html(run.progress()), "\n".join(run.lines[-LOG_TAIL_LINES:]), info, frame,
                       dropdown)
        except Exception as error:  # never let a retrain problem reach the page as a stack trace
            log.exception("retrain could not run")
            yield f"### Failed: the retrain could not run\n{message(error)}", "", "", info, frame, dropdown
            return
        text = "\n".join(run.lines[-LOG_TAIL_LINES:]) if run else ""
        result = retrain_result(run.lines) if run else {}
        code = run.returncode if run else None
        last = run.lines[-1] if run and run.lines else ""
        done = progress_html(run.progress() if run else None, running=False)
        if code == EXIT_REJECTED and result.get("version"):
            context.pending_candidate = {"version": result["version"], "reason": result.get("reason", "")}
            frame, dropdown = listing()
        if code != 0:
            yield verdict_text(code, result, serving, last), done, text, info, frame, dropdown
            return
        try:
            version = result.get("version") or new_version(before)
            if version is None:
                yield verdict_text(code, result, serving, last), done, text, info, frame, dropdown
                return
            predictor = context.switch_model(version)
        except Exception as error:
            log.exception("could not load the retrained model")
            yield (f"### Failed: the retrain finished but its model could not be loaded\n{message(error)}. "
                   f"The app keeps serving `{serving}`."), done, text, info, frame, dropdown
            return
        frame, dropdown = listing()
        yield (verdict_text(code, result, serving, last, adopted=predictor.version), done, text,
               model_markdown(predictor), frame, dropdown)

    def publish(queue_name: str, token: str | None, request: gr.Request) -> str:
        require(context.config, request, Role.ADMIN, "put visitors' recordings in front of annotators", token)
        with user_errors("Could not queue the recordings"):
            moved = context.store.publish_clips(queue_name or "visitors")
        return f"Added **{moved}** visitors' recordings to queue **{queue_name or 'visitors'}**."

    def delete_annotator(name: str, token: str | None, request: gr.Request) -> str:
        require(context.config, request, Role.ADMIN, "delete an annotator's data", token)
        with user_errors("Could not delete"):
            labels, clips = context.store.delete_annotator(name or "")
        return f"Deleted **{labels}** labels and **{clips}** recordings of {name.strip()}."

    def purge(token: str | None, request: gr.Request) -> str:
        require(context.config, request, Role.ADMIN, "delete old recordings", token)
        days = context.config.retention_days
        if not days:
            raise gr.Error("No retention limit is set: start the app with --retention-days N.")
        with user_errors("Could not delete"):
            deleted = context.store.purge_older_than(days)
        return f"Deleted **{deleted}** clips older than {days:g} days, with their labels and files."

    def new_version(before: set[str]) -> str | None:
        added = [m["version"] for m in context.store.list_models() if m["version"] not in before]
        return added[-1] if added else None

    outputs = [table, version]
    switched = [switch_status, model_info, *outputs]
    refresh_button.click(listing, None, outputs, api_name="list_models")
    refresh_button.click(lambda: base_corpus_note(context), None, [corpus_note], api_visibility="private")
    for button, handler, inputs, name in ((switch_button, switch, [version, admin_token], "switch_model"),
                                          (adopt_button, adopt_candidate, [admin_token], "adopt_candidate"),
                                          (rollback_button, rollback, [admin_token], "rollback")):
        without_error_pills(button.click(handler, inputs, switched, api_name=name), switched)
    # The verdict box carries the progress (one spinner, not one per output); the log is collapsed.
    retrained = [verdict, progress_bar, retrain_log, model_info, *outputs]
    retrain_event = retrain_button.click(retrain, [policy, admin_token], retrained, api_name="retrain",
                                         concurrency_limit=1, show_progress_on=[verdict])
    without_error_pills(retrain_event, [verdict])
    stop_button.click(None, None, None, cancels=[retrain_event])
    data_actions = ((publish_button, publish, [publish_queue, admin_token], "publish_visitor_clips"),
                    (delete_button, delete_annotator, [doomed, admin_token], "delete_annotator"),
                    (purge_button, purge, [admin_token], "purge_old_clips"))
    for button, handler, inputs, name in data_actions:
        without_error_pills(button.click(handler, inputs, [data_status], api_name=name), [data_status])
    return ModelsTab(table, version, corpus_note)
