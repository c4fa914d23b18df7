"""What every handler needs from a request: who is asking, and errors a person can read.

With ``--auth`` the annotator is the logged-in user (a verified identity for crowd labels); without
it, the name typed in the page. Errors the user can fix (bad audio, no name, a full disk) become
``gr.Error`` messages that say why; anything else is a bug or a server fault: it is logged with its
traceback and the user is told only that it was. The page never shows a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from ser.audio import InvalidAudio
from ser.model import ModelLoadError
from ser.store import InvalidRequest, NotInStore, StoreError
from ser.ui.clip_sources import UnusableSource
from ser.ui.sandbox import PathRefused

log = logging.getLogger(__name__)
MAX_NAME = 100  # the store keeps at most this many characters of a name
# The project's errors for conditions a user can fix; their messages are written for that user.
USER_ERRORS = (InvalidAudio, InvalidRequest, NotInStore, StoreError, ModelLoadError, UnusableSource, PathRefused)
SERVER_FAULT = "something went wrong on the server; it has been logged."


def annotator_name(typed: str | None, request: gr.Request | None) -> str:
    """The logged-in user when there is one, else the typed name; a name is required to save."""
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return str(username)
    name = (typed or "").strip()
    if not name:
        raise gr.Error("Type your name in the 'Annotator' box first: every label records who gave it.")
    if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise gr.Error(f"An annotator name has at most {MAX_NAME} characters and no control characters.")
    return name


def labels_saved(name: str, count: int) -> str:
    """The running count an annotator sees after each save or undo."""
    return f"{name}, you have saved **{count}** label{'' if count == 1 else 's'}."


def message(error: BaseException) -> str:
    """The readable part of an exception (KeyError quotes its message; strip that)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error) or type(error).__name__


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Turn the errors a user can act on into a ``gr.Error`` that says what failed and why; log any
    other exception with its traceback and tell the user only that it was logged."""
    try:
        yield
    except gr.Error:
        raise
    except USER_ERRORS as error:
        raise gr.Error(f"{action}: {message(error)}") from error
    except Exception as error:
        log.exception("%s: unexpected error", action)
        raise gr.Error(f"{action}: {SERVER_FAULT}") from error
