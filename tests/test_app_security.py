"""The app as an adversary sees it: a public page with no login, every endpoint called directly.

Each test replays one attack from issue #20 against the real server (gradio_client and plain
HTTP) and checks that it now gets a clear refusal: server files outside the sandbox, admin
actions without an admin, the Annotate tab with the store outside /tmp and the working
directory, a decompression bomb, and the lesser ones (consent, undoing others' labels, logins).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from ser.ui import AppConfig
from ser.ui.sandbox import REFUSED
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2

TOKEN = "owner-secret-token"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def world(root: Path) -> dict[str, Path]:
    """A data root the owner opened, and private files beside it that no visitor may reach."""
    data, secret = root / "data", root / "secret"
    data.mkdir()
    secret.mkdir()
    (secret / "credentials.csv").write_text("api_key,password\nAKIA123,hunter2\n")
    (secret / "notes.txt").write_text("private notes\n" * 20)
    (secret / "empty.wav").write_bytes(b"")
    (data / "escape").symlink_to(secret)  # a symlink inside the root must not lead out of it
    return {
        "data": data,
        "secret": secret,
        "secret_wav": tone(secret / "private.wav", 1.0, 1234),
        "inside": tone(data / "inside.wav", 1.0, 777),
        "model": save_tiny_wav2vec2(root / "tiny-a", LABELS),
    }


@pytest.fixture(scope="module")
def server(root: Path, world):
    config = AppConfig(model=str(world["model"]), store=root / "store", models_dir=root / "models",
                       data_roots=(world["data"],), admin_token=TOKEN)
    with running_app(config) as served:
        yield served


@pytest.fixture
def visitor(server, tmp_path: Path) -> Client:
    return Client(server[1], verbose=False, download_files=str(tmp_path))


def refusal(call) -> str:
    """The message of the AppError a call raises (it must raise)."""
    with pytest.raises(AppError) as caught:
        call()
    text = str(caught.value)
    assert "Traceback" not in text
    return text


def store_of(server):
    return server[0].ser_context.store


# -- 1. server files ---------------------------------------------------------------------------------


def probes(world) -> list[str]:
    """Paths whose answers used to differ: a private clip, missing, text, empty, a folder, a CSV."""
    return [str(world["secret_wav"]), str(world["secret"] / "missing.wav"), str(world["secret"] / "notes.txt"),
            str(world["secret"] / "empty.wav"), str(world["secret"]), str(world["secret"] / "credentials.csv"),
            "/etc/passwd", str(world["data"] / ".." / "secret" / "private.wav"), str(world["data"] / "escape"),
            str(world["data"] / "escape" / "private.wav")]


def test_visitors_cannot_read_server_paths(visitor: Client, server, world) -> None:
    before = store_of(server).count_clips()
    answers = {refusal(lambda p=p: visitor.predict(p, None, "stolen", "", api_name="/load_queue"))
               for p in [*probes(world), str(world["inside"])]}
    assert len(answers) == 1, answers  # one answer for every path: nothing about what exists
    assert "Only an admin can load clips from server folders" in answers.pop()
    assert store_of(server).count_clips() == before


def test_admins_get_one_refusal_for_every_path_outside_the_roots(visitor: Client, server, world) -> None:
    before = store_of(server).count_clips()
    answers = {refusal(lambda p=p: visitor.predict(p, None, "stolen", TOKEN, api_name="/load_queue"))
               for p in probes(world)}
    assert answers == {f"Could not read the clips: {REFUSED}"}
    assert store_of(server).count_clips() == before
    report, _ = visitor.predict(str(world["data"]), None, "inside", TOKEN, api_name="/load_queue")
    assert "Added **1** clips" in report  # the root itself works, without what the symlink leads to


def test_an_uploaded_table_cannot_name_server_files_or_echo_its_cells(visitor: Client, server, world,
                                                                     tmp_path: Path) -> None:
    table = tmp_path / "queue.csv"
    table.write_text(f"path,label\n{world['secret_wav']},angry\n../secret/private.wav,sad\n/etc/passwd,sad\n")
    report, _ = visitor.predict("", [handle_file(table)], "stolen", "", api_name="/load_queue")
    assert "Added **0** clips" in report and "Skipped 3" in report
    assert str(world["secret"]) not in report and "private.wav" not in report and "passwd" not in report
    assert store_of(server).count_clips("stolen") == 0

    credentials = world["secret"] / "credentials.csv"
    for source, token in (([handle_file(credentials)], ""), (None, TOKEN)):
        text = refusal(lambda: visitor.predict(str(credentials) if token else "", source, "stolen", token,
                                               api_name="/load_queue"))
        assert "api_key" not in text and "password" not in text and "AKIA" not in text

    listed = tmp_path / "with-audio.csv"  # an upload's rows may name the files uploaded with it
    clip = tone(tmp_path / "mine.wav", 1.0, 4321)
    listed.write_text("path,label\nmine.wav,sad\n")
    report, _ = visitor.predict("", [handle_file(listed), handle_file(clip)], "uploads", "", api_name="/load_queue")
    assert "Added **1** clips" in report and store_of(server).count_labels("import:upload") == 1


# -- 2. roles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_admin_actions_are_refused_without_an_admin(visitor: Client, server, root: Path, token: str) -> None:
    store = store_of(server)
    other = save_tiny_wav2vec2(root / "tiny-five", LABELS[:2])
    store.register_model("tiny-five", str(other), {"uar": 0.5})
    active = store.active_model()["version"]
    visitor.predict(api_name="/list_models")  # the page's dropdown now offers tiny-five
    calls = {
        "/retrain": ("majority", token),
        "/switch_model": ("tiny-five", token),
        "/rollback": (token,),
        "/adopt_candidate": (token,),
        "/publish_visitor_clips": ("visitors", token),
        "/delete_annotator": ("carol", token),
        "/purge_old_clips": (token,),
    }
    for endpoint, args in calls.items():
        text = refusal(lambda: visitor.predict(*args, api_name=endpoint))
        assert "Only an admin can" in text and "SER_ADMIN_TOKEN" in text, (endpoint, text)
    assert store.active_model()["version"] == active and not (root / "models").exists()


def test_a_worse_candidate_needs_an_admins_second_step_and_rollback_is_one_click(visitor: Client, server,
                                                                                 root: Path) -> None:
    app, _ = server
    store, context = store_of(server), app.ser_context
    serving = store.active_model()["version"]
    worse = save_tiny_wav2vec2(root / "v0009-candidate", LABELS[:3])
    store.register_model("v0009-candidate", str(worse), {"uar": 0.5})
    text = refusal(lambda: visitor.predict(TOKEN, api_name="/adopt_candidate"))
    assert "no candidate waiting" in text
    context.pending_candidate = {"version": "v0009-candidate", "reason": "new UAR 0.5000 < serving model's 0.7000"}
    assert "Only an admin" in refusal(lambda: visitor.predict("", api_name="/adopt_candidate"))
    assert store.active_model()["version"] == serving
    status, info, _, _ = visitor.predict(TOKEN, api_name="/adopt_candidate")
    assert "v0009-candidate" in status and "despite" in status and store.active_model()["version"] == "v0009-candidate"
    status, info, _, _ = visitor.predict(TOKEN, api_name="/rollback")
    assert serving in status and serving in info and store.active_model()["version"] == serving


def test_roles_come_from_the_login_configuration(root: Path, world, tmp_path: Path) -> None:
    config = AppConfig(model=str(world["model"]), store=root / "auth-store", auth=(("alice", "pw-a"), ("bob", "pw-b")),
                       admins=("alice",), data_roots=(world["data"],))
    with running_app(config) as (app, url):
        bob = Client(url, verbose=False, download_files=str(tmp_path), auth=("bob", "pw-b"))
        assert "Only an admin" in refusal(lambda: bob.predict("tiny-a", "", api_name="/switch_model"))
        assert "Only an admin" in refusal(lambda: bob.predict(str(world["data"]), None, "q", "", api_name="/load_queue"))
        assert "Only an admin" in refusal(lambda: bob.predict("q", TOKEN, api_name="/publish_visitor_clips"))
        alice = Client(url, verbose=False, download_files=str(tmp_path), auth=("alice", "pw-a"))
        status, *_ = alice.predict("tiny-a", "", api_name="/switch_model")
        assert "Now serving **tiny-a**" in status
        report, _ = alice.predict(str(world["data"]), None, "q", "", api_name="/load_queue")
        assert "Added" in report


# -- 3. the store anywhere ---------------------------------------------------------------------------------


def test_annotate_works_with_the_store_outside_tmp_and_the_working_directory(world, tmp_path: Path) -> None:
    parent = Path(tempfile.mkdtemp(prefix="ser-store-", dir="/var/tmp"))
    try:
        assert not parent.is_relative_to(tempfile.gettempdir()) and not parent.is_relative_to(Path.cwd())
        config = AppConfig(model=str(world["model"]), store=parent / "store")
        with running_app(config) as (app, url):
            client = Client(url, verbose=False, download_files=str(tmp_path))
            clips = [handle_file(tone(tmp_path / f"q{i}.wav", 1.0, 300 + 50 * i)) for i in range(2)]
            report, _ = client.predict("", clips, "anywhere", "", api_name="/load_queue")
            assert "Added **2** clips" in report
            audio, _, guess, info, *_ = client.predict("ann", "anywhere", "fifo", api_name="/next_clip")
            waveform, rate = sf.read(audio)
            assert rate == 16000 and len(waveform) == 16000 and guess["value"]["label"] in LABELS
            _, _, _, info, _, status, *_ = client.predict("ann", "anywhere", "fifo", "sad", "", api_name="/annotate_save")
            assert "saved **1** label" in status and "1 left for ann" in info
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=True)


# -- 4. bounded decoding -------------------------------------------------------------------------------------


def flac_bomb(path: Path, seconds: float = 599.0, rate: int = 384000, channels: int = 8) -> Path:
    """A FLAC whose header announces ``seconds`` x ``rate`` x ``channels`` of audio (1.8 G samples
    for the defaults) while the file is a few kB: the header is what the decoder plans from."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((rate // 10, channels), np.float32), rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    info = int.from_bytes(data[18:26], "big")  # STREAMINFO: rate, channels, bits, then 36 bits of total samples
    data[18:26] = ((info & ~((1 << 36) - 1)) | int(seconds * rate)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_decompression_bomb_is_refused_from_its_header(visitor: Client, server, tmp_path: Path) -> None:
    bomb = flac_bomb(tmp_path / "bomb.flac")
    assert sf.info(str(bomb)).duration == pytest.approx(599.0) and sf.info(str(bomb)).channels == 8
    idle, peak, stop = rss_bytes(), [0], threading.Event()

    def sample() -> None:  # the server runs in this process: its memory is this process's
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        text = refusal(lambda: visitor.predict(handle_file(bomb), api_name="/predict"))
    finally:
        stop.set()
        watcher.join()
    print(f"bomb refused in {time.perf_counter() - started:.2f} s, peak RSS +{(peak[0] - idle) / 1e6:.0f} MB")
    assert "too large to decode" in text and "599.0 s at 384000 Hz with 8 channels" in text
    assert peak[0] - idle < 300e6


def test_one_decode_limit_across_every_event(visitor: Client, server, world, monkeypatch) -> None:
    context = server[0].ser_context
    monkeypatch.setattr("ser.ui.context.DECODE_WAIT_S", 0.2)
    held = 0
    while context.decode_slots.acquire(blocking=False):  # every slot busy with other requests' decodes
        held += 1
    try:
        assert held == context.config.max_decodes == 2
        for call in (lambda: visitor.predict(handle_file(world["inside"]), api_name="/predict"),
                     lambda: visitor.predict(handle_file(world["inside"]), "sad", "", "eve", True,
                                             api_name="/save_correction")):
            assert "busy decoding other audio" in refusal(call)
        report, _ = visitor.predict("", [handle_file(world["inside"])], "busy", "", api_name="/load_queue")
        assert "Added **0** clips" in report and "busy decoding" in report
    finally:
        for _ in range(held):
            context.decode_slots.release()
    bars, *_ = visitor.predict(handle_file(world["inside"]), api_name="/predict")
    assert bars["label"] in LABELS


# -- consent, deletion, undo ---------------------------------------------------------------------------------


def test_visitors_recordings_need_consent_stay_private_and_can_be_deleted(server, world, tmp_path: Path) -> None:
    url, store = server[1], store_of(server)
    visitor = Client(url, verbose=False, download_files=str(tmp_path / "v"))
    stranger = Client(url, verbose=False, download_files=str(tmp_path / "s"))
    voice = tone(tmp_path / "my-voice.wav", 1.2, 2468)
    before = store.count_clips()
    text = refusal(lambda: visitor.predict(handle_file(voice), "sad", "", "dora", False, api_name="/save_correction"))
    assert "agrees to keeping this recording" in text and store.count_clips() == before
    status = visitor.predict(handle_file(voice), "sad", "", "dora", True, api_name="/save_correction")
    assert "Saved **sad**" in status and store.count_clips() == before + 1
    (sha,) = store.session_clips(store._read("SELECT session FROM clips ORDER BY rowid DESC LIMIT 1")[0][0])
    path = store.clip_path(sha)
    served = set()
    while (nxt := store.next_clip("annotator-x")) is not None:  # annotators are never served it
        served.add(nxt)
        store.skip(nxt, "annotator-x")
    assert sha not in served

    assert "Deleted **0**" in stranger.predict(api_name="/delete_my_clips")  # not theirs
    assert "no label saved from this page" in stranger.predict("dora", api_name="/undo_correction")
    assert store.count_labels("dora") == 1 and path.exists()
    assert "Deleted **1** recording" in visitor.predict(api_name="/delete_my_clips")
    assert not path.exists() and store.count_labels("dora") == 0


def test_annotators_undo_only_what_their_page_saved(server, tmp_path: Path) -> None:
    url, store = server[1], store_of(server)
    mallory = Client(url, verbose=False, download_files=str(tmp_path / "m"))
    frank = Client(url, verbose=False, download_files=str(tmp_path / "f"))
    clips = [handle_file(tone(tmp_path / f"u{i}.wav", 1.0, 610 + 30 * i)) for i in range(2)]
    frank.predict("", clips, "undo-q", "", api_name="/load_queue")
    frank.predict("frank", "undo-q", "fifo", api_name="/next_clip")
    frank.predict("frank", "undo-q", "fifo", "happy", "", api_name="/annotate_save")
    text = refusal(lambda: mallory.predict("frank", "undo-q", "fifo", api_name="/annotate_undo"))
    assert "no label saved from this page" in text and store.count_labels("frank") == 1
    _, _, _, _, _, status, *_ = frank.predict("frank", "undo-q", "fifo", api_name="/annotate_undo")
    assert "saved **0** labels" in status


@pytest.mark.parametrize("name", ["eve\x07bell", "x" * 101])
def test_names_the_store_would_change_are_refused(visitor: Client, world, name: str) -> None:
    text = refusal(lambda: visitor.predict(handle_file(world["inside"]), "sad", "", name, True,
                                           api_name="/save_correction"))
    assert "at most 100 characters and no control characters" in text


# -- logins, start-up, Hub sync --------------------------------------------------------------------------------


def test_failed_logins_are_rate_limited(root: Path, world) -> None:
    config = AppConfig(model=str(world["model"]), store=root / "login-store", auth=(("ann", "right"),))
    with running_app(config) as (app, url):
        answers = [requests.post(f"{url}login", data={"username": "ann", "password": f"guess{i}"}, timeout=30)
                   for i in range(6)]
        assert [a.status_code for a in answers] == [400] * 5 + [429]
        assert "Too many failed logins" in answers[-1].json()["detail"]
        locked = requests.post(f"{url}login", data={"username": "ann", "password": "right"}, timeout=30)
        assert locked.status_code == 429  # even the right password waits out the lock


def test_per_user_limit_holds_across_addresses() -> None:
    from ser.ui.login_limit import FailureCounter, RateLimitedAuth

    now = [0.0]
    auth = RateLimitedAuth([("ann", "right")], FailureCounter(max_failures=3, window_s=60, clock=lambda: now[0]))
    assert auth("ann", "right")
    for _ in range(3):
        assert not auth("ann", "wrong")
    assert not auth("ann", "right")  # locked for this name, whatever the address
    now[0] = 61.0
    assert auth("ann", "right")


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a read-only /sys")
def test_a_read_only_store_is_a_clear_start_up_error() -> None:
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "app.py", "--store", "/sys/ser-store"], cwd=repo, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SER_RUNTIME": "eager"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not writable" in done.stderr


