"""Start the real app on a free port for the app and browser tests (helpers, not tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.ui import AppConfig, build_app
from ser.ui.app import security_options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tone(path: Path, seconds: float, freq: float, rate: int = 22050) -> Path:
    """A noisy tone: real, non-silent audio whose samples (and so store id) differ per frequency."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    samples = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, samples.astype(np.float32), rate)
    return path


@contextmanager
def running_app(config: AppConfig, **launch: object) -> Iterator[tuple[object, str]]:
    """The app built from ``config`` and served on 127.0.0.1; yields (app, url) and closes it after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SER_RUNTIME", "eager")  # the ONNX runtime check is ser.runtime's to test, not the app's
        app = build_app(config)
        port = free_port()
        options = {**security_options(config), "max_file_size": "5mb", **launch}  # the protections app.py launches with
        app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **options)
        try:
            yield app, f"http://127.0.0.1:{port}/"
        finally:
            app.close()


@contextmanager
def serving(config: AppConfig) -> Iterator[str]:
    """The app and the HTTP API on one uvicorn server in a thread, as ``python app.py`` serves them;
    yields the server's address (the page at ``/``, the API under ``/api/v1``)."""
    import uvicorn

    from ser.http_api import mount

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SER_RUNTIME", "eager")
        blocks = build_app(config)
        server = uvicorn.Server(uvicorn.Config(mount(blocks, config), host="127.0.0.1", port=config.port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start"
        try:
            yield f"http://127.0.0.1:{config.port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
