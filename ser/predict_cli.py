"""``python -m ser predict PATH...``: emotions for files and folders, as a table, CSV, JSON lines or Parquet.

A folder of field recordings always holds a few broken files; they are reported and skipped so
one bad clip never costs the results of the others, and the exit code says something went wrong.
Folders go through ``ser.bulk`` (decoding in worker processes while the model runs, results
written as they come, ``--resume``); ``--engine ray`` sends them to a Ray cluster (``ser.ray_engine``).
Heavy imports happen inside ``run``, after the arguments are parsed, so errors and ``--help`` are quick.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

# Trimming to the speech is off unless asked: on EmoDB it lowered UAR (0.953 to 0.939) and made a clip 1.24x slower,
# the VAD costing more than the little silence it removes (benchmarks/results/vad.md).
VAD_DEFAULT = False
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".aiff", ".aif"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    parser.add_argument("--model", default=None, help="checkpoint dir or hub id (default: the embedded model)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the results to this CSV file")
    parser.add_argument("--out", type=Path, default=None,
                        help="write results here as they come: .csv, .jsonl or .parquet (by the suffix)")
    parser.add_argument("--resume", action="store_true",
                        help="skip files already in --out/--csv (a killed run goes on where it stopped)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode processes running ahead of the model (default: 1 per 2 cores for 16+ files)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="run clips of equal length together, when the model answers the same batched")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with clips/s on stderr (default: when stderr is a terminal)")
    parser.add_argument("--adapt-by", choices=["folder"], default=None,
                        help="speaker adaptation: the clips of a folder are one voice, each judged against the others "
                             "(models with a speaker-adapted head, such as the default; 3 clips or more per folder)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local (this machine) or ray (a Ray cluster, see --address; writes Parquet)")
    parser.add_argument("--address", default=None, help="Ray cluster address for --engine ray (default: start a local one)")
    parser.add_argument(
        "--runtime",
        choices=["auto", "eager", "onnx", "onnx-int8", "openvino"],
        default=None,
        help="inference runtime (default auto: the fastest that matches eager PyTorch; eager opts out)",
    )
    add_speech_arguments(parser)


def add_speech_arguments(parser: argparse.ArgumentParser) -> None:
    """Speech detection and denoising (``ser.speech``, ``ser.denoise``)."""
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=VAD_DEFAULT,
                        help="find the speech first (Silero VAD): refuse clips with none, trim leading and trailing "
                             f"silence (default {'on' if VAD_DEFAULT else 'off'}: see benchmarks/results/vad.md)")
    parser.add_argument("--denoise", nargs="?", const="spectral", default=None, choices=["spectral", "dfn3"],
                        help="suppress noise before the model: spectral gating (the default method) or DeepFilterNet3")
    parser.add_argument("--segments", action="store_true",
                        help="one row per utterance (speech between pauses of 0.8 s or more): start, end, label, probabilities")


def run(args: argparse.Namespace) -> int:
    files = list(expand_paths(args.paths))
    if not files:
        print("error: no audio files found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2
    out = args.out or args.csv
    if args.resume and out is None:
        print("error: --resume needs --out or --csv (the file that holds the finished clips)", file=sys.stderr)
        return 2
    if args.engine == "ray":
        from ser.ray_engine import run_cli

        return run_cli(args, files, out)
    # Keep stderr for errors a script can parse: transformers' loading bars follow this at import
    # (set here rather than importing transformers, which the exported serving path never needs).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    from ser.bulk import ResultWriter, adapted_stream, batching_is_exact, decoded_stream, finished_paths, predict_stream
    from ser.model import ModelLoadError, Predictor

    done = finished_paths(out) if args.resume else set()
    todo = [path for path in files if str(path) not in done]
    try:
        predictor = Predictor.from_pretrained(args.model, runtime=args.runtime)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "segments", False):
        return run_segments(predictor, todo, args, out)
    workers = args.workers if args.workers is not None else default_workers(len(todo))
    batch_size = args.batch_size if args.batch_size > 1 and batching_is_exact(predictor) else 1
    writer = ResultWriter(out, predictor.labels, resume=args.resume) if out is not None else None
    results, failures = [], []
    progress = _progress_bar(len(todo), args.progress)
    try:
        decoded = decoded_stream(todo, workers)
        if getattr(args, "vad", False) or getattr(args, "denoise", None):
            decoded = prepared_stream(decoded, predictor, vad=args.vad, denoise=args.denoise)
        if args.adapt_by and not predictor.adapts_to_speakers:
            progress.write(f"note: {predictor.name} has no speaker-adapted head; --adapt-by is ignored", file=sys.stderr)
        stream = (adapted_stream(predictor, decoded) if args.adapt_by and predictor.adapts_to_speakers
                  else predict_stream(predictor, decoded, batch_size))
        for clip, probs in stream:
            progress.update(1)
            if probs is None:
                failures.append((clip.path, clip.error))
                progress.write(f"error: {clip.path}: {clip.error}", file=sys.stderr)
                continue
            results.append((Path(clip.path), probs))
            if writer is not None:
                writer.write(clip.path, probs)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    if args.json:
        for path, probs in results:
            print(json.dumps({"path": str(path), "label": max(probs, key=probs.get), "probs": probs}))
    else:
        print(markdown_table(results, predictor.labels))
    if done:
        print(f"resumed: {len(files) - len(todo)} of {len(files)} files were already in {out}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(todo)} files could not be read.", file=sys.stderr)
        return 1
    return 0


def prepared_stream(decoded: Any, predictor: Any, *, vad: bool, denoise: str | None) -> Any:
    """Decoded clips as the model must hear them (``Predictor.heard``: a model trained on denoised audio
    gets its own method whatever ``--denoise`` says), with ``vad`` checked for speech and trimmed to it;
    a clip with no speech, or trimmed too short to judge, becomes an error."""
    from ser.audio import InvalidAudio, check_judgeable
    from ser.speech import prepare

    for clip in decoded:
        if clip.waveform is not None:
            try:
                waveform = predictor.heard(clip.waveform, denoise)
                clip.waveform = check_judgeable(prepare(waveform, trim=True) if vad else waveform)
                clip.heard = True
            except InvalidAudio as error:
                clip.waveform, clip.error = None, str(error)
        yield clip


def run_segments(predictor: Any, files: list[Path], args: argparse.Namespace, out: Path | None = None) -> int:
    """``--segments``: a row per utterance of every file (start and end in seconds), printed and,
    with ``--out``/``--csv``, written there (a file's rows together, so ``--resume`` skips whole files)."""
    from ser.bulk import ResultWriter

    labels, failures = predictor.labels, 0
    writer = ResultWriter(out, labels, resume=args.resume, extra=("start", "end")) if out is not None else None
    if not args.json:
        print("| file | start | end | prediction | " + " | ".join(labels) + " |")
        print("|---|---:|---:|---|" + "---:|" * len(labels))
    try:
        for path in files:
            failures += _print_segments(predictor, path, args, writer)
    finally:
        if writer is not None:
            writer.close()
    return 1 if failures else 0


def _print_segments(predictor: Any, path: Path, args: argparse.Namespace, writer: Any) -> int:
    """One file's utterance rows, printed and written; 1 when the file failed, else 0."""
    from ser.audio import InvalidAudio
    from ser.speech import NoSpeech

    labels = predictor.labels
    try:
        rows = predictor.utterances(path, denoise=args.denoise)
    except (InvalidAudio, OSError) as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        return 1
    if not rows:
        print(f"error: {path}: {NoSpeech()}", file=sys.stderr)
        return 1
    if writer is not None:
        writer.write_rows(str(path), [(row["probs"], {"start": round(row["start"], 3), "end": round(row["end"], 3)})
                                      for row in rows])
    for row in rows:
        probs = row["probs"]
        top = max(probs, key=probs.get)
        if args.json:
            print(json.dumps({"path": str(path), "start": round(row["start"], 3), "end": round(row["end"], 3),
                              "label": top, "probs": probs}))
        else:
            print(f"| {path} | {row['start']:.2f} | {row['end']:.2f} | {top} | "
                  + " | ".join(f"{probs[label]:.3f}" for label in labels) + " |")
    return 0


def default_workers(n_files: int) -> int:
    """No worker processes for a few files (starting them costs more than decoding); else 1 per 2 cores."""
    if n_files < 16:
        return 0
    return max(1, (os.cpu_count() or 2) // 2)


def _progress_bar(total: int, wanted: bool | None) -> Any:
    from tqdm import tqdm

    # disable=None: on when stderr is a terminal, so scripts parsing stderr only see errors.
    return tqdm(total=total, unit="clip", smoothing=0.1, dynamic_ncols=True, disable=None if wanted is None else not wanted)


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
