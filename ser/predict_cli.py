"""``python -m ser predict PATH...``: emotions for files and folders, as a table, CSV or JSON.

A folder of field recordings always holds a few broken files; they are reported and skipped so
one bad clip never costs the results of the others, and the exit code says something went wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ser.audio import InvalidAudio

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".aiff", ".aif"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    parser.add_argument("--model", default=None, help="checkpoint dir or hub id (default: the embedded model)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the results to this CSV file")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument(
        "--runtime",
        choices=["auto", "eager", "onnx", "onnx-int8", "openvino"],
        default=None,
        help="inference runtime (default auto: the fastest that matches eager PyTorch; eager opts out)",
    )


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from ser.model import ModelLoadError, Predictor

    transformers_logging.disable_progress_bar()  # keep stderr for errors a script can parse
    files = list(expand_paths(args.paths))
    if not files:
        print("error: no audio files found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, failures = [], []
    for path in files:
        try:
            results.append((path, predictor.predict(path)))
        except InvalidAudio as error:
            failures.append((path, str(error)))
            print(f"error: {path}: {error}", file=sys.stderr)
    if args.json:
        for path, probs in results:
            print(json.dumps({"path": str(path), "label": max(probs, key=probs.get), "probs": probs}))
    else:
        print(markdown_table(results, predictor.labels))
    if args.csv:
        write_csv(args.csv, results, predictor.labels)
    if failures:
        print(f"{len(failures)} of {len(files)} files could not be read.", file=sys.stderr)
        return 1
    return 0


def expand_paths(paths: list[Path]):
    """Files as given, and audio files found under folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            yield path


def markdown_table(results: list[tuple[Path, dict[str, float]]], labels: list[str]) -> str:
    header = "| file | prediction | " + " | ".join(labels) + " |"
    rule = "|---|---|" + "---:|" * len(labels)
    rows = [
        f"| {path} | {max(probs, key=probs.get)} | " + " | ".join(f"{probs[label]:.3f}" for label in labels) + " |"
        for path, probs in results
    ]
    return "\n".join([header, rule, *rows])


def write_csv(out: Path, results: list[tuple[Path, dict[str, float]]], labels: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prediction", *labels])
        for path, probs in results:
            writer.writerow([str(path), max(probs, key=probs.get), *(f"{probs[label]:.6f}" for label in labels)])
