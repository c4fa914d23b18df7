"""Predict folders of clips at the model's own speed: decode in parallel, write as results come.

One process decoding and predicting in turn leaves the model idle while audio is decoded and
resampled (44.1/48 kHz sources cost about as much as the model). Here decode workers (threads, or
processes on request) run ahead of the model, a bounded window keeps memory flat on any folder size, results are appended
to the output file as they come (so a killed run keeps what it finished, and ``--resume`` skips
it), and clips of exactly the same decoded length may share one batch when the model gives the
same answer batched as alone (checked on the loaded model, never assumed for a family).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE, InvalidAudio, check_judgeable, load_audio

OUTPUT_FORMATS = ("csv", "jsonl", "parquet")
# Largest probability difference between a clip batched and alone for batching to count as exact.
BATCH_TOLERANCE = 1e-5


@dataclass
class Decoded:
    """One input after decoding: the waveform, or the reason it could not be read."""

    path: str
    waveform: np.ndarray | None
    error: str | None = None
    heard: bool = False  # already as the model must hear it (``Predictor.heard``): not denoised again


def decode(path: str) -> Decoded:
    """Decode one file (runs in a worker process); bad audio, or a clip too short to judge (the rule
    ``Predictor.predict`` applies), becomes an error, not an exception."""
    try:
        return Decoded(path, check_judgeable(load_audio(path)))
    except InvalidAudio as error:
        return Decoded(path, None, str(error))
    except OSError as error:
        return Decoded(path, None, f"could not read the file: {error.strerror or error}")


def _quiet_worker() -> None:
    """One thread per decode worker: the cores belong to the model."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"


def decoded_stream(
    paths: Iterable[Path], workers: int, window: int | None = None, *, processes: bool = False
) -> Iterator[Decoded]:
    """Decoded clips in input order; ``workers`` > 0 decodes that many files at once ahead of the caller.

    Threads by default: libsndfile, PyAV and torch's resampler release the GIL, and a thread costs
    nothing to start, where a spawned process imports numpy and torch first (seconds on 2 cores).
    ``processes=True`` isolates decoding (pure-Python work, a decoder that crashes). At most
    ``window`` decoded clips wait in memory (default: 4 per worker), whatever the folder's size.
    """
    if workers <= 0:
        for path in paths:
            yield decode(str(path))
        return
    window = window or 4 * workers
    if processes:
        context = multiprocessing.get_context("spawn")  # never fork a process that holds a model's threads
        pool: Any = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_worker)
    else:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-decode")
    with pool:
        pending: deque[Future[Decoded]] = deque()
        remaining = iter(paths)
        for path in remaining:
            pending.append(pool.submit(decode, str(path)))
            if len(pending) >= window:
                break
        while pending:
            done = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(decode, str(following)))
            yield done


def batching_is_exact(predictor: Any, tolerance: float = BATCH_TOLERANCE) -> bool:
    """Whether clips of equal length give the same probabilities batched as alone with this model.

    Checked on the loaded model and runtime, not assumed per family: a runtime or a model whose
    kernels change with the batch size would give different answers in bulk than one at a time.
    """
    if getattr(predictor, "feature_extractor", None) is None:
        return False
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32) for _ in range(3)]
    try:
        together = predict_same_length(predictor, clips)
    except Exception:  # noqa: BLE001 - a model or runtime that cannot batch at all
        return False
    alone = [predictor._probabilities(clip) for clip in clips]
    return all(float(np.abs(a - b).max()) <= tolerance for a, b in zip(alone, together))


def predict_same_length(predictor: Any, waveforms: list[np.ndarray]) -> list[np.ndarray]:
    """Probabilities for clips of one length in one forward pass (no padding, so no mask needed)."""
    import torch

    if len({len(w) for w in waveforms}) != 1:
        raise ValueError("a batch holds clips of one length only")
    features = predictor.feature_extractor(
        waveforms, sampling_rate=SAMPLE_RATE, padding=predictor._padding, return_tensors="pt"
    )
    inputs = {key: value for key, value in features.items() if key in predictor._forward_keys}
    if predictor._runner is not None:
        logits = predictor._runner(inputs)
    else:
        with torch.inference_mode():
            logits = predictor.model(**inputs).logits
    return list(torch.softmax(logits.float(), dim=-1).numpy().astype(np.float64))


def predict_stream(
    predictor: Any, clips: Iterable[Decoded], batch_size: int = 1
) -> Iterator[tuple[Decoded, dict[str, float] | None]]:
    """(clip, probabilities) for each decoded clip; None for clips that could not be decoded.

    With ``batch_size`` > 1, consecutive clips of exactly equal length run as one batch (the caller
    checks ``batching_is_exact`` first); every other clip runs alone, as ``Predictor.predict`` does,
    and so does every clip it reads as windows (``Predictor.one_pass``): one batched pass over it
    would give another answer.
    """
    held: list[Decoded] = []

    def flush() -> Iterator[tuple[Decoded, dict[str, float] | None]]:
        if len(held) == 1:
            clip = held[0]
            yield clip, (predictor.predict_heard(clip.waveform) if clip.heard
                         else predictor.predict((SAMPLE_RATE, clip.waveform)))
        elif held:
            heard = [c.waveform if c.heard else predictor.heard(c.waveform) for c in held]
            for clip, probs in zip(held, predict_same_length(predictor, heard)):
                yield clip, dict(zip(predictor.labels, probs.tolist()))
        held.clear()

    for clip in clips:
        if clip.waveform is None:
            yield clip, None
            continue
        alone = not predictor.one_pass(clip.waveform)
        if held and (alone or len(held) >= batch_size or len(clip.waveform) != len(held[0].waveform)):
            yield from flush()
        held.append(clip)
    yield from flush()


