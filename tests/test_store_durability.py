"""The store under stress: concurrent writers, a writer killed mid-batch, read-only and full disks,
and the Hub sync that keeps a Space's annotations (its HTTP upload call replaced by a recorder)."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ser.store import AnnotationStore, StoreError

REPO = Path(__file__).resolve().parents[1]


def tone(seed: int, seconds: float = 0.25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32).clip(-1, 1)


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_threads_lose_nothing(tmp_path):
    store = AnnotationStore(tmp_path)
    sha = store.add_clip(tone(0))
    ids: list[int] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            own = store.add_clip(tone(100 + worker))
            for i in range(15):
                ids.append(store.add_label(sha if i % 2 else own, f"t{worker}", "happy", note=str(i)))
                store.count_labels()  # readers interleave with writers
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 120 and store.label_ids() == set(ids)
    assert store.count_clips() == 9 and store.integrity_check() == "ok"
    store.close()


def _process_writer(root: str, worker: int, n: int) -> None:
    store = AnnotationStore(root)
    sha = store.add_clip(tone(worker))
    shared = store.add_clip(tone(12345))  # every process writes the same clip too
    for i in range(n):
        store.add_label(shared if i % 2 else sha, f"p{worker}", "sad", note=f"{worker}:{i}")
    store.close()


def test_concurrent_processes_lose_nothing(tmp_path):
    AnnotationStore(tmp_path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_process_writer, args=(str(tmp_path), w, 12)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    store = AnnotationStore(tmp_path)
    notes = {label["note"] for sha in store.votes() for label in store.labels_for(sha)}
    assert notes == {f"{w}:{i}" for w in range(4) for i in range(12)}
    assert store.count_clips() == 5 and store.integrity_check() == "ok"


KILLED_WRITER = """
import sys
import numpy as np
from ser.store import AnnotationStore
store = AnnotationStore(sys.argv[1])
rng = np.random.default_rng(0)
for i in range(100000):
    sha = store.add_clip((0.2 * rng.standard_normal(8000)).astype(np.float32))
    label_id = store.add_label(sha, "writer", "angry", note=str(i))
    print(label_id, sha, flush=True)
"""


def test_sigkill_mid_batch_loses_nothing_committed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    reported = []
    for line in writer.stdout:
        reported.append(line.split())
        if len(reported) == 40:
            writer.send_signal(signal.SIGKILL)
            break
    reported += [line.split() for line in writer.stdout]  # anything printed before the kill landed
    assert writer.wait(30) == -signal.SIGKILL and len(reported) >= 40

    store = AnnotationStore(tmp_path)
    assert store.integrity_check() == "ok"
    assert {int(label_id) for label_id, _ in reported} <= store.label_ids()
    for _, sha in reported:
        assert store.load_clip(sha).shape == (8000,)
    assert not list(tmp_path.glob("clips/*/*.flac.tmp"))  # only complete clips carry the .flac name


# -- hostile disks ------------------------------------------------------------------------------


def _in_child(task: Callable[[], str], *, unprivileged: bool = False, file_limit: int | None = None) -> str:
    """Run ``task`` in a forked child (dropping root, or with a file-size limit) and return its answer."""
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            if unprivileged and os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            if file_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
            writer.send(task())
        except BaseException as exc:
            writer.send(f"unexpected {type(exc).__name__}: {exc}")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return reader.recv()


def _store_error_of(action: Callable[[], object]) -> str:
    try:
        action()
    except StoreError as exc:
        return f"StoreError: {exc}"
    return "no error"


@pytest.fixture
def world_readable_dir():
    """A folder an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ser-store-"))
    path.chmod(0o755)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.chmod(0o755)
    subprocess.run(["rm", "-rf", str(path)], check=True)


def test_read_only_store_raises_store_error(world_readable_dir):
    existing = world_readable_dir / "existing"
    with AnnotationStore(existing) as store:
        store.add_clip(tone(1))
    empty = world_readable_dir / "empty"
    empty.mkdir()
    for path in [existing, *existing.rglob("*"), empty]:
        path.chmod(0o555 if path.is_dir() else 0o444)

    answer = _in_child(lambda: _store_error_of(lambda: AnnotationStore(existing).add_clip(tone(2))), unprivileged=True)
    assert answer.startswith("StoreError") and "not writable" in answer
    answer = _in_child(lambda: _store_error_of(lambda: AnnotationStore(empty / "store")), unprivileged=True)
    assert answer.startswith("StoreError") and "not writable" in answer


