"""The annotation store: every clip and every human label, kept safe so corrections can retrain.

SQLite in WAL mode holds the rows (readers never block the one writer; concurrent writers wait
on ``busy_timeout`` instead of failing), and the audio lives beside it as 16 kHz FLAC files named
by the sha256 of their PCM16 samples. Content addressing dedups the same clip saved twice and
means no name a user typed ever becomes a path on disk. Each write is one ``BEGIN IMMEDIATE``
transaction, and a clip file is in place (tmp + ``os.replace``) before the row that points at it
commits, so a crash at any moment leaves either nothing or a complete clip.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ser.audio import SAMPLE_RATE, InvalidAudio
from ser.labels import EMOTIONS, canonical

DB_NAME = "annotations.sqlite"
CLIP_DIR = "clips"
BUSY_TIMEOUT_S = 30.0
POLICIES = ("majority", "min_agreement", "latest_trusted")
ORDERS = ("fifo", "least_confident")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Schema version N is reached by applying MIGRATIONS[N-1]; never edit a released entry, append one.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: clips, labels and model versions
        """CREATE TABLE clips (
            sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, duration_s REAL NOT NULL,
            source TEXT NOT NULL DEFAULT '', speaker TEXT, queue TEXT, created_at TEXT NOT NULL)""",
        """CREATE TABLE labels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sha256 TEXT NOT NULL REFERENCES clips(sha256),
            annotator TEXT NOT NULL, label TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL, model_version TEXT, model_probs TEXT)""",
        "CREATE INDEX labels_by_clip ON labels(sha256)",
        """CREATE TABLE model_versions (
            version TEXT PRIMARY KEY, path TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 0)""",
    ),
    (  # 2: undo, skips and model predictions for the annotation queue
        "ALTER TABLE labels ADD COLUMN undone_at TEXT",
        "ALTER TABLE labels ADD COLUMN undo_seq INTEGER",
        "CREATE INDEX labels_by_annotator ON labels(annotator, id)",
        "CREATE INDEX clips_by_queue ON clips(queue)",
        """CREATE TABLE skips (
            sha256 TEXT NOT NULL REFERENCES clips(sha256), annotator TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (sha256, annotator))""",
        """CREATE TABLE predictions (
            sha256 TEXT NOT NULL REFERENCES clips(sha256), model_version TEXT NOT NULL,
            probs TEXT NOT NULL, confidence REAL NOT NULL, created_at TEXT NOT NULL,
            PRIMARY KEY (sha256, model_version))""",
    ),
    (  # 3: queues that stay fast, private (Demo) clips, deletions, and which model served before
        # rank: the latest prediction's confidence (2.0 = none yet), so least-confident order is an index
        "ALTER TABLE clips ADD COLUMN rank REAL NOT NULL DEFAULT 2.0",
        """UPDATE clips SET rank = COALESCE((SELECT p.confidence FROM predictions p WHERE p.sha256 = clips.sha256
                                             ORDER BY p.created_at DESC LIMIT 1), 2.0)""",
        "ALTER TABLE clips ADD COLUMN private INTEGER NOT NULL DEFAULT 0",  # 1: never served to annotators
        "ALTER TABLE clips ADD COLUMN session TEXT",  # the browser session that saved it (its owner may delete it)
        "CREATE INDEX clips_queue_rank ON clips(queue, private, rank)",
        "CREATE INDEX clips_rank ON clips(private, rank)",
        "CREATE INDEX clips_queue_private ON clips(queue, private)",
        "CREATE INDEX clips_private ON clips(private)",
        "CREATE INDEX clips_by_session ON clips(session)",
        "CREATE INDEX clips_by_created ON clips(created_at)",
        "CREATE INDEX labels_by_clip_annotator ON labels(sha256, annotator, undone_at)",
        "CREATE INDEX skips_by_annotator ON skips(annotator)",
        # done: the clips each annotator has a standing label for or skipped, with the clip's queue,
        # so "how many are left" is two index counts instead of a scan of the store
        """CREATE TABLE done (annotator TEXT NOT NULL, sha256 TEXT NOT NULL, queue TEXT, public INTEGER NOT NULL,
            PRIMARY KEY (annotator, sha256)) WITHOUT ROWID""",
        "CREATE INDEX done_by_queue ON done(annotator, public, queue)",
        """INSERT OR IGNORE INTO done SELECT l.annotator, l.sha256, c.queue, 1 - c.private
           FROM labels l JOIN clips c ON c.sha256 = l.sha256 WHERE l.undone_at IS NULL""",
        """INSERT OR IGNORE INTO done SELECT s.annotator, s.sha256, c.queue, 1 - c.private
           FROM skips s JOIN clips c ON c.sha256 = s.sha256""",
        # frontier: per annotator, queue ('' = every queue) and order, a key below which every public
        # clip is done, so next_clip starts there instead of walking past all their finished clips
        """CREATE TABLE frontier (annotator TEXT NOT NULL, queue TEXT NOT NULL, ord TEXT NOT NULL,
            rank REAL NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (annotator, queue, ord)) WITHOUT ROWID""",
        "ALTER TABLE model_versions ADD COLUMN activated_at TEXT",
        """CREATE TABLE deletions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, path TEXT NOT NULL,
            reason TEXT NOT NULL, deleted_at TEXT NOT NULL, clip_rowid INTEGER)""",
    ),
    (  # 4: queues as records (key map, suggestion, minimum annotators), labels filed by queue, time spans
        # labels.queue: the queue a label was given in (NULL: a Demo correction), so queue agreement
        # never mixes in corrections and a save is idempotent per (annotator, clip, queue)
        "ALTER TABLE labels ADD COLUMN queue TEXT",
        """UPDATE labels SET queue = (SELECT c.queue FROM clips c WHERE c.sha256 = labels.sha256 AND c.private = 0)""",
        "CREATE INDEX labels_by_queue ON labels(queue, sha256)",
        # keys: the JSON list of labels the number keys 1-9 pick, fixed when the queue is made
        """CREATE TABLE queues (
            name TEXT PRIMARY KEY, keys TEXT NOT NULL DEFAULT '[]', suggestion TEXT NOT NULL DEFAULT 'show',
            min_annotators INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL)""",
        """INSERT OR IGNORE INTO queues (name, created_at)
           SELECT queue, MIN(created_at) FROM clips WHERE queue IS NOT NULL AND private = 0 GROUP BY queue""",
        """CREATE TABLE regions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL REFERENCES clips(sha256),
            annotator TEXT NOT NULL, label TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL,
            note TEXT NOT NULL DEFAULT '', queue TEXT, created_at TEXT NOT NULL, undone_at TEXT,
            CHECK (start_s >= 0 AND end_s > start_s))""",
        "CREATE INDEX regions_by_clip ON regions(sha256)",
    ),
]
SUGGESTIONS = ("show", "hide")  # the model's guess: shown with its score (never pre-selected), or hidden
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store cannot do what was asked (read-only, disk full, busy, damaged); says what to do."""


