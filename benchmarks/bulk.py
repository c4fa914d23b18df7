"""Bulk prediction against the model's own rate, measured in the same run on the same clips.

* model only: clips decoded beforehand, ``Predictor.predict`` on each waveform (features + model);
* bulk: ``ser predict DIR``'s path (``ser.bulk``): decode workers ahead of the model, results
  written to a Parquet file as they come;
* sequential: decode then predict in one process, one clip after the other (the old path).

Rounds alternate (model only, bulk, sequential, ...) so load on a shared machine hits all three
alike; the table reports medians and the bulk / model-only ratio (target >= 0.9). By default the
clips are EmoDB's 535 recordings re-encoded as 44.1 kHz FLAC in a temporary folder (field
recordings are rarely 16 kHz; ``--native`` keeps the 16 kHz WAVs).

    python benchmarks/bulk.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
EMODB = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data")) / "emodb" / "wav"

from ser.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ser.bulk import ResultWriter, batching_is_exact, decoded_stream, predict_stream  # noqa: E402
from ser.model import Predictor  # noqa: E402


def reencode(sources: list[Path], folder: Path, rate: int) -> list[Path]:
    """The clips at ``rate`` Hz as FLAC, so decoding includes the resampling field recordings need."""
    import soundfile as sf
    import soxr

    out = []
    for path in sources:
        waveform = load_audio(path)
        target = folder / (path.stem + ".flac")
        sf.write(target, soxr.resample(waveform, SAMPLE_RATE, rate), rate, subtype="PCM_16")
        out.append(target)
    return out


def model_only(predictor: Predictor, waveforms: list) -> float:
    start = time.perf_counter()
    for waveform in waveforms:
        predictor.predict((SAMPLE_RATE, waveform))
    return len(waveforms) / (time.perf_counter() - start)


def bulk(predictor: Predictor, paths: list[Path], workers: int, batch_size: int, out: Path) -> float:
    start = time.perf_counter()
    writer = ResultWriter(out, predictor.labels)
    n = 0
    for clip, probs in predict_stream(predictor, decoded_stream(paths, workers), batch_size):
        if probs is not None:
            writer.write(clip.path, probs)
            n += 1
    writer.close()
    return n / (time.perf_counter() - start)


def sequential(predictor: Predictor, paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        predictor.predict(path)
    return len(paths) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N clips only")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rate", type=int, default=44100, help="re-encode the clips at this rate (FLAC)")
    parser.add_argument("--native", action="store_true", help="use the 16 kHz WAVs as they are")
    args = parser.parse_args()
    if not EMODB.is_dir():
        print(f"EmoDB not found at {EMODB}; set SER_SHARED_DATA", file=sys.stderr)
        return 2
    sources = sorted(EMODB.glob("*.wav"))[: args.limit]
    predictor = Predictor.from_pretrained(None)
    exact = batching_is_exact(predictor)
    with tempfile.TemporaryDirectory() as tmp:
        paths = sources if args.native else reencode(sources, Path(tmp), args.rate)
        waveforms = [load_audio(path) for path in paths]
        seconds = sum(len(w) for w in waveforms) / SAMPLE_RATE
        predictor.predict((SAMPLE_RATE, waveforms[0]))  # warm-up
        rates: dict[str, list[float]] = {"model_only": [], "bulk": [], "sequential": []}
        for round_ in range(args.rounds):
            rates["model_only"].append(model_only(predictor, waveforms))
            rates["bulk"].append(bulk(predictor, paths, args.workers, args.batch_size, Path(tmp) / f"out{round_}.parquet"))
            rates["sequential"].append(sequential(predictor, paths))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} clips/s" for k, v in rates.items()), flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratios = [b / m for b, m in zip(rates["bulk"], rates["model_only"])]
    result = {
        "clips": len(paths),
        "audio_seconds": round(seconds, 1),
        "source": "EmoDB wav" if args.native else f"EmoDB re-encoded as {args.rate} Hz FLAC",
        "model": predictor.name,
        "runtime": predictor.runtime,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batching_exact": exact,
        "rates_clips_per_s": {name: [round(v, 2) for v in values] for name, values in rates.items()},
        "median_clips_per_s": {name: round(v, 2) for name, v in medians.items()},
        "bulk_over_model_only": round(statistics.median(ratios), 3),
        "bulk_over_model_only_per_round": [round(r, 3) for r in ratios],
        "target": 0.9,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bulk.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Bulk prediction: {result['clips']} clips ({result['source']}, {seconds / 60:.1f} min of audio)",
        "",
        f"Model {result['model']}, runtime {result['runtime']}, {args.workers} decode worker(s), "
        f"batch size {args.batch_size} (batching exact for this model: {exact}); {args.rounds} alternating rounds, "
        f"{result['cpus']} CPUs, load {result['load_average_1min']}.",
        "",
        "| path | clips/s (median) | per round |",
        "|---|---:|---|",
    ]
    for name in rates:
        lines.append(f"| {name} | {medians[name]:.1f} | {', '.join(f'{v:.1f}' for v in rates[name])} |")
    lines += [
        "",
        f"**bulk / model only: {result['bulk_over_model_only']:.2f}** (target >= 0.9; per round "
        f"{', '.join(f'{r:.2f}' for r in ratios)}).",
        "",
        "Written by `python benchmarks/bulk.py`.",
    ]
    (RESULTS / "bulk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