def test_hub_sync_starts_with_the_app_and_honours_deletions(root: Path, world, monkeypatch) -> None:
    from huggingface_hub import HfApi, RepoUrl

    commits: list[dict] = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/datasets/{repo_id}"))

    def create_commit(self, repo_id, operations, **kwargs):
        commits.append({op.path_in_repo: type(op).__name__ for op in operations})

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setenv("SER_HUB_DATASET", "owner/annotations")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("SER_HUB_SYNC_MINUTES", "60")
    config = AppConfig(model=str(world["model"]), store=root / "synced-store")
    with running_app(config) as (app, url):
        sync = app.ser_context.hub_sync
        assert sync is not None and sync.repo_id == "owner/annotations"
        try:
            store = app.ser_context.store
            from ser.audio import load_audio

            sha = store.add_clip(load_audio(world["inside"]), private=True, session="s")
            sync.trigger().result(timeout=60)
            clip = f"clips/{sha[:2]}/{sha}.flac"
            assert any(commit.get(clip) == "CommitOperationAdd" for commit in commits)
            store.delete_session("s")
            sync.trigger().result(timeout=60)
            assert commits[-1] == {clip: "CommitOperationDelete"}
            deletions = list((store.root / "sync").glob("deletions-*.jsonl"))
            assert deletions and sha in deletions[0].read_text()
        finally:
            sync.stop()


def test_gradio_upload_cache_is_cleaned(root: Path, world, tmp_path: Path, monkeypatch) -> None:
    """Uploads (here 3 of them, as a visitor's page would send) leave Gradio's cache after --cache-max-age."""
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    config = AppConfig(model=str(world["model"]), store=root / "cache-store", cache_max_age_s=5)
    with running_app(config) as (app, url):
        files = [("files", (f"up{i}.wav", world["inside"].read_bytes(), "audio/wav")) for i in range(3)]
        answer = requests.post(f"{url}gradio_api/upload", files=files, timeout=60)
        answer.raise_for_status()
        uploaded = [Path(path) for path in answer.json()]
        assert len(uploaded) == 3 and all(path.is_relative_to(cache) and path.is_file() for path in uploaded)
        deadline = time.monotonic() + 60
        while any(path.exists() for path in uploaded) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(path.exists() for path in uploaded)