def adapted_stream(predictor: Any, clips: Iterable[Decoded]) -> Iterator[tuple[Decoded, dict[str, float] | None]]:
    """Speaker adaptation by folder: the clips of one folder are one voice (``Predictor.predict_group``).

    A folder's statistics need all its clips, so each folder is predicted once it has been decoded
    whole (``expand_paths`` lists a folder's files together); bad files are reported, not counted.
    """
    def flush(group: list[Decoded]) -> Iterator[tuple[Decoded, dict[str, float] | None]]:
        good = [clip for clip in group if clip.waveform is not None]
        heard = bool(good) and all(clip.heard for clip in good)
        answers = iter(predictor.predict_group([(SAMPLE_RATE, clip.waveform) for clip in good], heard=heard))
        for clip in group:
            yield clip, (next(answers) if clip.waveform is not None else None)

    group: list[Decoded] = []
    for clip in clips:
        if group and Path(clip.path).parent != Path(group[0].path).parent:
            yield from flush(group)
            group = []
        group.append(clip)
    if group:
        yield from flush(group)


class ResultWriter:
    """Appends one row per clip to CSV, JSON lines or Parquet, durable as it goes.

    CSV and JSON lines are flushed after every row. Parquet cannot be appended to once closed, so
    rows go to a JSON-lines journal beside it (``<out>.partial.jsonl``) and become the Parquet file
    when the run ends; a killed run leaves the journal, which ``--resume`` reads.
    """

    def __init__(self, out: Path, labels: list[str], *, resume: bool = False, extra: tuple[str, ...] = ()) -> None:
        """``extra`` names columns written between the path and the prediction (``--segments``: start, end)."""
        self.out, self.labels, self.resume, self.extra = out, labels, resume, extra
        self.format = output_format(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.path = journal_path(out) if self.format == "parquet" else out
        append = resume and self.path.is_file() and self.path.stat().st_size > 0
        if append:
            _drop_partial_last_line(self.path)
        self.handle = self.path.open("a" if append else "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.handle) if self.format == "csv" else None
        if self.csv is not None and not append:
            self.csv.writerow(["path", *extra, "prediction", *labels])

    def write(self, path: str, probs: dict[str, float], **extra: Any) -> None:
        """One row; ``extra`` holds a value for each of the writer's extra columns."""
        self.write_rows(path, [(probs, extra)])

    def write_rows(self, path: str, rows: list[tuple[dict[str, float], dict[str, Any]]]) -> None:
        """All rows of one file, flushed together: a killed run never leaves half a file's rows."""
        for probs, extra in rows:
            if set(extra) != set(self.extra):
                raise ValueError(f"expected the columns {self.extra}, got {tuple(extra)}")
            label = max(probs, key=probs.get)
            if self.csv is not None:
                self.csv.writerow([path, *(extra[name] for name in self.extra), label,
                                   *(f"{probs[name]:.6f}" for name in self.labels)])
            else:
                self.handle.write(json.dumps({"path": path, **extra, "label": label, "probs": probs}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
        if self.format == "parquet":
            rows = read_jsonl(self.path, self.out if self.resume else None, self.extra)
            write_parquet(rows, self.out, self.labels, self.extra)
            self.path.unlink()


def output_format(out: Path) -> str:
    suffix = out.suffix.lower().lstrip(".")
    if suffix in ("json", "jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("parquet", "pq"):
        return "parquet"
    return "csv"


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line: cut it so appended rows start on their own line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def read_jsonl(journal: Path, finished: Path | None = None, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (a finished Parquet file's rows come first when both exist)."""
    rows = []
    if finished is not None and finished.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(finished).to_pylist()
        fixed = ("path", "label", *extra)
        rows += [{**{k: r[k] for k in fixed}, "probs": {k: r[k] for k in r if k not in fixed}} for r in table]
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # the half-written last line of a killed run
    return rows


def write_parquet(rows: list[dict[str, Any]], out: Path, labels: list[str], extra: tuple[str, ...] = ()) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = {"path": [r["path"] for r in rows]}
    columns.update({name: [r[name] for r in rows] for name in extra})
    columns["label"] = [r["label"] for r in rows]
    for name in labels:
        columns[name] = [float(r["probs"][name]) for r in rows]
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, out)


def finished_paths(out: Path) -> set[str]:
    """Paths an earlier run already wrote to ``out`` (CSV, JSON lines or Parquet and its journal)."""
    fmt = output_format(out)
    if fmt == "parquet":
        return {row["path"] for row in read_jsonl(journal_path(out), out)}
    if not out.is_file():
        return set()
    if fmt == "jsonl":
        return {row["path"] for row in read_jsonl(out)}
    with out.open(newline="", encoding="utf-8") as handle:
        lines = handle.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # half-written last row
    return {row["path"] for row in csv.DictReader(lines) if row.get("path") and row.get("prediction")}
