"""The app end to end: a real Gradio server on a free port, driven by gradio_client like a user's page.

One server per module (starting one costs about a second after imports); the model is a tiny
random wav2vec2 built from a config, so the tests check the app's plumbing, not accuracy.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from ser.ui import AppConfig, parse_config
from ser.ui.config import parse_auth
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2

MAX_DURATION_S = 20.0
ADMIN_TOKEN = "test-admin-token"


def tiny_model(folder: Path, labels: list[str]) -> Path:
    """A random wav2vec2 classifier; its version is its folder's name."""
    return save_tiny_wav2vec2(folder, labels)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="module")
def model_dir(workdir: Path) -> Path:
    return tiny_model(workdir / "tiny-a", LABELS)


@pytest.fixture(scope="module")
def clips(workdir: Path) -> dict[str, Path]:
    folder = workdir / "clips"
    folder.mkdir()
    queue = workdir / "queue"
    queue.mkdir()
    return {
        "short": tone(folder / "short.wav", 1.5, 220),
        "long": tone(folder / "long.wav", 7.0, 330),
        "too_long": tone(folder / "too_long.wav", MAX_DURATION_S + 2, 440, rate=8000),
        "text": _write(folder / "notes.wav", b"this is not audio, just text pretending to be a wav\n" * 20),
        "queue": queue,
        **{f"q{i}": tone(queue / f"q{i}.wav", 1.0, 500 + 100 * i) for i in range(3)},
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def server(workdir: Path, model_dir: Path):
    config = AppConfig(
        model=str(model_dir), store=workdir / "store", models_dir=workdir / "models",
        max_duration_s=MAX_DURATION_S, data_roots=(workdir,), admin_token=ADMIN_TOKEN,
    )
    with running_app(config) as served:
        yield served


@pytest.fixture
def client(server, tmp_path: Path) -> Client:
    """A new client is a new browser session: its own gr.State (e.g. the clip on screen)."""
    return Client(server[1], verbose=False, download_files=str(tmp_path))


def store_of(server):
    return server[0].ser_context.store


def confidences(label_output: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in label_output["confidences"]}


def served_sha(info: str) -> str:
    match = re.search(r"Clip `([0-9a-f]{12})`", info)
    assert match, info
    return match.group(1)


# -- config ---------------------------------------------------------------------------------------


def test_config_defaults_flags_and_env(tmp_path: Path) -> None:
    local = parse_config([], env={})
    assert (local.host, local.port, local.share, local.store, local.auth) == ("127.0.0.1", 7860, False, Path("store"), ())
    from_env = parse_config([], env={"SER_MODEL": "m", "SER_STORE": str(tmp_path), "SER_PORT": "9000", "SPACE_ID": "u/s"})
    assert (from_env.model, from_env.store, from_env.port, from_env.host) == ("m", tmp_path, 9000, "0.0.0.0")
    flags = parse_config(["--model", "x", "--port", "1234", "--host", "0.0.0.0", "--auth", "ann:pw,bob:pw2"],
                         env={"SER_MODEL": "m"})
    assert (flags.model, flags.port, flags.auth) == ("x", 1234, (("ann", "pw"), ("bob", "pw2")))
    assert flags.retrain_out == Path("store") / "models"
    with pytest.raises(argparse.ArgumentTypeError, match="user:password pairs"):
        parse_auth("no-password")


# -- demo tab ---------------------------------------------------------------------------------------


def test_predict_gives_a_probability_per_label(client: Client, clips) -> None:
    bars, plot, info, relabel = client.predict(handle_file(clips["short"]), api_name="/predict")
    probs = confidences(bars)
    assert set(probs) == set(LABELS)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert bars["label"] == max(probs, key=probs.get) == relabel["value"]  # relabel pre-selected: "confirm"
    assert plot["visible"] is False  # a short clip has no timeline
    assert "tiny-a" in info


def test_long_clip_shows_emotion_over_time(client: Client, server, clips) -> None:
    bars, plot, _, _ = client.predict(handle_file(clips["long"]), api_name="/predict")
    assert plot["visible"] is True
    frame = plot["value"]
    assert frame["columns"] == ["time_s", "emotion", "probability"]
    windows = {row[0] for row in frame["data"]}
    assert len(windows) >= 3 and {row[1] for row in frame["data"]} == set(LABELS)
    context = server[0].ser_context  # the bars are the clip's own answer, as every other path gives it
    expected = context.predictor.predict(context.load_audio(str(clips["long"])))
    for label, prob in confidences(bars).items():
        assert prob == pytest.approx(expected[label], abs=1e-6)


def test_noise_reduction_toggle_predicts_the_denoised_clip(client: Client, server, clips) -> None:
    from ser.denoise import denoise

    bars, _, info, _ = client.predict(handle_file(clips["short"]), False, True, api_name="/predict")
    assert "background noise reduced" in info
    context = server[0].ser_context
    expected = context.predictor.predict(denoise(context.load_audio(str(clips["short"]))))
    for label, prob in confidences(bars).items():
        assert prob == pytest.approx(expected[label], abs=1e-6)


@pytest.mark.parametrize("clip, expected", [("text", "not audio"), ("too_long", "long")])
def test_bad_audio_gives_a_readable_error(client: Client, clips, clip: str, expected: str) -> None:
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(clips[clip]), api_name="/predict")
    text = str(caught.value)
    assert expected in text.lower() and "Traceback" not in text


