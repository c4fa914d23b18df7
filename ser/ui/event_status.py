"""No empty "Error" pills left on the page after a handler refuses a request.

When a handler raises (``gr.Error``: a readable refusal such as "Record or upload some speech
first"), Gradio 6 shows the message as a toast and also marks every output of that event with an
error status: a red "Error" pill with no text over each output, which stays after the toast fades
until another event updates that component. API clients need the raised error (``gradio_client``
reports it as ``AppError`` with the message), so the handlers keep raising; on the page, one
``.failure`` step, run only when the event failed, touches the same outputs without changing them
(``gr.skip()``) and with ``show_progress="hidden"``, which returns their status to "complete".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr


def _unchanged(count: int) -> Any:
    def keep(*_: Any) -> Any:
        return gr.skip() if count == 1 else tuple(gr.skip() for _ in range(count))

    return keep


def without_error_pills(event: Any, outputs: Sequence[gr.components.Component]) -> Any:
    """After ``event`` fails, clear the error status Gradio put on ``outputs`` (the toast keeps the
    message); returns the event so calls can be chained. The step is private: not an API endpoint."""
    outputs = list(outputs)
    event.failure(_unchanged(len(outputs)), None, outputs, show_progress="hidden", queue=False,
                  api_visibility="private")
    return event
