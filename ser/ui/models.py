"""Models tab: which model versions exist, which one serves, and retraining from the corrections.

A retrain's output is adopted only when it exits cleanly; until then (and if it fails) the app
keeps serving the model it had, and the failure is shown in the log box, not raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from ser.store import POLICIES
from ser.ui.context import AppContext
from ser.ui.demo import model_markdown
from ser.ui.retrain_runner import RetrainRunner
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


def build_models_tab(context: AppContext, model_info: gr.Markdown) -> None:
    """Lay out the Models tab; switching a model also refreshes the Demo tab's model line."""
    runner = RetrainRunner(context.store.root, context.config.retrain_out, context.config.retrain_args)
    with gr.Column(elem_id="models-panel"):
        table = gr.Dataframe(value=models_frame(context), label="Model versions", interactive=False, elem_id="models-table")
        with gr.Row():
            version = gr.Dropdown(choices=list(models_frame(context)["version"]), label="Model version",
                                  elem_id="models-version")
            switch_button = gr.Button("Use this model", variant="primary", elem_id="models-switch")
            refresh_button = gr.Button("Refresh", elem_id="models-refresh")
        switch_status = gr.Markdown(elem_id="models-status")
        gr.Markdown(
            "**Retrain** a new model version from the labels saved in the store (`python -m finetune retrain`). "
            "It runs in a separate process and compares the new model with the serving one on held-out speakers; "
            "when it succeeds the app switches to the new version."
        )
        with gr.Row():
            policy = gr.Dropdown(choices=list(POLICIES), value="majority", label="When annotators disagree",
                                 elem_id="models-policy")
            force = gr.Checkbox(label="Keep the new model even if it scores worse than the serving one",
                                elem_id="models-force")
        with gr.Row():
            retrain_button = gr.Button("Retrain from stored labels", elem_id="models-retrain")
            stop_button = gr.Button("Stop", elem_id="models-stop")
        retrain_log = gr.Textbox(label="Retrain progress", lines=12, max_lines=12, autoscroll=True, elem_id="models-log")

    def listing() -> tuple[pd.DataFrame, Any]:
        frame = models_frame(context)
        active = context.predictor.version
        return frame, gr.Dropdown(choices=list(frame["version"]), value=active)

    def switch(chosen: str | None) -> tuple[str, str, pd.DataFrame, Any]:
        if not chosen:
            raise gr.Error("Pick a model version first.")
        with user_errors(f"Could not switch to {chosen}"):
            predictor = context.switch_model(chosen)
        frame, dropdown = listing()
        return f"Now serving **{predictor.version}**.", model_markdown(predictor), frame, dropdown

    def retrain(policy: str, force: bool) -> Iterator[tuple[str, str, pd.DataFrame, Any]]:
        before = {m["version"] for m in context.store.list_models()}
        frame, dropdown = listing()
        info = model_markdown(context.predictor)
        run = None
        try:
            for run in runner.run(["--policy", policy or "majority", *(["--force"] if force else [])]):
                yield "\n".join(run.lines[-LOG_TAIL_LINES:]), info, frame, dropdown
        except Exception as error:  # never let a retrain problem reach the page as a stack trace
            log.exception("retrain could not run")
            yield f"Retrain could not run: {message(error)}", info, frame, dropdown
            return
        text = "\n".join(run.lines[-LOG_TAIL_LINES:]) if run else ""
        serving = context.predictor.version
        if run is None or run.returncode != 0:
            last = run.lines[-1] if run and run.lines else "no output"
            code = run.returncode if run else None
            why = ("the new model scored worse, so it was not written (tick 'force' to keep it anyway)"
                   if code == EXIT_REJECTED else f"Retrain failed (exit code {code}): {last}")
            yield f"{text}\n\n{why}\nThe app keeps serving {serving}.", info, frame, dropdown
            return
        try:
            version = retrain_result(run.lines).get("version") or new_version(before)
            if version is None:
                yield f"{text}\n\nThe retrain finished without registering a new model.", info, frame, dropdown
                return
            predictor = context.switch_model(version)
        except Exception as error:
            log.exception("could not load the retrained model")
            yield f"{text}\n\nThe retrain finished but its model could not be loaded: {message(error)}", info, frame, dropdown
            return
        frame, dropdown = listing()
        yield f"{text}\n\nDone: now serving {predictor.version}.", model_markdown(predictor), frame, dropdown

    def new_version(before: set[str]) -> str | None:
        added = [m["version"] for m in context.store.list_models() if m["version"] not in before]
        return added[-1] if added else None

    outputs = [table, version]
    refresh_button.click(listing, None, outputs, api_name="list_models")
    switch_button.click(switch, [version], [switch_status, model_info, *outputs], api_name="switch_model")
    retrain_event = retrain_button.click(retrain, [policy, force], [retrain_log, model_info, *outputs],
                                         api_name="retrain", concurrency_limit=1)
    stop_button.click(None, None, None, cancels=[retrain_event])