def test_full_database_raises_store_error_and_keeps_data(tmp_path):
    store = AnnotationStore(tmp_path)
    sha = store.add_clip(tone(1))
    store.add_label(sha, "ann", "sad")
    conn = store._conn()  # SQLite's own page cap gives the real "database or disk is full" error
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match="disk is full"):
        for i in range(2000):
            store.add_label(sha, "ann", "happy", note="x" * 500 + str(i))
    saved = store.count_labels()
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.add_label(sha, "ann", "angry") > 0  # usable again once there is room
    assert store.count_labels() == saved + 1 and store.integrity_check() == "ok"


def test_clip_file_that_cannot_be_written_raises_store_error(tmp_path):
    store = AnnotationStore(tmp_path)
    store.add_clip(tone(1))
    store.close()
    # 64 KiB leaves room for SQLite's 32 KiB WAL index, not for the ~160 KB clip.
    answer = _in_child(
        lambda: _store_error_of(lambda: AnnotationStore(tmp_path).add_clip(tone(2, seconds=5.0))), file_limit=65536
    )
    assert answer.startswith("StoreError") and "disk is full" in answer
    reopened = AnnotationStore(tmp_path)
    assert reopened.count_clips() == 1 and reopened.integrity_check() == "ok"
    assert len(list(tmp_path.glob("clips/*/*.flac"))) == 1


# -- Hub sync ------------------------------------------------------------------------------------


class RecordingHub:
    """Stands in for the Hub's HTTP endpoints only: create_repo and create_commit record calls."""

    def __init__(self, api) -> None:
        self.commits: list[dict[str, bytes]] = []
        self.repos: list[str] = []
        api.create_repo = self.create_repo
        api.create_commit = self.create_commit

    def create_repo(self, repo_id, **kwargs):
        from huggingface_hub import RepoUrl

        self.repos.append((repo_id, kwargs.get("repo_type"), kwargs.get("private")))
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        self.commits.append({op.path_in_repo: op.path_or_fileobj.read() for op in operations})
        return None


def uploaded_rows(hub: RecordingHub, table: str) -> list[dict]:
    """Rows on the Hub: a commit uploads a file whole, so the latest copy of each file holds them all."""
    latest: dict[str, bytes] = {}
    for commit in hub.commits:
        latest.update({p: d for p, d in commit.items() if p.startswith(f"sync/{table}-")})
    return [json.loads(line) for data in latest.values() for line in data.decode().splitlines()]


def test_hub_sync_is_off_without_configuration(tmp_path, monkeypatch):
    from ser.hub_sync import start_hub_sync

    monkeypatch.delenv("SER_HUB_DATASET", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert start_hub_sync(AnnotationStore(tmp_path)) is None
    monkeypatch.setenv("SER_HUB_DATASET", "me/annotations")
    monkeypatch.delenv("HF_TOKEN")
    assert start_hub_sync(AnnotationStore(tmp_path)) is None
    assert not (tmp_path / "sync").exists()


def test_hub_sync_pushes_new_rows_and_clips(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from ser.hub_sync import start_hub_sync

    monkeypatch.setenv("SER_HUB_DATASET", "me/annotations")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    store = AnnotationStore(tmp_path)
    first = store.add_clip(tone(1))
    store.add_label(first, "ann", "sad")
    api = HfApi(token="hf_test")
    hub = RecordingHub(api)
    sync = start_hub_sync(store, every_minutes=60, hf_api=api)
    try:
        assert hub.repos == [("me/annotations", "dataset", True)]
        deadline = time.time() + 30
        while not hub.commits and time.time() < deadline:  # the scheduler pushes once at start
            time.sleep(0.05)
        assert len(hub.commits) == 1
        assert f"clips/{first[:2]}/{first}.flac" in hub.commits[0]
        assert not any("sqlite" in path for path in hub.commits[0])

        second = store.add_clip(tone(2))
        store.add_label(second, "bob", "happy")
        store.undo_last("ann")
        sync.trigger().result(timeout=30)
        assert len(hub.commits) == 2
        assert f"clips/{second[:2]}/{second}.flac" in hub.commits[1]
        assert f"clips/{first[:2]}/{first}.flac" not in hub.commits[1]  # unchanged files are not resent
        assert [row["label"] for row in uploaded_rows(hub, "labels")] == ["sad", "happy"]
        assert [row["annotator"] for row in uploaded_rows(hub, "undos")] == ["ann"]
        assert {row["sha256"] for row in uploaded_rows(hub, "clips")} == {first, second}

        sync.trigger().result(timeout=30)
        assert len(hub.commits) == 2  # nothing new: no empty commit
    finally:
        sync.stop()
