"""The Models tab's retrain button, end to end: the real `python -m finetune retrain` child process.

Slower than the other app tests (the child imports torch and trains a probe), so it has its own
module and its own small store: first a retrain with nothing to learn from must fail readably
while the app keeps serving, then, with labels in the store, it must produce a new version. That
version knows fewer emotions than the serving model, so it is only a candidate: the app switches
to it when an admin confirms in a second step, and one more click rolls back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from ser.audio import load_audio
from ser.ui import AppConfig
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2

TOKEN = "retrain-admin-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("retrain")
    model = save_tiny_wav2vec2(root / "tiny-serving", LABELS)
    config = AppConfig(model=str(model), store=root / "store", models_dir=root / "models", admin_token=TOKEN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SER_CACHE_DIR", str(root / "cache"))  # the child's feature cache stays in tmp
        with running_app(config) as (app, url):
            yield app, url, root


def test_retrain_fails_readably_then_switches_to_the_new_model(server, tmp_path: Path) -> None:
    app, url, root = server
    client = Client(url, verbose=False, download_files=str(tmp_path))

    with pytest.raises(AppError, match="Only an admin can retrain"):
        client.predict("majority", "", api_name="/retrain")
    verdict, progress, log, info, _, _ = client.predict("majority", TOKEN, api_name="/retrain")
    assert verdict.startswith("### Failed (exit code 2)") and "nothing to train on" in verdict
    assert "keeps serving `tiny-serving`" in verdict and "tiny-serving" in info
    assert "nothing to train on" in log  # the full log is kept beside the verdict
    assert "running at niceness" in log and "niceness 0 " not in log  # the child runs at a lower priority

    store = app.ser_context.store
    for index in range(6):  # labels as the Demo and Annotate tabs would have saved them
        clip = tone(root / f"labelled{index}.wav", 1.0, 200 + 70 * index)
        store.add_label(store.add_clip(load_audio(clip)), "alice", ("happy", "sad")[index % 2])
    verdict, progress, log, info, table, dropdown = client.predict("majority", TOKEN, api_name="/retrain")
    assert "[retrain 7/7]" in log, log
    assert verdict.startswith("### Kept aside: `v0001-"), verdict  # the verdict first, in words, with the figures
    assert "new UAR" in verdict and "serving UAR" in verdict
    assert f"fewer than the serving model's {len(LABELS)}" in verdict
    assert "value='100'" in progress and "Stage 7 of 7" in progress and "%|" not in progress
    assert store.active_model()["version"] == "tiny-serving" and "tiny-serving" in info
    version = app.ser_context.pending_candidate["version"]
    assert version.startswith("v0001-") and {row[0] for row in table["data"]} == {"tiny-serving", version}

    status, info, _, dropdown = client.predict(TOKEN, api_name="/adopt_candidate")
    assert version in status and version in info and store.active_model()["version"] == version
    bars, _, info, _ = client.predict(handle_file(root / "labelled0.wav"), api_name="/predict")
    assert version in info and {item["label"] for item in bars["confidences"]} == {"happy", "sad"}

    status, info, _, _ = client.predict(TOKEN, api_name="/rollback")
    assert "tiny-serving" in status and store.active_model()["version"] == "tiny-serving"