class InvalidRequest(ValueError):
    """A request the store refuses as given (an unknown emotion or order, no name, a malformed clip id);
    the message says what to change. A ``ValueError``, so callers that caught one still do."""


class NotInStore(KeyError):
    """The clip or model version asked for is not in the store (never added, or deleted meanwhile);
    a ``KeyError``, so callers that caught one still do."""


@dataclass
class ResolvedClip:
    """One clip with the label a policy settled on, ready to train on."""

    sha256: str
    label: str
    annotators: list[str]
    agreement: float
    n_labels: int
    speaker: str
    path: str


@dataclass
class Resolution:
    """The clips a policy resolved, and why the others were left out."""

    clips: list[ResolvedClip]
    skipped: Counter = field(default_factory=Counter)


@dataclass
class QueueSettings:
    """How a queue is annotated: the labels the number keys pick (fixed when it was made, so a
    model with another label set never changes what a key means), whether the model's guess is
    shown, and how many people should label each clip before it counts as done."""

    name: str
    keys: list[str]
    suggestion: str = "show"
    min_annotators: int = 1


@dataclass
class SavedLabel:
    """What a queue save did: the label's id, and whether a row was added (False: this annotator
    already had a standing label on this clip in this queue, so a repeated save changed nothing)."""

    label_id: int
    added: bool
    label: str


@dataclass
class ClipAgreement:
    n_labels: int
    majority: str | None  # None on a tie
    agreement: float  # the share of labels that name the majority
    votes: dict[str, str]


@dataclass
class AnnotatorAgreement:
    labels: int = 0  # standing labels in the queue
    done: int = 0  # clips labelled or skipped in the queue
    total: int = 0  # public clips in the queue
    majority_clips: int = 0  # their clips with >= 2 labels and a majority
    with_majority: int = 0  # of those, how many they labelled as the majority did

    @property
    def majority_share(self) -> float | None:
        return self.with_majority / self.majority_clips if self.majority_clips else None


@dataclass
class QueueAgreement:
    """One queue's agreement: only clips with two or more labels count, and only labels given in a queue."""

    queue: str | None
    total: int
    clips: dict[str, ClipAgreement]
    annotators: dict[str, AnnotatorAgreement]
    kappa: float | None
    alpha: float | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _clean_text(text: str | None, limit: int) -> str:
    return _CONTROL_RE.sub("", str(text or "")).strip()[:limit]


def sanitize_source(name: str) -> str:
    """Keep only the base name of a user's file name, as metadata: it never becomes a path."""
    return _clean_text(re.split(r"[\\/]", str(name or ""))[-1], 200)


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise InvalidRequest(f"not a clip id (64 lowercase hex characters): {sha!r}")
    return sha


def _check_label(label: str) -> str:
    try:
        return canonical(label)
    except KeyError as exc:
        raise InvalidRequest(exc.args[0]) from None


def _check_annotator(annotator: str) -> str:
    name = _clean_text(annotator, 100)
    if not name:
        raise InvalidRequest("an annotator name is required")
    return name