def test_save_correction_then_undo(client: Client, server, clips) -> None:
    store = store_of(server)
    status = client.predict(handle_file(clips["short"]), "angry", "sounds cross", "carol", True,
                            api_name="/save_correction")
    assert "carol" in status and "**1**" in status
    (sha, votes), = [(sha, by) for sha, by in store.votes().items() if "carol" in by]
    label = store.labels_for(sha)[-1]
    assert (label["label"], label["note"], label["model_version"]) == ("angry", "sounds cross", "tiny-a")
    assert set(label["model_probs"]) == set(LABELS)
    assert store.clip_info(sha)["source"] == "short.wav"

    assert "**0**" in client.predict("carol", api_name="/undo_correction")
    assert store.count_labels("carol") == 0
    assert "no label saved" in client.predict("carol", api_name="/undo_correction")


def test_a_bug_is_logged_with_its_traceback_and_the_user_told_only_that(
    client: Client, server, clips, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("probs")  # a programming error, not something the user can fix

    monkeypatch.setattr(store_of(server), "add_label", broken)
    with caplog.at_level(logging.ERROR, logger="ser.ui.users"), pytest.raises(AppError) as caught:
        client.predict(handle_file(clips["short"]), "angry", "", "dave", True, api_name="/save_correction")
    text = str(caught.value)
    assert "Could not save: something went wrong on the server; it has been logged." in text
    assert "probs" not in text and "Traceback" not in text
    logged = [record for record in caplog.records if record.exc_info and record.exc_info[0] is KeyError]
    assert logged and "Traceback" in caplog.text and "raise KeyError(\"probs\")" in caplog.text


def test_a_user_error_still_says_what_to_fix(client: Client) -> None:
    with pytest.raises(AppError, match="Could not delete: an annotator name is required"):
        client.predict("  ", ADMIN_TOKEN, api_name="/delete_annotator")


def test_save_needs_an_annotator_name(client: Client, clips) -> None:
    with pytest.raises(AppError, match="name"):
        client.predict(handle_file(clips["short"]), "sad", "", "  ", True, api_name="/save_correction")


def test_logged_in_annotator_is_the_verified_identity(workdir: Path, model_dir: Path, clips, tmp_path: Path) -> None:
    config = AppConfig(model=str(model_dir), store=workdir / "auth-store", auth=(("ann", "secret"),))
    with running_app(config, auth=list(config.auth)) as (app, url):
        # Gradio answers a wrong password with 400, which gradio_client reports as this ValueError.
        with pytest.raises(ValueError, match="^Could not login to "):
            Client(url, verbose=False, download_files=str(tmp_path), auth=("ann", "wrong"))
        client = Client(url, verbose=False, download_files=str(tmp_path), auth=("ann", "secret"))
        client.predict(handle_file(clips["short"]), "sad", "", "mallory", True, api_name="/save_correction")
        store = app.ser_context.store
        assert store.count_labels("ann") == 1 and store.count_labels("mallory") == 0


# -- annotate tab ------------------------------------------------------------------------------------


SERVED = ("audio", "choice", "guess", "info", "note", "status", "progress", "keys", "quiet_audio")


def shown(values: tuple) -> dict:
    """What the Annotate tab's next/save/skip/undo endpoints return, by name."""
    assert len(values) == len(SERVED)
    return dict(zip(SERVED, values))


def test_two_annotators_each_keep_their_own_place(server, clips, tmp_path: Path) -> None:
    alice = Client(server[1], verbose=False, download_files=str(tmp_path / "a"))
    bob = Client(server[1], verbose=False, download_files=str(tmp_path / "b"))
    report, _ = alice.predict(str(clips["queue"]), None, "pair", ADMIN_TOKEN, api_name="/load_queue")
    assert "Added **3** clips" in report

    page = shown(alice.predict("alice", "pair", "fifo", api_name="/next_clip"))
    first = served_sha(page["info"])
    assert Path(page["audio"]).is_file() and page["guess"]["value"]["label"] in LABELS
    assert page["choice"]["value"] is None  # the guess is shown with its score, never pre-selected
    assert "Clip **1 of 3** in queue **pair** for alice" in page["progress"].replace("<b>", "**").replace("</b>", "**")
    page = shown(alice.predict("alice", "pair", "fifo", "happy", "", api_name="/annotate_save"))
    second = served_sha(page["info"])
    assert second != first and "alice, you have saved **1** label." in page["status"]

    page = shown(bob.predict("bob", "pair", "fifo", api_name="/next_clip"))
    assert served_sha(page["info"]) == first  # bob has not labelled the first clip yet
    bob.predict("bob", "pair", "fifo", "sad", "", api_name="/annotate_save")
    page = shown(bob.predict("bob", "pair", "fifo", api_name="/annotate_skip"))
    assert served_sha(page["info"]) not in (first, second)  # bob skipped the second clip

    page = shown(alice.predict("alice", "pair", "fifo", api_name="/annotate_undo"))
    assert served_sha(page["info"]) == first and "alice, you have saved **0** labels." in page["status"]  # undo brings the clip back
    alice.predict("alice", "pair", "fifo", "sad", "", api_name="/annotate_save")

    figures, per_clip, per_annotator = alice.predict("pair", api_name="/agreement")
    assert "Fleiss" in figures and "Krippendorff" in figures
    rows = {row[0]: row for row in per_clip["data"]}
    assert rows[first][2] == 2 and rows[first][3] == "sad" and rows[first][4] == 1.0
    assert all(row[2] >= 2 for row in per_clip["data"])  # clips with one label are not agreement
    counts = {row[0]: row[1] for row in per_annotator["data"]}
    assert counts["alice"] == 1 and counts["bob"] == 1


def test_loading_a_folder_predicts_nothing_before_the_first_clip_is_served(server, workdir: Path, monkeypatch,
                                                                          tmp_path: Path) -> None:
    """Issue #14, problem 8: every clip of a folder was predicted before the first could be served."""
    import threading

    folder = workdir / "lazy-queue"
    folder.mkdir()
    for index in range(4):
        tone(folder / f"lazy{index}.wav", 1.0, 1300 + 70 * index)
    predictor = server[0].ser_context.predictor
    original, threads = predictor.predict, []

    def watched(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", watched)
    client = Client(server[1], verbose=False, download_files=str(tmp_path))
    report, _ = client.predict(str(folder), None, "lazy", ADMIN_TOKEN, api_name="/load_queue")
    assert "Added **4** clips" in report
    assert [name for name in threads if name != "ser-predict-queue"] == []  # only the background pass predicts
    page = shown(client.predict("lena", "lazy", "least_confident", api_name="/next_clip"))
    assert set(confidences(page["guess"]["value"])) == set(LABELS)


def test_loading_progress_is_drawn_on_the_queue_status_not_the_dropdown(server) -> None:
    """Issue #14, problem 8: the progress bar of loading a folder was drawn inside the queue dropdown."""
    config = server[0].get_config_file()
    ids = {component.get("props", {}).get("elem_id"): component["id"] for component in config["components"]}
    (load,) = [d for d in config["dependencies"] if d.get("api_name") == "load_queue"]
    assert ids["annotate-queue"] in load["outputs"]  # the dropdown is updated...
    assert load.get("show_progress_on") == [ids["queue-status"]]  # ...but the progress shows on the status line


def test_number_keys_keep_their_meaning_when_the_serving_model_changes(server, workdir: Path, tmp_path: Path) -> None:
    """Issue #14, problem 10: the number keys changed meaning when the model's label set changed."""
    folder = workdir / "keys-queue"
    folder.mkdir()
    for index in range(2):
        tone(folder / f"k{index}.wav", 1.0, 1700 + 90 * index)
    client = Client(server[1], verbose=False, download_files=str(tmp_path))
    client.predict(str(folder), None, "stable-keys", ADMIN_TOKEN, api_name="/load_queue")
    before = shown(client.predict("kira", "stable-keys", "fifo", api_name="/next_clip"))
    assert [value for _, value in before["choice"]["choices"]] == LABELS
    other = tiny_model(workdir / "tiny-keys", ["calm", "fearful", "boredom"])
    store_of(server).register_model("tiny-keys", str(other), {})
    client.predict(api_name="/list_models")  # the Models tab's choices now include it
    try:
        client.predict("tiny-keys", ADMIN_TOKEN, api_name="/switch_model")
        after = shown(client.predict("kira", "stable-keys", "fifo", api_name="/annotate_skip"))
        assert [value for _, value in after["choice"]["choices"]] == LABELS  # key 1 still means neutral
        assert after["choice"]["choices"][0][0] == "1 · neutral" and "`1` neutral" in after["keys"]
        assert set(confidences(after["guess"]["value"])) == {"calm", "fearful", "boredom"}  # the new model's guess
    finally:
        client.predict("tiny-a", ADMIN_TOKEN, api_name="/switch_model")


def test_a_time_span_of_a_long_clip_is_labelled_through_the_page(server, workdir: Path, tmp_path: Path) -> None:
    folder = workdir / "span-queue"
    folder.mkdir()
    tone(folder / "long-talk.wav", 6.0, 1900)
    client = Client(server[1], verbose=False, download_files=str(tmp_path))
    client.predict(str(folder), None, "spans", ADMIN_TOKEN, api_name="/load_queue")
    page = shown(client.predict("rita", "spans", "fifo", api_name="/next_clip"))
    said = client.predict("rita", "angry", 2.0, 4.5, "", api_name="/annotate_span")
    assert "2.00-4.50 s: angry" in said
    with pytest.raises(AppError, match="inside the clip"):
        client.predict("rita", "sad", 5.0, 9.0, "", api_name="/annotate_span")
    store = store_of(server)
    (full,) = [row[0] for row in store._read("SELECT sha256 FROM clips WHERE queue = 'spans'")]
    assert full.startswith(served_sha(page["info"]))
    assert [(r["annotator"], r["label"], r["start_s"], r["end_s"]) for r in store.regions_for(full)] == [
        ("rita", "angry", 2.0, 4.5)]


def test_queue_from_a_csv_keeps_its_labels(client: Client, server, clips, workdir: Path) -> None:
    folder = workdir / "csv-queue"  # under the server's --data-root
    folder.mkdir()
    table = folder / "queue.csv"
    labelled = tone(folder / "labelled.wav", 1.0, 900)
    table.write_text(f"path,label\n{labelled.name},angry\n{clips['short']},\nmissing.wav,sad\n")
    report, _ = client.predict(str(table), None, "csv", ADMIN_TOKEN, api_name="/load_queue")
    assert "Added **2** clips" in report and "Skipped 1" in report
    store = store_of(server)
    assert store.count_labels(f"import:{table.name}") == 1


# -- models tab --------------------------------------------------------------------------------------


def test_switch_model_and_back(client: Client, server, workdir: Path, clips) -> None:
    other = tiny_model(workdir / "tiny-b", ["calm", "fearful", "boredom"])
    store_of(server).register_model("tiny-b", str(other), {"uar": 0.5})
    table, dropdown = client.predict(api_name="/list_models")
    versions = {row[0] for row in table["data"]}
    assert {"tiny-a", "tiny-b"} <= versions and dropdown["value"] == "tiny-a"
    try:
        status, info, _, _ = client.predict("tiny-b", ADMIN_TOKEN, api_name="/switch_model")
        assert "tiny-b" in status and "tiny-b" in info
        bars, *_ = client.predict(handle_file(clips["short"]), api_name="/predict")
        assert set(confidences(bars)) == {"calm", "fearful", "boredom"}
        assert store_of(server).active_model()["version"] == "tiny-b"
    finally:
        client.predict("tiny-a", ADMIN_TOKEN, api_name="/switch_model")
    with pytest.raises(AppError, match="nope"):
        client.predict("nope", ADMIN_TOKEN, api_name="/switch_model")


def test_security_settings_from_flags_and_env(tmp_path: Path) -> None:
    plain = parse_config([], env={})
    assert (plain.data_roots, plain.admins, plain.admin_token, plain.retention_days) == ((), (), None, None)
    env = {"SER_ADMIN_TOKEN": "s3cret", "SER_DATA_ROOTS": f"{tmp_path}/a:{tmp_path}/b", "SER_ADMINS": "alice",
           "SER_RETENTION_DAYS": "30"}
    from_env = parse_config([], env=env)
    assert from_env.data_roots == (tmp_path / "a", tmp_path / "b") and from_env.admins == ("alice",)
    assert from_env.admin_token == "s3cret" and from_env.retention_days == 30.0
    assert "s3cret" not in repr(from_env)  # the token never lands in a log line
    flags = parse_config(["--data-root", str(tmp_path), "--admins", "bob, carol", "--annotators", "dan",
                          "--max-decodes", "0"], env=env)
    assert flags.data_roots == (tmp_path,) and flags.admins == ("bob", "carol") and flags.annotators == ("dan",)
    assert flags.max_decodes == 1
