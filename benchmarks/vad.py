"""What trimming each clip to its speech (Silero VAD, ``ser.speech``) does to accuracy and latency.

EmoDB 4 classes, leave-one-speaker-out over a speaker-stratified subset of ``--clips`` clips, with
the default model's probe recipe (see benchmarks/robustness.py: frozen whisper-base-offline
features, linear L-BFGS head, the plain single-clip head). UAR of: the head trained on whole
clips tested on whole clips; the same head tested on trimmed clips (what ``--vad`` changes for the
shipped model); a head trained and tested on trimmed clips. Latency: the default model's
``Predictor.predict`` on ``--latency-clips`` clips, whole vs trimmed (the VAD's own time included),
interleaved in the same run so machine load hits both alike.

    python benchmarks/vad.py --root /path/to/emodb --clips 100

Writes benchmarks/results/vad.{json,md}. Whole-clip features come from the probe's cache
(``finetune.cache``); only clips that trimming changes are encoded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import robustness as rb  # noqa: E402
from finetune import probe as fp  # noqa: E402
from finetune.cache import encode_clip  # noqa: E402
from ser import speech  # noqa: E402
from ser.corpora import load_corpus, waveform  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def run(args: argparse.Namespace) -> dict[str, Any]:
    full = load_corpus("emodb", args.root, label_map="four-class")
    options = fp.options_from({**rb.RECIPE, "backbone": args.backbone, "cache_dir": args.cache_dir})
    subset = rb.stratified_subset(full, args.clips, args.seed)
    dataset = full.select(subset.tolist())
    whole = fp.load_features(dataset, options).means  # whole clips, from the cache where it has them
    whole_waves = [waveform(row) for row in dataset.select_columns(["audio", "path"])]
    trimmed_waves = [speech.trim_to_speech(w, speech.speech_regions(w) or [speech.Region(0, len(w) / rb.RATE)])
                     for w in whole_waves]
    changed = [i for i, (a, b) in enumerate(zip(whole_waves, trimmed_waves)) if len(a) != len(b)]
    trimmed = whole.clone()
    probe = fp.encoder_probe(options.backbone)
    started = time.perf_counter()
    for i in changed:
        trimmed[i] = torch.from_numpy(encode_clip(probe, trimmed_waves[i]).mean(axis=0))
    print(f"encoded {len(changed)} trimmed clips in {time.perf_counter() - started:.1f} s", flush=True)
    sets = {("whole", "whole"): whole, ("whole", "trimmed"): trimmed, ("trimmed", "trimmed"): trimmed}
    preds = rb.loso_predictions(dataset, {"whole": [whole], "trimmed": [trimmed]}, sets, options)
    y = np.asarray(dataset["label"])
    seconds_whole = sum(len(w) for w in whole_waves) / rb.RATE
    seconds_trimmed = sum(len(w) for w in trimmed_waves) / rb.RATE
    return {
        "clips": len(subset),
        "clips_changed_by_trimming": len(changed),
        "audio_kept": seconds_trimmed / seconds_whole,
        "uar": {f"trained {a}, tested {b}": rb.uar(y, p) for (a, b), p in preds.items()},
        "latency": latency(whole_waves[: args.latency_clips], args.repeats),
        "recipe": {**rb.RECIPE, "backbone": args.backbone},
    }


def latency(waves: list[np.ndarray], repeats: int) -> dict[str, Any]:
    """Median seconds per clip of the default model, whole vs VAD + trimmed, interleaved clip by clip."""
    from ser.model import Predictor

    predictor = Predictor.from_pretrained()
    predictor.predict(waves[0])
    speech.speech_regions(waves[0])  # load both models before timing
    whole, trimmed, ratios = [], [], []
    for wave in waves:
        a, b = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.predict(wave)
            t1 = time.perf_counter()
            predictor.predict(speech.prepare(wave, trim=True))
            t2 = time.perf_counter()
            a.append(t1 - t0)
            b.append(t2 - t1)
        whole.append(min(a))
        trimmed.append(min(b))
        ratios.append(min(b) / min(a))
    return {
        "clips": len(waves),
        "runtime": predictor.runtime,
        "median_s_whole": statistics.median(whole),
        "median_s_trimmed": statistics.median(trimmed),
        "median_ratio_trimmed_to_whole": statistics.median(ratios),
    }


def markdown(result: dict[str, Any]) -> str:
    lat = result["latency"]
    lines = [
        f"# Trimming to speech (Silero VAD): EmoDB 4-class UAR, leave-one-speaker-out, {result['clips']} clips",
        "",
        "The default model's probe recipe (whisper-base-offline, linear head, single-clip head). "
        f"Trimming changed {result['clips_changed_by_trimming']} of {result['clips']} clips and kept "
        f"{100 * result['audio_kept']:.1f}% of the audio. Regenerate: `python benchmarks/vad.py --root DIR --clips N`.",
        "",
        "| head | UAR |",
        "|---|---:|",
        *[f"| {name} | {value:.3f} |" for name, value in result["uar"].items()],
        "",
        f"Latency of the default model (runtime {lat['runtime']}), {lat['clips']} clips, best of repeats per clip, "
        "trimmed including the VAD, interleaved in one run on a loaded 2-core machine:",
        "",
        "| whole clip (median s) | trimmed (median s) | median ratio trimmed / whole |",
        "|---:|---:|---:|",
        f"| {lat['median_s_whole']:.3f} | {lat['median_s_trimmed']:.3f} | {lat['median_ratio_trimmed_to_whole']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="EmoDB folder (holding wav/)")
    parser.add_argument("--clips", type=int, default=100, help="speaker-stratified subset size")
    parser.add_argument("--backbone", default=rb.RECIPE["backbone"], help="encoder of the probe (tests: a tiny one)")
    parser.add_argument("--latency-clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="hidden-state cache (default $SER_CACHE_DIR/features)")
    parser.add_argument("--out", default=str(RESULTS / "vad"), help="output path without suffix")
    args = parser.parse_args(argv)
    result = run(args)
    rb.write_results(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
