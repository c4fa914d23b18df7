"""Keep a Space's annotations beyond its ephemeral disk: push them to a Hugging Face dataset repo.

Opt-in only: with ``SER_HUB_DATASET`` (a dataset repo id) and ``HF_TOKEN`` set, a
``huggingface_hub.CommitScheduler`` commits the store folder every few minutes; without them
nothing leaves the machine. The database itself is never uploaded (a live SQLite file is not a
safe thing to copy); instead every tick appends the rows added or undone since the last tick to
JSONL files, under the scheduler's lock, and the scheduler uploads those plus the new clip files.
The JSONL names carry a per-session id so a restarted Space with an empty disk appends new files
and can never overwrite the history already on the Hub.

Deletions (a visitor's, an admin's, the retention limit's) are honoured: each appends a row to
``deletions-*.jsonl`` (the clip id, never its audio or labels), and a clip file that was already
uploaded is deleted from the dataset repo in its own commit. (Earlier commits of the repo still
hold it: a repo that must forget it for good needs its history squashed, ``HfApi.super_squash_history``.)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationDelete, CommitScheduler, HfApi

from ser.store import CLIP_DIR, AnnotationStore

SYNC_DIR = "sync"
CURSOR_FILE = "cursor.json"
DEFAULT_EVERY_MINUTES = 5.0


class HubSync(CommitScheduler):
    """A CommitScheduler that first writes the store's new rows as append-only JSONL."""

    def __init__(
        self,
        store: AnnotationStore,
        *,
        repo_id: str,
        token: str | None,
        every_minutes: float = DEFAULT_EVERY_MINUTES,
        private: bool = True,
        hf_api: HfApi | None = None,
    ) -> None:
        # Set before super().__init__: its thread pushes (and so flushes) right away.
        self.store = store
        self.session = uuid.uuid4().hex[:12]
        self.sync_dir = store.root / SYNC_DIR
        self.sync_dir.mkdir(parents=True, exist_ok=True)
        self._deleted: list[Path] = []  # clip files deleted from the store, to delete on the Hub too
        super().__init__(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=store.root,
            every=every_minutes,
            private=private,
            token=token,
            allow_patterns=[f"{CLIP_DIR}/**/*.flac", f"{SYNC_DIR}/*.jsonl"],
            hf_api=hf_api,
        )

    def flush(self) -> int:
        """Append rows new since the last flush to this session's JSONL files; returns how many."""
        with self.lock:
            cursor_path = self.sync_dir / CURSOR_FILE
            cursor = json.loads(cursor_path.read_text()) if cursor_path.exists() else None
            changes, new_cursor = self.store.changes_since(cursor)
            written = 0
            self._deleted.extend(self.store.root / row["path"] for row in changes.get("deletions", []) if row["path"])
            for table, rows in changes.items():
                if rows:
                    _append_jsonl(self.sync_dir / f"{table}-{self.session}.jsonl", rows)
                    written += len(rows)
            if written:
                _write_atomically(cursor_path, json.dumps(new_cursor))
            return written

    def push_to_hub(self) -> Any:
        self.flush()
        result = super().push_to_hub()
        self.delete_on_hub()
        return result

    def delete_on_hub(self) -> int:
        """Delete from the repo the clip files that were uploaded and later deleted from the store."""
        with self.lock:
            doomed = [path for path in self._deleted if path in self.last_uploaded]
            self._deleted = []
        if not doomed:
            return 0
        prefix = f"{self.path_in_repo.strip('/')}/" if self.path_in_repo else ""
        operations = [CommitOperationDelete(path_in_repo=prefix + path.relative_to(self.folder_path).as_posix())
                      for path in doomed]
        self.api.create_commit(repo_id=self.repo_id, repo_type=self.repo_type, revision=self.revision,
                               operations=operations, commit_message="Delete clips deleted from the annotation store")
        with self.lock:
            for path in doomed:
                self.last_uploaded.pop(path, None)
        return len(doomed)


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def start_hub_sync(
    store: AnnotationStore,
    *,
    repo_id: str | None = None,
    token: str | None = None,
    every_minutes: float | None = None,
    hf_api: HfApi | None = None,
) -> HubSync | None:
    """Start pushing ``store`` to the Hub when a repo and a token are configured, else None.

    Configuration comes from the arguments or the environment: ``SER_HUB_DATASET``, ``HF_TOKEN``
    and ``SER_HUB_SYNC_MINUTES`` (default 5).
    """
    repo_id = repo_id or os.environ.get("SER_HUB_DATASET")
    token = token or os.environ.get("HF_TOKEN")
    if not repo_id or not token:
        return None
    every = every_minutes or float(os.environ.get("SER_HUB_SYNC_MINUTES", DEFAULT_EVERY_MINUTES))
    return HubSync(store, repo_id=repo_id, token=token, every_minutes=every, hf_api=hf_api)