def _to_pcm16(waveform: np.ndarray) -> np.ndarray:
    """Quantise to the PCM16 that is hashed and stored, so a saved clip reloads bit-exact."""
    samples = np.asarray(waveform)
    if samples.ndim != 1 or samples.size == 0:
        raise InvalidAudio(f"expected a non-empty mono waveform, got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise InvalidAudio(f"expected float samples in [-1, 1], got dtype {samples.dtype}")
    if not np.all(np.isfinite(samples)):
        raise InvalidAudio("the waveform contains NaN or infinite samples")
    scaled = np.round(samples.astype(np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2")


def clip_sha256(waveform_16k: np.ndarray) -> str:
    """The id the store gives a 16 kHz clip (sha256 of its PCM16 samples): lets other data, such as
    a corpus, be matched to stored clips by content."""
    return _pcm_sha256(_to_pcm16(waveform_16k))


def _pcm_sha256(pcm: np.ndarray) -> str:
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def _human_error(exc: BaseException, root: Path) -> StoreError | None:
    """Translate the storage failures a user can act on into one clear StoreError."""
    message = str(exc).lower()
    code = getattr(exc, "errno", None)
    if "full" in message or code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StoreError(
            f"The annotation store at {root} cannot save: the disk is full (or a size limit was hit). "
            "Nothing from this save was kept; free some space and try again."
        )
    if "readonly" in message or "read-only" in message or "unable to open" in message or code in (
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    ):
        return StoreError(
            f"The annotation store at {root} is not writable (read-only folder or missing permission). "
            "Point the store at a writable folder (on a Hugging Face Space: /data)."
        )
    if "locked" in message or "busy" in message:
        return StoreError(
            f"The annotation store at {root} stayed busy for over {BUSY_TIMEOUT_S:.0f} s; try again."
        )
    if "disk i/o error" in message:
        return StoreError(
            f"The annotation store at {root} could not write to disk (full, over a size limit or failing). "
            "Nothing from this save was kept; check the disk and try again."
        )
    if "not a database" in message or "malformed" in message:
        return StoreError(f"The annotation database in {root} is damaged ({exc}); restore it from a backup.")
    return None


class AnnotationStore:
    """Clips, labels, skips, predictions and model versions in one folder; safe across threads
    and processes (one SQLite connection per thread, per process)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.db_path = self.root / DB_NAME
        self._local = threading.local()
        self._pid = os.getpid()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        with self._guard():
            (self.root / CLIP_DIR).mkdir(parents=True, exist_ok=True)
            self._migrate()

    # -- connections and transactions -------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            friendly = _human_error(exc, self.root)
            if friendly is None:
                raise
            raise friendly from exc

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child must never reuse its parent's connections
            self._local, self._pid, self._connections = threading.local(), os.getpid(), []
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front so it never fails half-way."""
        with self._guard():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] | dict = ()) -> list[sqlite3.Row]:
        with self._guard():
            return self._conn().execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            version = self.schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"The annotation store at {self.root} has schema version {version}, newer than this "
                    f"code's {SCHEMA_VERSION}: upgrade the ser package."
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (number, _now()))

    def schema_version(self, conn: sqlite3.Connection | None = None) -> int:
        row = (conn or self._conn()).execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clips --------------------------------------------------------------------------------

    def add_clip(
        self,
        waveform_16k: np.ndarray,
        source: str = "",
        speaker: str | None = None,
        queue: str | None = None,
        *,
        private: bool = False,
        session: str | None = None,
    ) -> str:
        """Save a 16 kHz mono clip once (same samples -> same sha256) and return its id.

        ``private`` clips (a visitor's Demo recordings) are never served to annotators until an
        admin queues them (``publish_clips``); ``session`` records whose browser saved it, so that
        visitor can delete it again. Saving the same audio again never changes its privacy (only an
        admin's ``publish_clips`` does), and a private save never moves a queued clip."""
        pcm = _to_pcm16(waveform_16k)
        sha = _pcm_sha256(pcm)
        relative = f"{CLIP_DIR}/{sha[:2]}/{sha}.flac"
        with self._guard():
            self._write_clip_file(self.root / relative, pcm)
        speaker = _clean_text(speaker, 100) or None
        queue = _clean_text(queue, 100) or None
        with self._write() as conn:
            before = conn.execute("SELECT queue, private FROM clips WHERE sha256 = ?", (sha,)).fetchone()
            conn.execute(
                # rowids only grow, even past deleted clips: the Hub sync's cursor relies on it
                """INSERT INTO clips (rowid, sha256, path, duration_s, source, speaker, queue, created_at, private, session)
                   VALUES (MAX(COALESCE((SELECT MAX(rowid) FROM clips), 0),
                               COALESCE((SELECT MAX(clip_rowid) FROM deletions), 0)) + 1,
                           ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(sha256) DO UPDATE SET
                     speaker = COALESCE(clips.speaker, excluded.speaker),
                     queue = CASE WHEN excluded.private OR clips.private THEN clips.queue
                                  ELSE COALESCE(excluded.queue, clips.queue) END""",
                (sha, relative, pcm.size / SAMPLE_RATE, sanitize_source(source), speaker, queue, _now(),
                 int(private), _clean_text(session, 100) or None),
            )
            if before is not None:
                after = conn.execute("SELECT queue, private FROM clips WHERE sha256 = ?", (sha,)).fetchone()
                if tuple(after) != tuple(before):  # re-queued or made public: may now sit behind a frontier
                    self._requeued(conn, [sha])
        return sha

    @staticmethod
    def _requeued(conn: sqlite3.Connection, shas: list[str]) -> None:
        """Keep ``done`` in step with clips whose queue or privacy changed; forget every frontier."""
        for sha in shas:
            conn.execute(
                """UPDATE done SET queue = (SELECT queue FROM clips WHERE sha256 = ?1),
                     public = (SELECT 1 - private FROM clips WHERE sha256 = ?1) WHERE sha256 = ?1""",
                (sha,),
            )
        conn.execute("DELETE FROM frontier")

    @staticmethod
    def _mark_done(conn: sqlite3.Connection, annotator: str, sha: str) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO done SELECT ?, sha256, queue, 1 - private FROM clips WHERE sha256 = ?",
            (annotator, sha),
        )

    @staticmethod
    def _write_clip_file(path: Path, pcm: np.ndarray) -> None:
        if path.exists():  # content-addressed: an existing file already holds these samples
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            encoded = io.BytesIO()  # encode in memory so a failed disk write surfaces as OSError
            sf.write(encoded, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            with open(tmp, "wb") as handle:
                handle.write(encoded.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def clip_path(self, sha: str) -> Path:
        rows = self._read("SELECT path FROM clips WHERE sha256 = ?", (_check_sha(sha),))
        if not rows:
            raise NotInStore(f"no clip {sha} in the store")
        return self.root / rows[0]["path"]

    def load_clip(self, sha: str) -> np.ndarray:
        """The clip as float32 at 16 kHz, exactly the PCM16 samples that were hashed."""
        pcm, rate = sf.read(self.clip_path(sha), dtype="int16")
        if rate != SAMPLE_RATE:
            raise StoreError(f"clip {sha} is stored at {rate} Hz, expected {SAMPLE_RATE}")
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)

    def clip_info(self, sha: str) -> dict[str, Any]:
        rows = self._read("SELECT * FROM clips WHERE sha256 = ?", (_check_sha(sha),))
        if not rows:
            raise NotInStore(f"no clip {sha} in the store")
        return dict(rows[0])

    def count_clips(self, queue: str | None = None) -> int:
        return int(self._read("SELECT COUNT(*) FROM clips WHERE ?1 IS NULL OR queue = ?1", (queue,))[0][0])

    # -- labels ---------------------------------------------------------------------------------

    def add_label(
        self,
        sha: str,
        annotator: str,
        label: str,
        note: str = "",
        model_version: str | None = None,
        model_probs: dict[str, float] | None = None,
        queue: str | None = None,
    ) -> int:
        """Record one annotator's label for a clip; a later label by the same person supersedes it.

        ``queue`` files it under the queue it was given in (None: a Demo correction)."""
        _check_sha(sha)
        emotion = _check_label(label)
        try:
            with self._write() as conn:
                return self._insert_label(conn, sha, _check_annotator(annotator), emotion, note, model_version,
                                          model_probs, queue)
        except sqlite3.IntegrityError:
            raise NotInStore(f"no clip {sha} in the store") from None

    def save_queue_label(
        self,
        sha: str,
        annotator: str,
        label: str,
        queue: str | None,
        *,
        note: str = "",
        model_version: str | None = None,
        model_probs: dict[str, float] | None = None,
        edit: bool = False,
    ) -> SavedLabel:
        """A queue label, idempotent per (annotator, clip, queue): while this annotator has a standing
        label on the clip in this queue, saving again adds nothing (a double click, a resent request).
        ``edit`` replaces that label instead (the old row is kept, marked undone)."""
        _check_sha(sha)
        emotion = _check_label(label)
        name = _check_annotator(annotator)
        queue = _clean_text(queue, 100) or None
        try:
            with self._write() as conn:  # one IMMEDIATE transaction: two racing saves cannot both insert
                standing = conn.execute(
                    """SELECT id, label FROM labels WHERE sha256 = ? AND annotator = ? AND queue IS ?
                       AND undone_at IS NULL ORDER BY id DESC""", (sha, name, queue)).fetchall()
                if standing and not edit:
                    return SavedLabel(int(standing[0]["id"]), False, standing[0]["label"])
                for row in standing:
                    self._withdraw(conn, int(row["id"]))
                label_id = self._insert_label(conn, sha, name, emotion, note, model_version, model_probs, queue)
                return SavedLabel(label_id, True, emotion)
        except sqlite3.IntegrityError:
            raise NotInStore(f"no clip {sha} in the store") from None

    def _insert_label(self, conn: sqlite3.Connection, sha: str, name: str, emotion: str, note: str,
                      model_version: str | None, model_probs: dict[str, float] | None, queue: str | None) -> int:
        probs = None if model_probs is None else json.dumps({str(k): float(v) for k, v in model_probs.items()})
        cursor = conn.execute(
            """INSERT INTO labels (sha256, annotator, label, note, created_at, model_version, model_probs, queue)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (sha, name, emotion, _clean_text(note, 2000), _now(), model_version, probs, _clean_text(queue, 100) or None),
        )
        self._mark_done(conn, name, sha)
        return int(cursor.lastrowid)

    @staticmethod
    def _withdraw(conn: sqlite3.Connection, label_id: int) -> None:
        """Mark one label undone (kept in the table; replicas see it through ``undo_seq``)."""
        conn.execute(
            """UPDATE labels SET undone_at = ?,
                 undo_seq = (SELECT COALESCE(MAX(undo_seq), 0) + 1 FROM labels) WHERE id = ?""",
            (_now(), label_id),
        )

    def undo_last(self, annotator: str, among: Iterable[int] | None = None) -> int | None:
        """Withdraw this annotator's latest label (kept in the table, marked undone).

        ``among`` limits it to those label ids (a browser session's own saves: without logins a
        typed name proves nothing, so a page may only undo what it saved itself)."""
        allowed = None if among is None else [int(i) for i in among]
        if allowed is not None and not allowed:
            return None
        with self._write() as conn:
            only = "" if allowed is None else f" AND id IN ({','.join('?' * len(allowed))})"
            row = conn.execute(
                f"SELECT id FROM labels WHERE annotator = ? AND undone_at IS NULL{only} ORDER BY id DESC LIMIT 1",
                (_check_annotator(annotator), *(allowed or ())),
            ).fetchone()
            if row is None:
                return None
            self._withdraw(conn, int(row["id"]))
            name = _check_annotator(annotator)
            conn.execute(
                """DELETE FROM done WHERE annotator = ?1 AND sha256 = (SELECT sha256 FROM labels WHERE id = ?2)
                     AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.sha256 = done.sha256 AND l.annotator = ?1
                                     AND l.undone_at IS NULL)
                     AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.sha256 = done.sha256 AND s.annotator = ?1)""",
                (name, row["id"]),
            )
            conn.execute("DELETE FROM frontier WHERE annotator = ?", (name,))
            return int(row["id"])

    def count_labels(self, annotator: str | None = None) -> int:
        """Standing labels (of ``annotator``, cleaned as ``add_label`` cleans it, or of everyone)."""
        if annotator is None:
            return int(self._read("SELECT COUNT(*) FROM labels WHERE undone_at IS NULL")[0][0])
        rows = self._read(
            "SELECT COUNT(*) FROM labels WHERE annotator = ? AND undone_at IS NULL", (_check_annotator(annotator),)
        )
        return int(rows[0][0])

    def labels_for(self, sha: str, include_undone: bool = False) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT * FROM labels WHERE sha256 = ? AND (? OR undone_at IS NULL) ORDER BY id",
            (_check_sha(sha), include_undone),
        )
        return [_label_dict(row) for row in rows]

    def label_ids(self) -> set[int]:
        return {int(row[0]) for row in self._read("SELECT id FROM labels")}

    # -- the annotation queue ---------------------------------------------------------------------

    def skip(self, sha: str, annotator: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO skips (sha256, annotator, created_at) VALUES (?, ?, ?)",
                (_check_sha(sha), _check_annotator(annotator), _now()),
            )
            self._mark_done(conn, _check_annotator(annotator), sha)

    def set_prediction(self, sha: str, model_version: str, probs: dict[str, float]) -> None:
        """Keep a model's guess for a clip: it pre-fills the form and orders the queue."""
        clean = {str(k): float(v) for k, v in probs.items()}
        with self._write() as conn:
            conn.execute(
                """INSERT OR REPLACE INTO predictions (sha256, model_version, probs, confidence, created_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (_check_sha(sha), str(model_version), json.dumps(clean), max(clean.values(), default=0.0), _now()),
            )
            rank = max(clean.values(), default=0.0)
            row = conn.execute("SELECT rowid, queue, rank FROM clips WHERE sha256 = ?", (sha,)).fetchone()
            if row is not None and row["rank"] != rank:
                conn.execute("UPDATE clips SET rank = ? WHERE sha256 = ?", (rank, sha))
                # a clip that moved ahead of a frontier must be found again: pull those frontiers back
                conn.execute(
                    """UPDATE frontier SET rank = ?1, rid = ?2 WHERE ord = 'least_confident'
                         AND (queue = '' OR queue = ?3) AND (rank, rid) > (?1, ?2)""",
                    (rank, row["rowid"], row["queue"] or ""),
                )

    def prediction_for(self, sha: str, model_version: str | None = None) -> dict[str, float] | None:
        """The latest stored guess for a clip (from ``model_version`` only, when given)."""
        rows = self._read(
            """SELECT probs FROM predictions WHERE sha256 = ?1 AND (?2 IS NULL OR model_version = ?2)
               ORDER BY created_at DESC LIMIT 1""", (_check_sha(sha), model_version)
        )
        return json.loads(rows[0]["probs"]) if rows else None

    # Pending clips: in the queue (any queue when None), public, and not in this annotator's
    # ``done`` (a standing label or a skip). The ORDER BY follows an index and starts at the
    # annotator's frontier (every clip before it is done), so a call costs a few index lookups
    # however many clips the store and the annotator have.
    _NOT_DONE = """c.private = 0
        AND NOT EXISTS (SELECT 1 FROM done d WHERE d.annotator = :annotator AND d.sha256 = c.sha256)
        AND (:max_labels IS NULL OR (SELECT COUNT(DISTINCT annotator) FROM labels l
             WHERE l.sha256 = c.sha256 AND l.undone_at IS NULL) < :max_labels)"""
    _KEYS = {"fifo": ("c.rowid >= :rid", "c.rowid"),
             "least_confident": ("(c.rank, c.rowid) >= (:rank, :rid)", "c.rank, c.rowid")}

    def next_clip(
        self, annotator: str, queue: str | None = None, order: str = "fifo", max_labels: int | None = None
    ) -> str | None:
        """The next clip this annotator has neither labelled nor skipped, or None when done.

        ``least_confident`` serves the clips the model is least sure about first (active learning);
        clips without a prediction come after, oldest first. ``max_labels`` stops serving a clip
        once that many people have labelled it. Private clips (Demo recordings) are never served.
        """
        if order not in ORDERS:
            raise InvalidRequest(f"order must be one of {ORDERS}, got {order!r}")
        name = _check_annotator(annotator)
        in_queue = "c.queue = :queue" if queue is not None else "1"
        after, ordering = self._KEYS[order]
        params = {"queue": queue, "annotator": name, "max_labels": max_labels, "rank": -1.0, "rid": 0}
        sql = (f"SELECT c.sha256, c.rank, c.rowid AS rid FROM clips c WHERE {in_queue} AND {after} AND "
               f"{self._NOT_DONE} ORDER BY {ordering} LIMIT 1")
        key = (name, queue if queue is not None else "", order)
        with self._write() as conn:  # the frontier must not move past a clip another thread just put back
            front = conn.execute("SELECT rank, rid FROM frontier WHERE annotator = ? AND queue = ? AND ord = ?",
                                 key).fetchone()
            if front is not None and max_labels is None:  # max_labels: clips are not done for good
                params.update(rank=front["rank"], rid=front["rid"])
            row = conn.execute(sql, params).fetchone()
            if row is not None and max_labels is None and (front is None or tuple(front) != (row["rank"], row["rid"])):
                conn.execute("INSERT OR REPLACE INTO frontier VALUES (?, ?, ?, ?, ?)", (*key, row["rank"], row["rid"]))
        return row["sha256"] if row else None

    def count_remaining(self, annotator: str, queue: str | None = None, max_labels: int | None = None) -> int:
        """How many clips ``next_clip`` would still serve: the queue's public clips minus this
        annotator's done ones (two index counts)."""
        params = {"queue": queue, "annotator": _check_annotator(annotator), "max_labels": max_labels}
        in_queue = "c.queue = :queue" if queue is not None else "1"
        if max_labels is not None:
            return int(self._read(f"SELECT COUNT(*) FROM clips c WHERE {in_queue} AND {self._NOT_DONE}", params)[0][0])
        total = self._read(f"SELECT COUNT(*) FROM clips c WHERE {in_queue} AND c.private = 0", params)[0][0]
        in_done_queue = "queue = :queue" if queue is not None else "1"
        done = self._read(f"SELECT COUNT(*) FROM done WHERE annotator = :annotator AND public = 1 AND {in_done_queue}",
                          params)[0][0]
        return int(total) - int(done)

    # -- queues as records -------------------------------------------------------------------------

    def ensure_queue(self, name: str, keys: Sequence[str], suggestion: str | None = None,
                     min_annotators: int | None = None) -> QueueSettings:
        """The queue ``name``, made with ``keys`` (the labels the number keys pick) if it is new or has
        none yet; ``suggestion`` and ``min_annotators`` change its options when given."""
        queue = _clean_text(name, 100)
        if not queue:
            raise InvalidRequest("a queue name is required")
        key_labels = [_check_label(label) for label in keys]
        if suggestion is not None and suggestion not in SUGGESTIONS:
            raise InvalidRequest(f"suggestion must be one of {SUGGESTIONS}, got {suggestion!r}")
        if min_annotators is not None and not 1 <= int(min_annotators) <= 100:
            raise InvalidRequest(f"the minimum number of annotators per clip is 1 to 100, got {min_annotators}")
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO queues (name, keys, created_at) VALUES (?, ?, ?)",
                         (queue, json.dumps(key_labels), _now()))
            conn.execute("UPDATE queues SET keys = ? WHERE name = ? AND keys = '[]'", (json.dumps(key_labels), queue))
            if suggestion is not None:
                conn.execute("UPDATE queues SET suggestion = ? WHERE name = ?", (suggestion, queue))
            if min_annotators is not None:
                conn.execute("UPDATE queues SET min_annotators = ? WHERE name = ?", (int(min_annotators), queue))
        return self.queue_settings(queue)  # type: ignore[return-value]

    def queue_settings(self, name: str) -> QueueSettings | None:
        rows = self._read("SELECT * FROM queues WHERE name = ?", (_clean_text(name, 100),))
        if not rows:
            return None
        row = rows[0]
        return QueueSettings(name=row["name"], keys=json.loads(row["keys"]), suggestion=row["suggestion"],
                             min_annotators=int(row["min_annotators"]))

    def list_queues(self) -> list[str]:
        """Every queue: those made as records and any queue a public clip is filed under."""
        rows = self._read("""SELECT name FROM queues UNION
                             SELECT DISTINCT queue FROM clips WHERE queue IS NOT NULL AND private = 0 ORDER BY 1""")
        return [row[0] for row in rows]

    def count_public(self, queue: str | None = None) -> int:
        """The clips annotators are served in ``queue`` (every queue when None)."""
        return int(self._read("SELECT COUNT(*) FROM clips WHERE private = 0 AND (?1 IS NULL OR queue = ?1)",
                              (queue,))[0][0])

    def unpredicted(self, model_version: str, queue: str | None = None, limit: int = 100) -> list[str]:
        """Public clips (of ``queue``) without a prediction from ``model_version``, oldest first: what a
        background pass predicts so least-confident order can rank them."""
        rows = self._read(
            """SELECT c.sha256 FROM clips c WHERE c.private = 0 AND (?1 IS NULL OR c.queue = ?1)
                 AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.sha256 = c.sha256 AND p.model_version = ?2)
               ORDER BY c.rowid LIMIT ?3""", (queue, str(model_version), int(limit)))
        return [row[0] for row in rows]

    # -- region labels ------------------------------------------------------------------------------

    def add_region(self, sha: str, annotator: str, label: str, start_s: float, end_s: float,
                   queue: str | None = None, note: str = "") -> int:
        """Label a time span of a clip (a long recording holds more than one emotion)."""
        _check_sha(sha)
        emotion = _check_label(label)
        name = _check_annotator(annotator)
        try:
            start, end = float(start_s), float(end_s)
        except (TypeError, ValueError):
            raise InvalidRequest("a span needs a start and an end in seconds") from None
        with self._write() as conn:
            row = conn.execute("SELECT duration_s FROM clips WHERE sha256 = ?", (sha,)).fetchone()
            if row is None:
                raise NotInStore(f"no clip {sha} in the store")
            duration = float(row["duration_s"])
            if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end <= duration + 1e-6):
                raise InvalidRequest(f"a span must lie inside the clip (0 to {duration:.2f} s) and end after it "
                                     f"starts, got {start:g} to {end:g} s")
            cursor = conn.execute(
                """INSERT INTO regions (sha256, annotator, label, start_s, end_s, note, queue, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (sha, name, emotion, start, end, _clean_text(note, 2000), _clean_text(queue, 100) or None, _now()),
            )
            return int(cursor.lastrowid)

    def regions_for(self, sha: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM regions WHERE sha256 = ? AND undone_at IS NULL ORDER BY start_s, id",
                          (_check_sha(sha),))
        return [dict(row) for row in rows]

    # -- agreement ----------------------------------------------------------------------------------

    def votes(self, queue: str | None = None, *, queued: bool = False) -> dict[str, dict[str, tuple[int, str]]]:
        """clip -> annotator -> (label id, label): each person's latest standing label per clip.

        ``queued``: only labels given in a queue (``queue``, or any queue when None), so Demo
        corrections never mix into a queue's agreement."""
        where, params = "undone_at IS NULL", []
        if queued:
            where += " AND queue IS NOT NULL" if queue is None else " AND queue = ?"
            params = [] if queue is None else [queue]
        votes: dict[str, dict[str, tuple[int, str]]] = {}
        for row in self._read(f"SELECT id, sha256, annotator, label FROM labels WHERE {where} ORDER BY id", params):
            votes.setdefault(row["sha256"], {})[row["annotator"]] = (int(row["id"]), row["label"])
        return votes

    def queue_agreement(self, queue: str | None = None) -> QueueAgreement:
        """Agreement in one queue (every queue when None) from its labels only (no Demo corrections),
        over clips with two or more labels; per annotator their progress and how often they side
        with the majority."""
        votes = self.votes(queue, queued=True)
        multi = {sha: by for sha, by in votes.items() if len(by) >= 2}
        clips = {}
        for sha, by in multi.items():
            majority, share = _majority(Counter(label for _, label in by.values()))
            clips[sha] = ClipAgreement(n_labels=len(by), majority=majority, agreement=share,
                                       votes={name: label for name, (_, label) in sorted(by.items())})
        in_queue, params = ("queue = ?", [queue]) if queue is not None else ("queue IS NOT NULL", [])
        total = int(self._read(f"SELECT COUNT(*) FROM clips WHERE private = 0 AND {in_queue}", params)[0][0])
        done = {row[0]: int(row[1]) for row in self._read(
            f"SELECT annotator, COUNT(*) FROM done WHERE public = 1 AND {in_queue} GROUP BY annotator", params)}
        annotators: dict[str, AnnotatorAgreement] = {}
        for by in votes.values():
            for name in by:
                annotators.setdefault(name, AnnotatorAgreement(done=done.get(name, 0), total=total))
                annotators[name].labels += 1
        for sha, by in multi.items():
            majority = clips[sha].majority
            for name, (_, label) in by.items():
                if majority is not None:
                    annotators[name].majority_clips += 1
                    annotators[name].with_majority += int(label == majority)
        return QueueAgreement(queue=queue, total=total, clips=clips, annotators=annotators,
                              kappa=_kappa(multi), alpha=_alpha(multi))

    def clip_agreement(self) -> dict[str, dict[str, Any]]:
        """Per clip: number of voters, the majority label (None on a tie) and the share agreeing with it."""
        summary = {}
        for sha, by_annotator in self.votes().items():
            counts = Counter(label for _, label in by_annotator.values())
            majority, agreement = _majority(counts)
            summary[sha] = {"n_labels": len(by_annotator), "majority": majority, "agreement": agreement}
        return summary

    def annotator_stats(self) -> dict[str, dict[str, Any]]:
        """Per annotator: standing labels, and how often they agree with the others on shared clips."""
        stats: dict[str, dict[str, Any]] = {}
        for row in self._read("SELECT annotator, COUNT(*) AS n FROM labels WHERE undone_at IS NULL GROUP BY annotator"):
            stats[row["annotator"]] = {"labels": int(row["n"]), "shared_clips": 0, "agreement": None}
        shares: dict[str, list[float]] = {}
        for by_annotator in self.votes().values():
            for annotator, (_, label) in by_annotator.items():
                others = [other for name, (_, other) in by_annotator.items() if name != annotator]
                if others:
                    shares.setdefault(annotator, []).append(sum(o == label for o in others) / len(others))
        for annotator, values in shares.items():
            stats[annotator].update(shared_clips=len(values), agreement=float(np.mean(values)))
        return stats

    def _multi_rated(self) -> dict[str, dict[str, tuple[int, str]]]:
        return {sha: by for sha, by in self.votes().items() if len(by) >= 2}

    def fleiss_kappa(self) -> float | None:
        """Fleiss' kappa over clips with at least two labels (None when undefined)."""
        return _kappa(self._multi_rated())

    def krippendorff_alpha(self) -> float | None:
        """Krippendorff's alpha (nominal) over clips with at least two labels (None when undefined)."""
        return _alpha(self._multi_rated())

    # -- model versions -------------------------------------------------------------------------------

    def register_model(self, version: str, path: str | os.PathLike, metrics: dict[str, Any] | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                """INSERT INTO model_versions (version, path, metrics, created_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT(version) DO UPDATE SET path = excluded.path, metrics = excluded.metrics""",
                (str(version), str(path), json.dumps(metrics or {}, default=float), _now()),
            )

    def set_active(self, version: str) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE version = ?", (version,)).fetchone() is None:
                raise NotInStore(f"no model version {version!r} registered")
            now = _now()
            conn.execute(
                """UPDATE model_versions SET active = (version = ?1),
                     activated_at = CASE WHEN version = ?1 AND active = 0 THEN ?2 ELSE activated_at END""",
                (version, now),
            )

    def previous_model(self) -> dict[str, Any] | None:
        """The model that served before the active one (what a rollback returns to), or None."""
        rows = self._read(
            """SELECT * FROM model_versions WHERE active = 0 AND activated_at IS NOT NULL
               ORDER BY activated_at DESC LIMIT 1"""
        )
        return _model_dict(rows[0]) if rows else None

    def active_model(self) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM model_versions WHERE active = 1")
        return _model_dict(rows[0]) if rows else None

    def list_models(self) -> list[dict[str, Any]]:
        return [_model_dict(row) for row in self._read("SELECT * FROM model_versions ORDER BY created_at, version")]

    # -- deletion and retention ----------------------------------------------------------------------

    def publish_clips(self, queue: str, shas: Iterable[str] | None = None) -> int:
        """Put private clips (Demo recordings) in ``queue`` so annotators are served them (all, or ``shas``)."""
        queue = _clean_text(queue, 100)
        if not queue:
            raise InvalidRequest("a queue name is required")
        with self._write() as conn:
            if shas is None:
                cursor = conn.execute("UPDATE clips SET private = 0, queue = ? WHERE private = 1", (queue,))
            else:
                ids = [_check_sha(sha) for sha in shas]
                cursor = conn.execute(
                    f"UPDATE clips SET private = 0, queue = ? WHERE private = 1 AND sha256 IN ({','.join('?' * len(ids))})",
                    (queue, *ids),
                )
            changed = int(cursor.rowcount)
            conn.execute("""UPDATE done SET queue = (SELECT queue FROM clips c WHERE c.sha256 = done.sha256),
                              public = 1 WHERE public = 0
                              AND sha256 IN (SELECT sha256 FROM clips WHERE private = 0)""")
            conn.execute("DELETE FROM frontier")
            return changed

    def count_private(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM clips WHERE private = 1")[0][0])

    def session_clips(self, session: str) -> list[str]:
        """The clips one browser session saved (what its visitor may delete)."""
        session = _clean_text(session, 100)
        if not session:
            return []
        return [row[0] for row in self._read("SELECT sha256 FROM clips WHERE session = ? ORDER BY rowid", (session,))]

    def delete_clips(self, shas: Iterable[str], reason: str) -> int:
        """Delete clips with every label, skip and prediction of them, and their files; each deletion
        is recorded (without the audio) so replicas such as the Hub sync can honour it."""
        ids = sorted({_check_sha(sha) for sha in shas})
        if not ids:
            return 0
        paths = []
        with self._write() as conn:
            now = _now()
            for sha in ids:
                row = conn.execute("SELECT rowid, path FROM clips WHERE sha256 = ?", (sha,)).fetchone()
                if row is None:
                    continue
                for table in ("labels", "regions", "skips", "predictions", "done", "clips"):
                    conn.execute(f"DELETE FROM {table} WHERE sha256 = ?", (sha,))
                conn.execute(
                    "INSERT INTO deletions (sha256, path, reason, deleted_at, clip_rowid) VALUES (?, ?, ?, ?, ?)",
                    (sha, row["path"], _clean_text(reason, 200), now, row["rowid"]),
                )
                paths.append(self.root / row["path"])
        with self._guard():
            for path in paths:  # after the commit: a crash in between leaves a file no row points at
                path.unlink(missing_ok=True)
        return len(paths)

    def delete_session(self, session: str) -> int:
        """Everything one browser session saved: its clips (with all their labels) and files."""
        return self.delete_clips(self.session_clips(session), "deleted by the visitor who saved it")

    def delete_annotator(self, annotator: str) -> tuple[int, int]:
        """Every label and skip of one annotator, and the private clips (their Demo recordings) they
        labelled; returns (labels, clips) deleted."""
        name = _check_annotator(annotator)
        own = [row[0] for row in self._read(
            """SELECT DISTINCT c.sha256 FROM labels l JOIN clips c ON c.sha256 = l.sha256
               WHERE l.annotator = ? AND c.private = 1""", (name,))]
        labels = int(self._read("SELECT COUNT(*) FROM labels WHERE annotator = ?", (name,))[0][0])
        clips = self.delete_clips(own, f"everything from annotator {name} deleted by an admin")
        with self._write() as conn:
            conn.execute("DELETE FROM labels WHERE annotator = ?", (name,))
            for table in ("regions", "skips", "done", "frontier"):
                conn.execute(f"DELETE FROM {table} WHERE annotator = ?", (name,))
            conn.execute("INSERT INTO deletions (sha256, path, reason, deleted_at) VALUES ('', '', ?, ?)",
                         (f"labels of annotator {name}", _now()))
        return int(labels), clips

    def purge_older_than(self, days: float) -> int:
        """Delete every clip saved more than ``days`` ago (the retention limit), with its labels."""
        if not days > 0:
            raise InvalidRequest(f"the retention limit must be a positive number of days, got {days}")
        cutoff = datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() - days * 86400, timezone.utc)
        old = [row[0] for row in self._read("SELECT sha256 FROM clips WHERE created_at < ?",
                                            (cutoff.isoformat(timespec="microseconds"),))]
        return self.delete_clips(old, f"older than the {days:g}-day retention limit")

    # -- training data ------------------------------------------------------------------------------------

    def resolve(
        self,
        policy: str = "majority",
        *,
        min_agreement: float = 2 / 3,
        min_labels: int = 2,
        trusted: Iterable[str] | None = None,
    ) -> Resolution:
        """Settle one label per clip.

        ``majority``: the most common label (ties are left out). ``min_agreement``: the majority
        label only where at least ``min_labels`` people labelled and ``min_agreement`` of them
        agree. ``latest_trusted``: the most recent label from an annotator in ``trusted``
        (everyone when None). Clips left out are counted by reason in ``skipped``.
        """
        if policy not in POLICIES:
            raise InvalidRequest(f"policy must be one of {POLICIES}, got {policy!r}")
        trusted_set = None if trusted is None else {str(name) for name in trusted}
        votes = self.votes()
        resolution = Resolution(clips=[])
        for row in self._read("SELECT sha256, path, speaker FROM clips ORDER BY rowid"):
            by_annotator = votes.get(row["sha256"], {})
            if not by_annotator:
                resolution.skipped["unlabelled"] += 1
                continue
            majority, agreement = _majority(Counter(label for _, label in by_annotator.values()))
            label, reason = _apply_policy(
                policy, by_annotator, majority, agreement, min_agreement, min_labels, trusted_set
            )
            if label is None:
                resolution.skipped[reason] += 1
                continue
            resolution.clips.append(
                ResolvedClip(
                    sha256=row["sha256"],
                    label=label,
                    annotators=sorted(by_annotator),
                    agreement=agreement,
                    n_labels=len(by_annotator),
                    speaker=row["speaker"] or "",
                    path=str(self.root / row["path"]),
                )
            )
        return resolution

    def to_dataset(
        self,
        policy: str = "majority",
        *,
        min_agreement: float = 2 / 3,
        min_labels: int = 2,
        trusted: Iterable[str] | None = None,
        embed_audio: bool = False,
    ):
        """The clips ``resolve`` settles, as a ``datasets.Dataset`` (``ser.corpora``'s columns plus
        sha256, annotators, agreement and n_labels; ``label`` is a ClassLabel on all of EMOTIONS).

        Audio is ``Audio(16 kHz, decode=False)`` (decoding would need torchcodec); ``embed_audio``
        puts the FLAC bytes in the rows so a saved copy no longer needs this folder.
        """
        resolution = self.resolve(policy, min_agreement=min_agreement, min_labels=min_labels, trusted=trusted)
        return self.dataset_from(resolution, embed_audio=embed_audio)

    def dataset_from(self, resolution: Resolution, *, embed_audio: bool = False):
        """The ``datasets.Dataset`` of an already computed resolution (see ``to_dataset``)."""
        import datasets

        clips = resolution.clips
        if embed_audio:
            audio = [{"bytes": Path(c.path).read_bytes(), "path": f"{c.sha256}.flac"} for c in clips]
        else:
            audio = [{"bytes": None, "path": c.path} for c in clips]
        features = datasets.Features(
            {
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                "label": datasets.ClassLabel(names=list(EMOTIONS)),
                "speaker": datasets.Value("string"),
                "corpus": datasets.Value("string"),
                "path": datasets.Value("string"),
                "sha256": datasets.Value("string"),
                "annotators": datasets.List(datasets.Value("string")),
                "agreement": datasets.Value("float32"),
                "n_labels": datasets.Value("int32"),
            }
        )
        columns = {
            "audio": audio,
            "label": [c.label for c in clips],
            "speaker": [c.speaker for c in clips],
            "corpus": ["store"] * len(clips),
            "path": [c.path for c in clips],
            "sha256": [c.sha256 for c in clips],
            "annotators": [c.annotators for c in clips],
            "agreement": [c.agreement for c in clips],
            "n_labels": [c.n_labels for c in clips],
        }
        # Cast rather than encode: datasets' Audio encoder insists on torchcodec even for paths.
        dataset = datasets.Dataset.from_dict(columns, features=features)
        return dataset.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE, decode=False))

    # -- replication ----------------------------------------------------------------------------------------

    def changes_since(self, cursor: dict[str, int] | None = None) -> tuple[dict[str, list[dict]], dict[str, int]]:
        """Rows added (clips, labels) or undone since ``cursor``, and the cursor that follows them.

        Lets a replica (the Hub sync) ship only new rows, append-only, without ever rewriting old ones.
        """
        cursor = {"clips": 0, "labels": 0, "undos": 0, "deletions": 0, "regions": 0, **(cursor or {})}
        clips = self._read("SELECT rowid AS seq, * FROM clips WHERE rowid > ? ORDER BY rowid", (cursor["clips"],))
        labels = self._read("SELECT * FROM labels WHERE id > ? ORDER BY id", (cursor["labels"],))
        undos = self._read(
            "SELECT id, annotator, undone_at, undo_seq FROM labels WHERE undo_seq > ? ORDER BY undo_seq",
            (cursor["undos"],),
        )
        deletions = self._read("SELECT * FROM deletions WHERE seq > ? ORDER BY seq", (cursor["deletions"],))
        regions = self._read("SELECT * FROM regions WHERE id > ? ORDER BY id", (cursor["regions"],))
        changes = {
            "clips": [dict(row) for row in clips],
            "labels": [_label_dict(row) for row in labels],
            "undos": [dict(row) for row in undos],
            "deletions": [dict(row) for row in deletions],
            "regions": [dict(row) for row in regions],
        }
        new_cursor = {
            "deletions": deletions[-1]["seq"] if deletions else cursor["deletions"],
            "clips": clips[-1]["seq"] if clips else cursor["clips"],
            "labels": labels[-1]["id"] if labels else cursor["labels"],
            "undos": undos[-1]["undo_seq"] if undos else cursor["undos"],
            "regions": regions[-1]["id"] if regions else cursor["regions"],
        }
        return changes, new_cursor


