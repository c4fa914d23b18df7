"""The whole page: Demo, Annotate and Models tabs over one shared context, with its limits set."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from ser.audio import duration_limit_s
from ser.model import Predictor
from ser.ui.annotate import build_annotate_tab
from ser.ui.config import AppConfig, on_spaces
from ser.ui.context import AppContext
from ser.ui.demo import build_demo_tab, demo_page_state
from ser.ui.keyboard import KEYBOARD_JS
from ser.ui.login_limit import FailureCounter, LoginLimitMiddleware, RateLimitedAuth
from ser.ui.models import build_models_tab, models_page_state

TITLE = "Speech emotion recognition"
# Gradio copies every upload and every audio it serves into its cache; a public page would fill the
# disk, so files older than --cache-max-age are deleted (checked every 15 minutes at most).
CACHE_CHECK_S = 900


def intro(config: AppConfig) -> str:
    limit = config.max_duration_s if config.max_duration_s is not None else duration_limit_s()
    return (
        f"# {TITLE}\n"
        "Record or upload speech to see how likely each emotion is; correct the model when it is wrong. "
        f"Clips up to {limit:.0f} s and {config.max_file_size}. "
        "**Annotate** labels a queue of clips with several people at once; **Models** switches and retrains models."
    )


def build_app(config: AppConfig, predictor: Predictor | None = None) -> gr.Blocks:
    """Build the page (model loaded, store opened, queue configured); launch it with ``launch_options``."""
    context = AppContext(config, predictor)
    cleanup = (min(CACHE_CHECK_S, config.cache_max_age_s), config.cache_max_age_s)
    with gr.Blocks(title=TITLE, delete_cache=cleanup) as app:
        gr.Markdown(intro(config))
        # Without logins, the owner's SER_ADMIN_TOKEN typed here makes a request an admin's.
        admin_token = gr.Textbox(label="Admin token", type="password", max_lines=1, elem_id="admin-token",
                                 visible=bool(config.admin_token))
        with gr.Tabs():
            with gr.Tab("Demo", id="demo"):
                demo_tab = build_demo_tab(context)
            with gr.Tab("Annotate", id="annotate"):
                annotate_annotator = build_annotate_tab(context, admin_token, app)
            with gr.Tab("Models", id="models"):
                models_tab = build_models_tab(context, demo_tab.model_info, admin_token)

        def logged_in_name(request: gr.Request) -> tuple[Any, Any]:
            """With --auth, labels carry the login name: show it and lock the boxes."""
            if getattr(request, "username", None):
                box = gr.Textbox(value=request.username, interactive=False)
                return box, box
            return gr.Textbox(), gr.Textbox()

        def page_state() -> tuple[Any, ...]:
            """The server's state as it is now, on every page load: the serving model (it may have been
            switched or retrained since start-up) and the registered versions."""
            return (*demo_page_state(context), *models_page_state(context))

        app.load(page_state, None, [demo_tab.model_info, demo_tab.relabel, models_tab.table, models_tab.version,
                                    models_tab.corpus_note], api_visibility="private", show_progress="hidden")
        app.load(logged_in_name, None, [demo_tab.annotator, annotate_annotator], api_visibility="private")
        app.load(None, None, None, js=KEYBOARD_JS)
    app.queue(default_concurrency_limit=config.concurrency_limit, max_size=config.queue_max_size)
    app.ser_context = context  # for tests and embedding: the store and model this page serves
    return app


def security_options(config: AppConfig) -> dict[str, Any]:
    """The launch options that protect a public page: rate-limited logins (per user and per
    address) and nothing but the app's own cache served as files (clips go out as audio data)."""
    counter = FailureCounter()
    options: dict[str, Any] = {
        "auth": RateLimitedAuth(config.auth, counter) if config.auth else None,
        "auth_message": "Log in with your annotator account: your labels are saved under this name." if config.auth else None,
        "show_error": False,
    }
    if config.auth:
        from starlette.middleware import Middleware

        trust = on_spaces(os.environ)  # a Space's proxy sets X-Forwarded-For; elsewhere a client could forge it
        options["app_kwargs"] = {"middleware": [Middleware(LoginLimitMiddleware, counter=counter, trust_forwarded=trust)]}
    return options


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch`` from the config."""
    return {
        "server_name": config.host,
        "server_port": config.port,
        "share": config.share,
        "max_file_size": config.max_file_size,
        **security_options(config),
    }
