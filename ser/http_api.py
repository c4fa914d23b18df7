"""A plain HTTP endpoint for programs, served beside the Gradio page on the same server.

Gradio's own API is built for its page (upload, queue, event stream): a program that only wants
probabilities for a clip pays for all of it. ``POST /api/v1/predict`` takes the audio file's bytes
as the request body and answers JSON; ``POST /api/v1/predict/batch`` takes several files as a
multipart form. Both sit behind the page's logins (HTTP Basic with the same user:password pairs),
its upload size and clip length limits, and its concurrency and queue limits::

    curl -u alice:secret --data-binary @examples/angry.flac http://127.0.0.1:7860/api/v1/predict
    curl -u alice:secret -F files=@examples/angry.flac -F files=@examples/sad.flac \\
         http://127.0.0.1:7860/api/v1/predict/batch

``mount(blocks, config)`` puts the routes and the page on one FastAPI app (``gr.mount_gradio_app``);
``serve(blocks, config)`` runs it with uvicorn, as ``Blocks.launch`` would.
"""

from __future__ import annotations

import base64
import hmac
import re
import threading
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ser.audio import InvalidAudio

API_PREFIX = "/api/v1"
MAX_BATCH_FILES = 32
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}


def parse_size(text: str | int) -> int:
    """``"25mb"`` -> bytes, as Gradio reads ``max_file_size``."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 25mb)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


class Admission:
    """The page's concurrency limit and queue length, for the API: at most ``concurrency`` clips run at
    once, at most ``queue_size`` requests wait, and the next one is refused (HTTP 503) at once."""

    def __init__(self, concurrency: int, queue_size: int) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, concurrency))
        self.queue_size = queue_size
        self._waiting = 0
        self._lock = threading.Lock()

    async def run(self, function: Any, *args: Any) -> Any:
        with self._lock:
            if self._waiting >= self.queue_size + self.limiter.total_tokens:
                raise HTTPException(503, "The server is busy: too many requests are waiting. Try again shortly.")
            self._waiting += 1
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)
        finally:
            with self._lock:
                self._waiting -= 1


def check_login(request: Request, logins: tuple[tuple[str, str], ...]) -> str | None:
    """The user name of a valid HTTP Basic login; None when the app has no logins. Raises 401 otherwise."""
    if not logins:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            user, password = "", ""
        matched = None
        for known_user, known_password in logins:  # compare every pair: no timing hint of which user exists
            same = hmac.compare_digest(user.encode(), known_user.encode()) & hmac.compare_digest(
                password.encode(), known_password.encode()
            )
            if same:
                matched = known_user
        if matched is not None:
            return matched
    raise HTTPException(401, "Log in with an annotator account (HTTP Basic).", headers={"WWW-Authenticate": 'Basic realm="ser"'})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, whatever Content-Length says."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"The upload is larger than the limit of {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"The upload is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def api_router(context: Any) -> APIRouter:
    """The /api/v1 routes over an ``AppContext`` (its config, model and audio limits)."""
    config = context.config
    limit = parse_size(config.max_file_size)
    admission = Admission(config.concurrency_limit, config.queue_max_size)
    router = APIRouter(prefix=API_PREFIX)

    def predict_bytes(data: bytes) -> dict[str, Any]:
        predictor = context.predictor  # one model for the whole request, even if it is swapped meanwhile
        probs = predictor.predict(context.load_audio(data))
        return {"label": max(probs, key=probs.get), "probs": probs, "model": predictor.version, "runtime": predictor.runtime}

    def predict_or_error(data: bytes) -> dict[str, Any]:
        try:
            return predict_bytes(data)
        except InvalidAudio as error:
            return {"error": str(error)}

    @router.post("/predict", summary="Probabilities per emotion for one audio file (the body)")
    async def predict(request: Request) -> JSONResponse:
        check_login(request, config.auth)
        data = await read_body(request, limit)
        if not data:
            raise HTTPException(400, "Send the audio file's bytes as the request body.")
        try:
            return JSONResponse(await admission.run(predict_bytes, data))
        except InvalidAudio as error:
            raise HTTPException(400, str(error)) from error

    @router.post("/predict/batch", summary="Probabilities for several files (multipart form field 'files')")
    async def predict_batch(request: Request) -> JSONResponse:
        check_login(request, config.auth)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit * MAX_BATCH_FILES:
            raise HTTPException(413, f"The batch is larger than {MAX_BATCH_FILES} files of {limit} bytes.")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(400, "Send the files as a multipart form, each in a field named 'files'.")
        form = await request.form(max_files=MAX_BATCH_FILES, max_fields=MAX_BATCH_FILES, max_part_size=limit)
        uploads = [item for item in form.getlist("files") if hasattr(item, "read")]
        if not uploads:
            raise HTTPException(400, "No files: send each one in a multipart field named 'files'.")
        results = []
        for upload in uploads:
            data = await upload.read(limit + 1)
            if len(data) > limit:
                results.append({"filename": upload.filename, "error": f"larger than the limit of {limit} bytes"})
                continue
            results.append({"filename": upload.filename, **(await admission.run(predict_or_error, data))})
        return JSONResponse({"results": results})

    return router


def mount(blocks: Any, config: Any, **launch: Any) -> FastAPI:
    """One FastAPI app: the API routes, then the Gradio page at ``/`` with the page's own options."""
    import gradio as gr

    server = FastAPI(title="Speech emotion recognition", docs_url=f"{API_PREFIX}/docs", openapi_url=f"{API_PREFIX}/openapi.json")
    server.include_router(api_router(blocks.ser_context))
    options = {
        "auth": list(config.auth) or None,
        "auth_message": launch.get("auth_message"),
        "max_file_size": config.max_file_size,
        "show_error": bool(launch.get("show_error", False)),
        "server_name": config.host,
        "server_port": config.port,
    }
    return gr.mount_gradio_app(server, blocks, path="/", **options)


def serve(blocks: Any, config: Any, **launch: Any) -> None:
    """Serve the page and the API with uvicorn (``Blocks.launch`` cannot add routes)."""
    import uvicorn

    uvicorn.run(mount(blocks, config, **launch), host=config.host, port=config.port, log_level="warning")
