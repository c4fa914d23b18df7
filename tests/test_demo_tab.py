"""The Demo tab's per-clip rules, through the real server (gradio_client) and its plain functions.

Save is idempotent per (browser session, clip, annotator): a double click or a retry stores one
row, an edit replaces the row, and after an Undo a save stores it again. A timeline is drawn only
for clips of at least two windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from ser.audio import SAMPLE_RATE
from ser.model import Predictor
from ser.ui import AppConfig
from ser.ui.demo import TIMELINE_MIN_WINDOWS, analyse
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo-tab")
    model = save_tiny_wav2vec2(root / "tiny-demo", LABELS)
    with running_app(AppConfig(model=str(model), store=root / "store")) as (app, url):
        yield app, url, root


def standing(store, name: str) -> list[dict]:
    return [label for sha in store.votes() for label in store.labels_for(sha) if label["annotator"] == name]


def test_saving_the_same_clip_twice_stores_one_row(served, tmp_path: Path) -> None:
    app, url, root = served
    store = app.ser_context.store
    clip = handle_file(tone(root / "twice.wav", 1.5, 260))
    client = Client(url, verbose=False, download_files=str(tmp_path))
    first = client.predict(clip, "angry", "loud", "fay", True, api_name="/save_correction")
    again = client.predict(clip, "angry", "loud", "fay", True, api_name="/save_correction")
    assert "fay, you have saved **1** label" in first
    assert again.startswith("Already saved") and "**1** label" in again
    assert [(row["label"], row["note"]) for row in standing(store, "fay")] == [("angry", "loud")]
    # Two saves of one session arriving at once (a double click, a retry): still one row.
    jobs = [client.submit(clip, "angry", "loud", "fay", True, api_name="/save_correction") for _ in range(2)]
    assert all("**1** label" in job.result() for job in jobs)
    assert store.count_labels("fay") == 1


def test_an_edit_replaces_the_row_and_undo_lets_it_be_saved_again(served, tmp_path: Path) -> None:
    app, url, root = served
    store = app.ser_context.store
    clip = handle_file(tone(root / "edited.wav", 1.5, 270))
    client = Client(url, verbose=False, download_files=str(tmp_path))
    client.predict(clip, "sad", "", "gus", True, api_name="/save_correction")
    edited = client.predict(clip, "happy", "on second listen", "gus", True, api_name="/save_correction")
    assert edited.startswith("Updated your label to **happy**") and "**1** label" in edited
    assert [(row["label"], row["note"]) for row in standing(store, "gus")] == [("happy", "on second listen")]
    assert "**0**" in client.predict("gus", api_name="/undo_correction")
    saved = client.predict(clip, "happy", "on second listen", "gus", True, api_name="/save_correction")
    assert saved.startswith("Saved **happy**") and store.count_labels("gus") == 1
    # Another browser session (another visitor typing the same name) is not this page: it saves its own.
    other = Client(url, verbose=False, download_files=str(tmp_path))
    assert other.predict(clip, "happy", "on second listen", "gus", True, api_name="/save_correction").startswith("Saved")


@pytest.fixture(scope="module")
def predictor(served) -> Predictor:
    return served[0].ser_context.predictor


@pytest.mark.parametrize("seconds, drawn", [(3.0, False), (4.5, False), (5.9, False), (6.0, True), (9.0, True)])
def test_a_timeline_needs_two_windows_of_audio(predictor: Predictor, seconds: float, drawn: bool) -> None:
    window_s, hop_s = 3.0, 1.5
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clip = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    probs, timeline = analyse(predictor, clip, window_s, hop_s)
    assert set(probs) == set(LABELS)
    assert (timeline is not None) is drawn
    if drawn:
        assert len(timeline) >= TIMELINE_MIN_WINDOWS + 1  # at least three points: something to follow
