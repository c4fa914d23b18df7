"""One clip, one answer: the Demo tab, the Annotate tab, the HTTP API and the CLI agree on a long clip.

The clip is longer than the Demo's timeline windows, where the Demo tab used to average the windows
while every other path read the clip in one pass (``ser.model``'s long-clip rule).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from gradio_client import Client, handle_file

from ser.audio import SAMPLE_RATE, load_audio
from ser.ui import AppConfig
from tests.app_server import free_port, serving
from tests.conftest import REPO
from tests.tiny_models import LABELS, save_tiny_wav2vec2

EXAMPLES = REPO / "examples"


def long_clip(path: Path) -> Path:
    """8.4 s of speech: three example clips end to end, as 16-bit FLAC so every path (and the store's
    PCM16 copy) decodes exactly the same samples."""
    parts = [load_audio(EXAMPLES / name) for name in ("angry.flac", "sad.flac", "happy.flac")]
    sf.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return path


def confidences(label_output: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in label_output["confidences"]}


def cli_probabilities(folder: Path, model: Path) -> list[dict[str, float]]:
    """``python -m ser predict FOLDER --json``, batching equal-length clips where the model allows it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "eager"}
    command = [sys.executable, "-m", "ser", "predict", str(folder), "--model", str(model), "--json", "--batch-size", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["probs"] for line in done.stdout.splitlines()]


def test_every_path_gives_the_same_probabilities_for_a_long_clip(tmp_path: Path) -> None:
    model = save_tiny_wav2vec2(tmp_path / "model", seed=2, init_std=0.5)  # peaked: its answer depends on the audio
    folder = tmp_path / "clips"
    folder.mkdir()
    clip = long_clip(folder / "long.flac")
    shutil.copy(clip, folder / "long-copy.flac")  # two clips of one length: the CLI may batch them
    config = AppConfig(model=str(model), store=tmp_path / "store", port=free_port(), max_duration_s=20.0)
    with serving(config) as url:
        client = Client(f"{url}/", verbose=False, download_files=str(tmp_path / "downloads"))
        bars, plot, *_ = client.predict(handle_file(clip), api_name="/predict")
        demo = confidences(bars)
        client.predict("", [handle_file(clip)], "long", None, api_name="/load_queue")
        _, _, guess, *_ = client.predict("ann", "long", "fifo", api_name="/next_clip")
        annotate = confidences(guess["value"])  # an update: the guess may be hidden per queue
        api = httpx.post(f"{url}/api/v1/predict", content=clip.read_bytes(), timeout=120).json()["probs"]
    cli = cli_probabilities(folder, model)

    windows = {}
    for _, label, prob in plot["value"]["data"]:
        windows.setdefault(label, []).append(prob)
    assert max(abs(np.mean(windows[k]) - demo[k]) for k in LABELS) > 1e-3  # averaging windows would show
    for answer in (annotate, api, *cli):
        assert set(answer) == set(LABELS)
        assert max(abs(answer[k] - demo[k]) for k in LABELS) <= 1e-5  # batched in the CLI: within BATCH_TOLERANCE
