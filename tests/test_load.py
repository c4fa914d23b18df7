"""The app under load: 32 people predicting and saving corrections at once lose nothing.

A real Gradio server (the shipped queue settings: ``AppConfig``'s defaults) with a tiny random
model; 32 gradio_client sessions, each with its own annotator name and its own clips (a new one
each round: saving the same clip again is an edit, which replaces the label), alternate predict
and save for a bounded time. Afterwards every save must be in the store, under the right
person, with the exact label in the order given, and SQLite must report an intact database.
No timing asserts: speed is benchmarks/app.py's job.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from ser.audio import load_audio
from ser.model import Predictor
from ser.store import clip_sha256
from ser.ui import AppConfig
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2

CLIENTS = 32
ROUNDS = 5  # predict + save per round; a client stops after ROUNDS or DEADLINE_S, whichever comes first
DEADLINE_S = 20.0
CONNECT_TIMEOUT_S = 60.0
# gradio_client's uploads time out after httpx's default 5 s, which a busy 2-core machine can exceed
# with 32 uploads queued; a browser waits longer, and this test is about losing nothing, not speed.
HTTP_TIMEOUT_S = 60.0
TOLERANCE = 1e-6  # the tiny random model's outputs differ between clips by ~1e-5

pytestmark = pytest.mark.timeout(180)


@dataclass
class Session:
    """What one simulated visitor did, for checking against the store afterwards."""

    name: str
    clips: list[Path]  # one per round
    saved: list[str] = field(default_factory=list)
    predictions: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def confidences(label_output: dict) -> dict[str, float]:
    """The bars as {label: probability}, whether the app returns a value or a ``gr.Label`` update."""
    value = label_output.get("value", label_output) if label_output.get("__type__") == "update" else label_output
    return {item["label"]: item["confidence"] for item in value["confidences"]}


def visit(url: str, session: Session, index: int, start: threading.Barrier, tmp: Path) -> None:
    """One visitor: connect, wait for everyone, then predict and save until done; record every error."""
    try:
        client = Client(url, verbose=False, download_files=str(tmp), httpx_kwargs={"timeout": HTTP_TIMEOUT_S})
    except Exception:  # noqa: BLE001 - a refused connection is a load failure too: record it, do not hang the barrier
        session.errors.append("connect: " + traceback.format_exc())
        start.abort()
        return
    try:
        start.wait(timeout=CONNECT_TIMEOUT_S)
    except threading.BrokenBarrierError:
        session.errors.append("not every client could connect")
        return
    deadline = time.monotonic() + DEADLINE_S
    for round_no in range(ROUNDS):
        if time.monotonic() > deadline:
            break
        label = LABELS[(index + round_no) % len(LABELS)]
        try:
            clip = session.clips[round_no]
            bars, _, _, _ = client.predict(handle_file(clip), api_name="/predict")
            session.predictions.append(confidences(bars))
            status = client.predict(handle_file(clip), label, f"round {round_no}", session.name, True,
                                    api_name="/save_correction")  # True: the visitor agrees to keeping the clip
        except Exception:  # noqa: BLE001 - every failure is a finding, reported by the checks below
            session.errors.append(f"round {round_no}: " + traceback.format_exc())
            break
        session.saved.append(label)
        if f"**{len(session.saved)}**" not in status:
            session.errors.append(f"round {round_no}: the running count is wrong in {status!r}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("load")


@pytest.fixture(scope="module")
def model_dir(workdir: Path) -> Path:
    return save_tiny_wav2vec2(workdir / "tiny-load", LABELS)


@pytest.fixture(scope="module")
def sessions(workdir: Path) -> list[Session]:
    folder = workdir / "clips"
    folder.mkdir()
    return [
        Session(f"annotator-{i:02d}", [tone(folder / f"tone{i:02d}-{r}.wav", 1.0, 150 * 1.1**i * (1 + 0.02 * r))
                                       for r in range(ROUNDS)])
        for i in range(CLIENTS)
    ]


@pytest.fixture(scope="module")
def load_run(workdir: Path, model_dir: Path, sessions: list[Session]):
    """Serve the app, run every visitor at once, and hand the finished app to the checks."""
    config = AppConfig(model=str(model_dir), store=workdir / "store", models_dir=workdir / "models")
    assert config.queue_max_size >= CLIENTS, "the shipped queue size would refuse some of these visitors"
    with running_app(config) as (app, url):
        start = threading.Barrier(CLIENTS)
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            futures = [
                pool.submit(visit, url, session, i, start, workdir / f"downloads{i}")
                for i, session in enumerate(sessions)
            ]
            for future in futures:
                future.result()
        yield app


def test_no_request_fails(load_run, sessions: list[Session]) -> None:
    errors = {s.name: s.errors for s in sessions if s.errors}
    assert not errors, errors
    assert all(s.saved for s in sessions), "some visitor never got to save a label"
    print("labels saved per visitor:", sorted(len(s.saved) for s in sessions))


def test_every_saved_label_is_in_the_store(load_run, sessions: list[Session]) -> None:
    store = load_run.ser_context.store
    version = load_run.ser_context.predictor.version
    for session in sessions:
        for round_no, (clip, label) in enumerate(zip(session.clips, session.saved)):
            rows = store.labels_for(clip_sha256(load_audio(clip)))
            assert [(row["annotator"], row["label"], row["note"]) for row in rows] == [
                (session.name, label, f"round {round_no}")]  # each clip got only its owner's one label
            assert rows[0]["model_version"] == version
        assert store.count_labels(session.name) == len(session.saved)
    assert store.count_labels() == sum(len(s.saved) for s in sessions)
    assert store.count_clips() == sum(len(s.saved) for s in sessions)
    assert store.integrity_check() == "ok"


def test_each_visitor_got_its_own_clips_prediction(load_run, model_dir: Path, sessions: list[Session]) -> None:
    """Answers are never crossed between concurrent sessions: each matches the model on that visitor's clip."""
    predictor = Predictor.from_pretrained(str(model_dir), runtime="eager")  # as the server runs it
    first = [predictor.predict(load_audio(s.clips[0])) for s in sessions]
    closest = min(max(abs(a[k] - b[k]) for k in LABELS) for a, b in itertools.combinations(first, 2))
    assert closest > 10 * TOLERANCE, "the clips must give distinct predictions for this check to mean anything"
    for session in sessions:
        for clip, got in zip(session.clips, session.predictions):
            assert got == pytest.approx(predictor.predict(load_audio(clip)), abs=TOLERANCE), session.name
