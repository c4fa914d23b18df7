"""``python -m finetune describe``: what a corpus holds before anyone trains on it.

Counts per class and per speaker and the duration spread, as Markdown tables, so class imbalance
and thin speakers (EmoDB speaker 08 has no disgust clip) are seen before they skew a result.
Durations come from the file headers (``soundfile.info``), not from decoding, so this is fast.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile as sf
from datasets import Dataset
from tqdm.auto import tqdm

from ser.corpora import CORPORA, LABEL_MAPS, CorpusError, CorpusReport, label_names, read_corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, choices=CORPORA, help="corpus layout")
    parser.add_argument(
        "--root", required=True, help="corpus folder; the CSV/TSV file for csv; a dataset id or folder for hub"
    )
    parser.add_argument("--label-map", choices=["none", *LABEL_MAPS], default="none", help="merge or drop classes")
    parser.add_argument("--include-song", action="store_true", help="ravdess: keep the sung clips too")
    parser.add_argument("--split", default="train", help="hub: which split")
    parser.add_argument("--audio-column", default="audio", help="hub: audio column")
    parser.add_argument("--label-column", default="label", help="hub/csv: label column")
    parser.add_argument("--speaker-column", default="speaker", help="hub/csv: speaker column")


def run(args: argparse.Namespace) -> int:
    options = _adapter_options(args)
    label_map = None if args.label_map == "none" else args.label_map
    try:
        dataset, report = read_corpus(args.corpus, args.root, label_map=label_map, **options)
    except (CorpusError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(describe(dataset, report))
    return 0


def describe(dataset: Dataset, report: CorpusReport) -> str:
    """The whole description as Markdown."""
    names = label_names(dataset)
    labels = [names[i] for i in dataset["label"]]
    speakers = list(dataset["speaker"])
    durations, unreadable = clip_durations(dataset)
    sections = [
        f"# {report.corpus}: {len(dataset)} clips, {len(set(speakers))} speakers, {len(names)} classes",
        f"Source: `{report.root}`",
        class_table(labels, names, durations),
        speaker_table(speakers, labels, names),
        duration_table(durations),
    ]
    problems = report.summary() if (report.problems or report.skipped) else "none"
    if unreadable:
        problems += f"; {len(unreadable)} files whose header soundfile cannot read (e.g. {unreadable[0]})"
    sections.append(f"## Left out\n\n{problems}")
    return "\n\n".join(sections) + "\n"


def clip_durations(dataset: Dataset) -> tuple[np.ndarray, list[str]]:
    """Seconds per clip from the audio headers (NaN where unreadable), and the unreadable paths."""
    durations, unreadable = [], []
    for audio in tqdm(dataset["audio"], desc="reading headers", unit="clip", disable=None):
        try:
            durations.append(_duration(audio))
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            durations.append(float("nan"))
            unreadable.append(f"{audio.get('path')}: {error}")
    return np.asarray(durations, dtype=float), unreadable


def class_table(labels: list[str], names: list[str], durations: np.ndarray) -> str:
    counts = Counter(labels)
    seconds = Counter()
    for label, duration in zip(labels, durations):
        seconds[label] += 0.0 if np.isnan(duration) else duration
    rows = ["## Classes", "", "| class | clips | share | minutes |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        rows.append(f"| {name} | {counts[name]} | {counts[name] / len(labels):.1%} | {seconds[name] / 60:.1f} |")
    return "\n".join(rows)


def speaker_table(speakers: list[str], labels: list[str], names: list[str]) -> str:
    """Clips per speaker and class: a zero shows a class a LOSO fold will never test."""
    by_speaker: dict[str, Counter[str]] = {}
    for speaker, label in zip(speakers, labels):
        by_speaker.setdefault(speaker, Counter())[label] += 1
    rows = [
        "## Speakers",
        "",
        "| speaker | clips | " + " | ".join(names) + " |",
        "| --- | ---: |" + " ---: |" * len(names),
    ]
    for speaker in sorted(by_speaker):
        counts = by_speaker[speaker]
        rows.append(
            f"| {speaker} | {sum(counts.values())} | " + " | ".join(str(counts[name]) for name in names) + " |"
        )
    return "\n".join(rows)


def duration_table(durations: np.ndarray) -> str:
    known = durations[~np.isnan(durations)]
    if not len(known):
        return "## Durations\n\nno readable clip"
    return "\n".join(
        [
            "## Durations (seconds)",
            "",
            "| min | mean | max | total |",
            "| ---: | ---: | ---: | ---: |",
            f"| {known.min():.3f} | {known.mean():.3f} | {known.max():.3f} "
            f"| {known.sum():.1f} ({known.sum() / 60:.1f} min) |",
        ]
    )


def _duration(audio: Mapping[str, Any]) -> float:
    source = io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio["path"]
    return float(sf.info(source).duration)


def _adapter_options(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options the chosen adapter takes."""
    if args.corpus == "ravdess":
        return {"include_song": args.include_song}
    if args.corpus == "csv":
        return {"label_column": args.label_column, "speaker_column": args.speaker_column}
    if args.corpus == "hub":
        return {
            "split": args.split,
            "audio_column": args.audio_column,
            "label_column": args.label_column,
            "speaker_column": args.speaker_column,
        }
    return {}
