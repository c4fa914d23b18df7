"""Where an annotation queue comes from: a folder, a CSV, a saved ``datasets`` dataset, or uploads.

Unlike ``ser.corpora`` (which needs a label for every clip, for training), a queue is mostly
unlabelled clips, so labels are optional here. Clips are decoded lazily, one at a time, so a big
folder never sits in memory and one broken file is reported without stopping the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.audio import load_audio
from ser.predict_cli import AUDIO_SUFFIXES


@dataclass
class SourceClip:
    """One clip to queue: ``decode()`` gives its 16 kHz waveform (or raises ``InvalidAudio``)."""

    name: str
    decode: Callable[[], np.ndarray]
    label: str | None = None
    speaker: str | None = None


def is_saved_dataset(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file())


def iter_source(source: str | Path) -> Iterator[SourceClip]:
    """The clips of a folder (searched recursively), a ``path,label,speaker`` CSV, a saved dataset,
    or a single audio file; raises ``ValueError`` when the source is none of these."""
    path = Path(source).expanduser()
    if is_saved_dataset(path):
        return _dataset_clips(path)
    if path.is_dir():
        return _folder_clips(path)
    if path.is_file() and path.suffix.lower() in {".csv", ".tsv"}:
        return _csv_clips(path)
    if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
        return iter([_file_clip(path)])
    raise ValueError(
        f"{source} is not a folder of audio, a CSV (path,label,speaker), a saved dataset "
        "(a save_to_disk folder) or an audio file"
    )


def iter_files(paths: list[str | Path]) -> Iterator[SourceClip]:
    """Uploaded files: audio files are queued, a CSV among them is read as a table."""
    for path in map(Path, paths):
        if path.suffix.lower() in {".csv", ".tsv"}:
            yield from _csv_clips(path)
        else:
            yield _file_clip(path)


def _file_clip(path: Path, label: str | None = None, speaker: str | None = None) -> SourceClip:
    return SourceClip(name=path.name, decode=lambda: load_audio(path), label=label, speaker=speaker)


def _folder_clips(folder: Path) -> Iterator[SourceClip]:
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        yield _file_clip(path)


def _csv_clips(table: Path) -> Iterator[SourceClip]:
    """The table layout of ``ser.corpora``, with the label column optional."""
    from ser.corpora import (
        read_clip_table,  # datasets loads only when a table is queued
    )

    rows = list(read_clip_table(table, label_required=False))  # a bad header fails before any clip queues
    for path, label, speaker in rows:
        yield _file_clip(path, label or None, speaker or None)


def _dataset_clips(folder: Path) -> Iterator[SourceClip]:
    """A ``save_to_disk`` folder (its first split if it holds several) with an ``audio`` column."""
    import datasets

    from ser.corpora import waveform

    dataset = datasets.load_from_disk(str(folder))
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[next(iter(dataset))]
    if "audio" not in dataset.column_names:
        raise ValueError(f"the dataset in {folder} has no 'audio' column (columns: {', '.join(dataset.column_names)})")
    if isinstance(dataset.features["audio"], datasets.Audio):
        dataset = dataset.cast_column("audio", datasets.Audio(decode=False))  # decode ourselves: no torchcodec
    label_feature = dataset.features.get("label")
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    for index, row in enumerate(dataset):
        label = row.get("label")
        if names is not None and label is not None:
            label = names[label]
        audio = row["audio"]
        name = Path(audio.get("path") or f"{folder.name}-{index}").name if isinstance(audio, dict) else f"{folder.name}-{index}"
        yield SourceClip(
            name=name,
            decode=lambda row=row: waveform(row),
            label=None if label is None else str(label),
            speaker=None if row.get("speaker") is None else str(row["speaker"]),
        )
