"""Where an annotation queue comes from: a folder, a CSV, a saved ``datasets`` dataset, or uploads.

Unlike ``ser.corpora`` (which needs a label for every clip, for training), a queue is mostly
unlabelled clips, so labels are optional here. Clips are decoded lazily, one at a time, so a big
folder never sits in memory and one broken file is reported without stopping the rest.

Every server path, whether typed, found in a folder, listed in a table or stored in a dataset,
goes through ``DataRoots.check`` (``ser.ui.sandbox``), and a table's contents are never echoed
back: a CSV a visitor points at could be any text file on the server.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.predict_cli import AUDIO_SUFFIXES
from ser.ui.sandbox import NO_ROOTS, DataRoots, PathRefused

TABLE_SUFFIXES = {".csv", ".tsv"}
BAD_TABLE = ("the table could not be read as clips: it must be a UTF-8 CSV/TSV whose first row names "
             "the columns, with a 'path' column (path,label,speaker)")

Decoder = Callable[[Any], np.ndarray]  # path or bytes -> 16 kHz mono waveform (raises InvalidAudio)


class UnusableSource(ValueError):
    """A queue source (or one of its rows) that holds no clips the app can read; the message says why
    and never quotes a table's contents."""


@dataclass
class SourceClip:
    """One clip to queue: ``decode()`` gives its 16 kHz waveform (or raises ``InvalidAudio``)."""

    name: str
    decode: Callable[[], np.ndarray]
    label: str | None = None
    speaker: str | None = None
    from_table: bool = False  # label and speaker came from a table's cells (never echo them back)


def is_saved_dataset(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file())


def iter_source(source: str, roots: DataRoots, decode: Decoder) -> Iterator[SourceClip]:
    """The clips of a server folder (searched recursively), a ``path,label,speaker`` CSV, a saved
    dataset or a single audio file, all inside ``roots``; raises ``PathRefused`` outside them and
    ``UnusableSource`` when the source is none of these."""
    path = roots.check(source.strip())
    if is_saved_dataset(path):
        return _dataset_clips(path, roots, decode)
    if path.is_dir():
        return _folder_clips(path, roots, decode)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return _table_clips(path, roots, decode, {})
    if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
        return iter([_file_clip(path, decode)])
    raise UnusableSource("this server path is not a folder of audio, a CSV (path,label,speaker), a saved dataset "
                     "(a save_to_disk folder) or an audio file")


def iter_files(paths: list[str | Path], roots: DataRoots, decode: Decoder) -> Iterator[SourceClip]:
    """Uploaded files: audio files are queued; a CSV among them is read as a table whose rows name
    uploaded files (by file name) or, for admins, files under the data roots."""
    uploads = [Path(p) for p in paths]
    audio = {p.name: p for p in uploads if p.suffix.lower() not in TABLE_SUFFIXES}
    listed: set[str] = set()
    for table in (p for p in uploads if p.suffix.lower() in TABLE_SUFFIXES):
        yield from _table_clips(table, roots, decode, audio, listed)
    for name, path in audio.items():
        if name not in listed:
            yield _file_clip(path, decode)


def _file_clip(path: Path, decode: Decoder, label: str | None = None, speaker: str | None = None,
               name: str | None = None, from_table: bool = False) -> SourceClip:
    return SourceClip(name=name or path.name, decode=lambda: decode(path), label=label, speaker=speaker,
                      from_table=from_table)


def _refused(name: str) -> SourceClip:
    def decode() -> np.ndarray:
        raise PathRefused()

    return SourceClip(name=name, decode=decode, from_table=True)


def _folder_clips(folder: Path, roots: DataRoots, decode: Decoder) -> Iterator[SourceClip]:
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        try:
            real = roots.check(path)  # a symlink inside the folder may point anywhere
        except PathRefused:
            continue
        if real.is_file():
            yield _file_clip(real, decode, name=path.name)


def _table_clips(table: Path, roots: DataRoots, decode: Decoder, uploads: dict[str, Path],
                 listed: set[str] | None = None) -> Iterator[SourceClip]:
    """The table layout of ``ser.corpora``, label optional. Rows name an uploaded file (by name) or
    a server file that must pass ``roots``; a bad header or encoding fails with one fixed message."""
    from ser.corpora import CorpusError, read_clip_table  # datasets loads only when a table is queued

    try:
        rows = list(read_clip_table(table, label_required=False))  # a bad header fails before any clip queues
    except (CorpusError, UnicodeDecodeError, csv.Error, OSError):
        raise UnusableSource(BAD_TABLE) from None
    for number, (path, label, speaker) in enumerate(rows, start=2):  # row 1 is the header
        row = f"row {number}"
        if path.name in uploads and path.parent == table.parent:
            if listed is not None:
                listed.add(path.name)
            yield _file_clip(uploads[path.name], decode, label or None, speaker or None, f"{row} ({path.name})", True)
            continue
        try:
            real = roots.check(path, base=table.parent)
        except PathRefused:
            yield _refused(row)
            continue
        yield _file_clip(real, decode, label or None, speaker or None, f"{row} ({real.name})", True)


def _dataset_clips(folder: Path, roots: DataRoots, decode: Decoder) -> Iterator[SourceClip]:
    """A ``save_to_disk`` folder (its first split if it holds several) with an ``audio`` column;
    audio stored as a path must pass ``roots`` like any other server path."""
    import datasets

    try:
        dataset = datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as error:  # a damaged or half-copied save_to_disk folder
        raise UnusableSource(f"the saved dataset could not be read: {error}") from error
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[next(iter(dataset))]
    if "audio" not in dataset.column_names:
        raise UnusableSource("the saved dataset has no 'audio' column")
    if isinstance(dataset.features["audio"], datasets.Audio):
        dataset = dataset.cast_column("audio", datasets.Audio(decode=False))  # decode ourselves: no torchcodec
    label_feature = dataset.features.get("label")
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    for index, row in enumerate(dataset):
        label = row.get("label")
        if names is not None and label is not None:
            label = names[label]
        audio = row["audio"] if isinstance(row["audio"], dict) else {}
        name = f"{folder.name}-{index}"
        if audio.get("bytes"):
            data = bytes(audio["bytes"])
            clip_decode = lambda data=data: decode(data)  # noqa: E731
        elif audio.get("path"):
            try:
                real = roots.check(audio["path"], base=folder)
            except PathRefused:
                yield _refused(name)
                continue
            clip_decode = lambda real=real: decode(real)  # noqa: E731
        else:
            yield SourceClip(name=name, decode=_no_audio)
            continue
        yield SourceClip(
            name=name,
            decode=clip_decode,
            label=None if label is None else str(label),
            speaker=None if row.get("speaker") is None else str(row["speaker"]),
        )


def _no_audio() -> np.ndarray:
    raise UnusableSource("the row has neither audio bytes nor a path")


__all__ = ["NO_ROOTS", "DataRoots", "SourceClip", "UnusableSource", "iter_files", "iter_source", "is_saved_dataset"]