def _label_dict(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["model_probs"] = json.loads(record["model_probs"]) if record.get("model_probs") else None
    return record


def _model_dict(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["metrics"] = json.loads(record["metrics"])
    record["active"] = bool(record["active"])
    return record


def _majority(counts: Counter) -> tuple[str | None, float]:
    """The most common label (None on a tie for first) and the share of votes it has."""
    ranked = counts.most_common()
    total = sum(counts.values())
    if not ranked:
        return None, 0.0
    top, top_count = ranked[0]
    tied = len(ranked) > 1 and ranked[1][1] == top_count
    return (None if tied else top), top_count / total


def _apply_policy(
    policy: str,
    by_annotator: dict[str, tuple[int, str]],
    majority: str | None,
    agreement: float,
    min_agreement: float,
    min_labels: int,
    trusted: set[str] | None,
) -> tuple[str | None, str]:
    """The label a policy settles on, or None and the reason it could not."""
    if policy == "latest_trusted":
        standing = [vote for name, vote in by_annotator.items() if trusted is None or name in trusted]
        return (max(standing)[1], "") if standing else (None, "no_trusted_label")
    if majority is None:
        return None, "tie"
    if policy == "min_agreement":
        if len(by_annotator) < min_labels:
            return None, "too_few_labels"
        if agreement < min_agreement:
            return None, "low_agreement"
    return majority, ""


Votes = dict[str, dict[str, tuple[int, str]]]  # clip -> annotator -> (label id, label), as ``AnnotationStore.votes``


def _kappa(rated: Votes) -> float | None:
    """Fleiss' kappa of clips rated two or more times (a column per emotion; unused ones add nothing)."""
    return fleiss_kappa([[Counter(label for _, label in by.values())[c] for c in EMOTIONS] for by in rated.values()])


def _alpha(rated: Votes) -> float | None:
    """Nominal Krippendorff's alpha of clips rated two or more times (NaN where an annotator did not rate)."""
    codes = {label: i for i, label in enumerate(EMOTIONS)}
    annotators = sorted({name for by in rated.values() for name in by})
    return krippendorff_alpha([[codes[by[a][1]] if a in by else np.nan for by in rated.values()] for a in annotators])


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories count table; items may have different rater counts.

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)), p_j = sum_i n_ij / sum_i n_i,
    kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2). None when undefined (no items, or
    every rating in one category). (statsmodels has it, for equal rater counts only.)
    """
    counts = np.asarray(table, dtype=float)
    if counts.size == 0:
        return None
    raters = counts.sum(axis=1)
    if np.any(raters < 2):
        raise ValueError("every item needs at least two ratings for Fleiss' kappa")
    observed = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    shares = counts.sum(axis=0) / raters.sum()
    expected = float((shares**2).sum())
    if np.isclose(expected, 1.0):
        return None
    return float((observed.mean() - expected) / (1.0 - expected))


def krippendorff_alpha(reliability_data: Sequence[Sequence[float]]) -> float | None:
    """Nominal Krippendorff's alpha (annotators x items, NaN = not rated) via the ``krippendorff``
    package; None when undefined (no data, or a single value in all ratings)."""
    import krippendorff

    data = np.asarray(reliability_data, dtype=float)
    if data.size == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
