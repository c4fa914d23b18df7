"""POST /api/v1/predict beside the Gradio page: the real server over HTTP, with logins and limits."""

from __future__ import annotations

import io
import threading

import anyio
import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import HTTPException

from ser.http_api import Admission, parse_size
from ser.ui import AppConfig
from tests.app_server import free_port, serving
from tests.tiny_models import LABELS, save_tiny_wav2vec2

LOGIN = ("alice", "s3cret")


def flac_bytes(seconds: float, rate: int = 22050, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.cos(7 * t), rate, format="FLAC")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    model = save_tiny_wav2vec2(tmp_path_factory.mktemp("model"), seed=11)
    config = AppConfig(model=str(model), store=tmp_path_factory.mktemp("store"), port=free_port(), auth=(LOGIN,),
                       max_file_size="300kb", max_duration_s=4.0)
    with serving(config) as address:
        yield address


def test_predict_returns_probabilities_for_the_body(url):
    response = httpx.post(f"{url}/api/v1/predict", content=flac_bytes(1.5), auth=LOGIN, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["probs"]) == set(LABELS)
    assert abs(sum(body["probs"].values()) - 1) < 1e-5
    assert body["label"] == max(body["probs"], key=body["probs"].get)
    assert body["runtime"] == "eager"


@pytest.mark.parametrize("auth", [None, ("alice", "wrong"), ("mallory", "s3cret")])
def test_requests_without_a_valid_login_are_refused(url, auth):
    response = httpx.post(f"{url}/api/v1/predict", content=flac_bytes(1.0), auth=auth, timeout=60)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    batch = httpx.post(f"{url}/api/v1/predict/batch", files=[("files", ("a.flac", flac_bytes(1.0)))], auth=auth, timeout=60)
    assert batch.status_code == 401


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"", 400, "request body"),
        (b"this is text, not audio" * 10, 400, ""),
        (b"\x00" * 400_000, 413, "limit"),
    ],
)
def test_bad_input_gets_a_clear_error(url, body, status, message):
    response = httpx.post(f"{url}/api/v1/predict", content=body, auth=LOGIN, timeout=60)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and message in detail
    assert "Traceback" not in response.text


def test_the_page_clip_length_limit_applies(url):
    response = httpx.post(f"{url}/api/v1/predict", content=flac_bytes(6.0, rate=8000), auth=LOGIN, timeout=60)
    assert response.status_code == 400
    assert "long" in response.json()["detail"].lower() or "4" in response.json()["detail"]


def test_batch_predicts_each_file_and_reports_bad_ones(url):
    files = [
        ("files", ("one.flac", flac_bytes(1.0, freq=200))),
        ("files", ("broken.wav", b"RIFF" + b"\x00" * 50)),
        ("files", ("two.flac", flac_bytes(2.0, freq=300))),
    ]
    response = httpx.post(f"{url}/api/v1/predict/batch", files=files, auth=LOGIN, timeout=120)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["one.flac", "broken.wav", "two.flac"]
    assert "error" in results[1] and "probs" not in results[1]
    single = httpx.post(f"{url}/api/v1/predict", content=flac_bytes(1.0, freq=200), auth=LOGIN, timeout=60).json()
    assert results[0]["probs"] == pytest.approx(single["probs"], abs=1e-9)


def test_batch_needs_a_multipart_form(url):
    response = httpx.post(f"{url}/api/v1/predict/batch", content=flac_bytes(1.0), auth=LOGIN, timeout=60)
    assert response.status_code == 400
    assert "multipart" in response.json()["detail"]


def test_the_gradio_page_is_still_served_with_its_login(url, tmp_path):
    from gradio_client import Client

    with pytest.raises(Exception):
        Client(url + "/", verbose=False, auth=("alice", "wrong"))
    client = Client(url + "/", verbose=False, auth=LOGIN, download_files=str(tmp_path))
    clip = tmp_path / "clip.flac"
    clip.write_bytes(flac_bytes(1.0))
    from gradio_client import handle_file

    result = client.predict(handle_file(str(clip)), api_name="/predict")
    assert result[0]["label"] in LABELS


def test_admission_refuses_beyond_the_queue():
    """Concurrency 1 and no waiting room: a second request while one runs gets 503, not a wait."""
    admission = Admission(concurrency=1, queue_size=0)
    release = threading.Event()
    outcomes: list[str] = []

    async def main() -> None:
        async def first() -> None:
            await admission.run(release.wait)
            outcomes.append("first done")

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await anyio.sleep(0.2)
            try:
                await admission.run(lambda: None)
            except HTTPException as error:
                outcomes.append(f"second {error.status_code}")
            release.set()

    anyio.run(main)
    assert outcomes == ["second 503", "first done"]


def test_sizes_read_like_gradio():
    assert parse_size("25mb") == 25_000_000
    assert parse_size("5 MiB") == 5 * 2**20
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
