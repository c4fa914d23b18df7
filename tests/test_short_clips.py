"""A clip too short to judge gets that answer on every path, not a confident "neutral 100 %".

One rule (``ser.audio.check_judgeable``, applied by ``Predictor.predict``): the Python API raises
``TooShortToJudge`` (an ``InvalidAudio``), the CLI reports the file and exits non-zero, the HTTP
API answers 400 with the reason, and the page's /predict endpoint raises a readable error.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from ser.audio import MIN_JUDGED_S, SAMPLE_RATE, InvalidAudio, TooShortToJudge, load_audio
from ser.model import Predictor
from ser.ui import AppConfig
from tests.app_server import free_port, serving
from tests.test_cli import run_cli
from tests.tiny_models import LABELS, save_tiny_wav2vec2


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model") / "tiny-short", LABELS)


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.from_pretrained(model_dir, runtime="eager")


@pytest.mark.parametrize("seconds", [0.1, 0.3, MIN_JUDGED_S - 0.01])
def test_a_clip_under_the_minimum_is_too_short_to_judge(predictor: Predictor, seconds: float) -> None:
    clip = tone(seconds)
    assert len(load_audio((SAMPLE_RATE, clip))) == len(clip)  # it decodes: corpora and training may read it
    with pytest.raises(TooShortToJudge, match="too short to judge") as caught:
        predictor.predict((SAMPLE_RATE, clip))
    assert isinstance(caught.value, InvalidAudio)
    with pytest.raises(TooShortToJudge):
        predictor.predict_group([(SAMPLE_RATE, clip)] * 3)


def test_a_clip_of_the_minimum_gets_an_answer(predictor: Predictor) -> None:
    probs = predictor.predict((SAMPLE_RATE, tone(MIN_JUDGED_S)))
    assert set(probs) == set(LABELS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_the_cli_reports_a_short_clip_and_exits_non_zero(model_dir, tmp_path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "click.wav", tone(0.1), SAMPLE_RATE)
    sf.write(folder / "word.wav", tone(1.0), SAMPLE_RATE)
    done = run_cli("predict", str(folder), "--model", str(model_dir), "--json")
    assert done.returncode == 1, done.stderr
    assert "click.wav" in done.stderr and "too short to judge" in done.stderr
    judged = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(judged) == 1 and "word.wav" in judged[0]  # the other clip still gets its answer


def test_the_http_api_and_the_page_refuse_a_short_clip(model_dir, tmp_path) -> None:
    config = AppConfig(model=str(model_dir), store=tmp_path / "store", port=free_port())
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.2), SAMPLE_RATE, format="FLAC")
    clip = tmp_path / "short.flac"
    clip.write_bytes(buffer.getvalue())
    with serving(config) as url:
        response = httpx.post(f"{url}/api/v1/predict", content=buffer.getvalue(), timeout=120)
        assert response.status_code == 400 and "too short to judge" in response.json()["detail"]
        client = Client(f"{url}/", verbose=False, download_files=str(tmp_path))
        with pytest.raises(AppError, match="too short to judge"):
            client.predict(handle_file(clip), api_name="/predict")
