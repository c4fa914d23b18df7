"""Which denoiser (``ser.denoise``) cleans speech better, and at what cost: SI-SDR gain and real-time factor.

The repository's own example clips (examples/nemo, real speech) mixed with white, pink and
babble noise (the other example clips summed) at ``--snr`` dB, the recipe of
benchmarks/robustness.py. Reported per method and noise: SI-SDR improvement in dB (scale-invariant
signal-to-distortion ratio of the output minus that of the noisy input) and seconds of processing
per second of audio.

    python benchmarks/denoise.py --clips 6 --snr 5

Writes benchmarks/results/denoise.{json,md}. Needs no corpus.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import robustness as rb  # noqa: E402
from ser.audio import load_audio  # noqa: E402
from ser.denoise import METHODS, denoise  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
NOISES = ("white", "pink", "babble")


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB: how much of ``estimate`` is a scaled copy of ``reference``."""
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    target = reference * (estimate @ reference) / (reference @ reference + 1e-12)
    return float(10 * np.log10((target @ target + 1e-12) / ((estimate - target) @ (estimate - target) + 1e-12)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    paths = sorted((REPO / "examples" / "nemo").glob("*/*.flac"))
    clips = [load_audio(p) for p in paths]
    chosen = list(range(0, len(clips), max(1, len(clips) // args.clips)))[: args.clips]
    for method in METHODS:  # load each model before timing
        denoise(clips[0][:16000], method)
    rows: dict[str, dict[str, dict[str, float]]] = {m: {} for m in METHODS}
    for n, noise in enumerate(NOISES):
        gains: dict[str, list[float]] = {m: [] for m in METHODS}
        spent = dict.fromkeys(METHODS, 0.0)
        audio_s = 0.0
        for i in chosen:
            others = [c for j, c in enumerate(clips) if paths[j].parent != paths[i].parent]
            noisy = rb.corrupt(clips[i], f"{noise} {args.snr:g}", others, seed=1000 * n + i)
            before = si_sdr(clips[i], noisy)
            audio_s += len(noisy) / rb.RATE
            for method in METHODS:
                t0 = time.perf_counter()
                out = denoise(noisy, method)
                spent[method] += time.perf_counter() - t0
                gains[method].append(si_sdr(clips[i], out) - before)
        for method in METHODS:
            rows[method][noise] = {"si_sdr_gain_db": float(np.mean(gains[method])), "real_time_factor": spent[method] / audio_s}
    return {"clips": len(chosen), "snr_db": args.snr, "results": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Denoisers: SI-SDR improvement (dB) at {result['snr_db']:g} dB SNR, {result['clips']} example clips",
        "",
        "Real speech from examples/nemo plus synthetic noise (babble: other example speakers summed). "
        "Seconds of processing per second of audio in brackets (one process on a loaded 2-core machine). "
        "Regenerate: `python benchmarks/denoise.py`.",
        "",
        "| method | " + " | ".join(NOISES) + " |",
        "|---|" + "---:|" * len(NOISES),
    ]
    for method, row in result["results"].items():
        lines.append(f"| {method} | " + " | ".join(
            f"{row[n]['si_sdr_gain_db']:+.1f} ({row[n]['real_time_factor']:.3f})" for n in NOISES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--snr", type=float, default=5.0)
    parser.add_argument("--out", default=str(RESULTS / "denoise"), help="output path without suffix")
    args = parser.parse_args(argv)
    result = run(args)
    rb.write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
