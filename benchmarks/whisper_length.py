"""Whisper encoder at 30 s padding vs at the clip's real length: emotion accuracy and latency.

transformers pads every Whisper input to 30 s, so a 3 s clip pays for 30 s. Running the
encoder on the real frames is ~10x cheaper, but attention then no longer sees the padding
the model was trained with. This measures whether that costs accuracy, with a frozen-encoder
recipe: mean-pooled hidden states of all 5 layers (concatenated), class-balanced logistic
regression, leave-one-speaker-out on EmoDB.

    python benchmarks/whisper_length.py [--emodb ../shared/data/emodb] [--threads 1]

Prints a Markdown table and writes benchmarks/results/whisper_length.{json,md}. Extracted
features are cached in /tmp, so reruns only redo the classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm
from transformers import WhisperFeatureExtractor, WhisperForAudioClassification
from transformers.utils import logging as hf_logging

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ser.audio import SAMPLE_RATE
from ser.backbones import OFFLINE_WHISPER, resolve_backbone
from ser.backbones.whisper_length import encode_hidden_states, output_lengths
from ser.corpora import label_names, load_corpus, waveform
from ser.metrics import compute_metrics

RESULTS = REPO / "benchmarks" / "results"
CACHE = Path("/tmp/ser_whisper_length_cache")
VARIANTS = ("padded_30s", "real_length")


def features_padded(extractor, encoder, wav: np.ndarray) -> torch.Tensor:
    """HF's way: 3000 frames, attention over padding too; pooled over the real frames only."""
    inputs = extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
    states = encoder(inputs.input_features, output_hidden_states=True).hidden_states
    real = int(output_lengths(inputs.attention_mask.sum(-1))[0])
    return torch.cat([state[0, :real].mean(0) for state in states])


def features_real(extractor, encoder, wav: np.ndarray) -> torch.Tensor:
    """Only the real frames, from feature extraction (no 30 s STFT) to the last layer."""
    inputs = extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest")
    states = encode_hidden_states(encoder, inputs.input_features)
    return torch.cat([state[0].mean(0) for state in states])


EXTRACTORS = {"padded_30s": features_padded, "real_length": features_real}


def extract(variant: str, wavs: list[np.ndarray], extractor, encoder) -> np.ndarray:
    cache = CACHE / f"{variant}-{len(wavs)}.npy"
    if cache.is_file():
        return np.load(cache)
    fn = EXTRACTORS[variant]
    with torch.inference_mode():
        rows = [fn(extractor, encoder, wav).numpy() for wav in tqdm(wavs, desc=variant, unit="clip")]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, np.stack(rows))
    return np.stack(rows)


def loso_predictions(x: np.ndarray, y: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Leave-one-speaker-out predictions of a class-balanced logistic regression."""
    predictions = np.empty_like(y)
    for speaker in tqdm(sorted(set(speakers)), desc="LOSO", unit="fold", leave=False):
        test = speakers == speaker
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        model.fit(x[~test], y[~test])
        predictions[test] = model.predict(x[test])
    return predictions


def median_latency_ms(variant: str, wavs: list[np.ndarray], extractor, encoder, *, encoder_only: bool) -> float:
    """Median per-clip time; ``encoder_only`` leaves out feature extraction (shared cost otherwise)."""
    fn = EXTRACTORS[variant]
    times = []
    with torch.inference_mode():
        fn(extractor, encoder, wavs[0])  # warm-up
        for wav in wavs:
            if encoder_only:
                padding = "max_length" if variant == "padded_30s" else "longest"
                feats = extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=padding).input_features
                start = time.perf_counter()
                if variant == "padded_30s":
                    encoder(feats, output_hidden_states=True)
                else:
                    encode_hidden_states(encoder, feats)
            else:
                start = time.perf_counter()
                fn(extractor, encoder, wav)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def three_second_clips(wavs: list[np.ndarray], count: int) -> list[np.ndarray]:
    length = 3 * SAMPLE_RATE
    return [wav[:length] for wav in wavs if len(wav) >= length][:count]


def markdown(result: dict) -> str:
    lines = [
        (
            f"Whisper tiny.en encoder (`{OFFLINE_WHISPER}`), frozen; EmoDB, {result['clips']} clips, "
            f"leave-one-speaker-out ({result['folds']} folds), all 5 hidden states mean-pooled + "
            f"class-balanced logistic regression. Latency: median over {result['latency_clips']} clips "
            f"of 3.0 s, torch threads = {result['threads']}, {result['machine']}, "
            f"load average {result['load_average_1min']:.1f} on {os.cpu_count()} CPUs."
        ),
        "",
        "| variant | UAR | accuracy | macro-F1 | latency 3 s clip, end-to-end (ms) | encoder only (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        r = result["variants"][name]
        lines.append(
            f"| {name} | {r['uar']:.3f} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['latency_ms_end_to_end']:.1f} | {r['latency_ms_encoder']:.1f} |"
        )
    ratio = result["latency_ratio_real_over_padded"]
    lines += [
        "",
        f"Real/padded latency ratio: end-to-end {ratio['end_to_end']:.3f}, encoder only {ratio['encoder']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emodb", type=Path, default=REPO.parent / "shared" / "data" / "emodb")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-clips", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()

    corpus = load_corpus("emodb", args.emodb)
    labels = label_names(corpus)
    y = np.asarray(corpus["label"])
    speakers = np.asarray(corpus["speaker"])
    wavs = [waveform(row) for row in tqdm(corpus, desc="decode", unit="clip")]

    checkpoint = resolve_backbone(OFFLINE_WHISPER)
    extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    encoder = WhisperForAudioClassification.from_pretrained(checkpoint, num_labels=len(labels)).encoder.eval()

    latency_wavs = three_second_clips(wavs, args.latency_clips)
    result = {
        "backbone": OFFLINE_WHISPER,
        "clips": len(wavs),
        "folds": len(set(speakers)),
        "labels": labels,
        "threads": args.threads,
        "latency_clips": len(latency_wavs),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "variants": {},
    }
    for name in VARIANTS:
        x = extract(name, wavs, extractor, encoder)
        metrics = compute_metrics(y, loso_predictions(x, y, speakers), labels)
        result["variants"][name] = {
            "uar": metrics["uar"],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "confusion_matrix": metrics["confusion_matrix"],
            "latency_ms_end_to_end": median_latency_ms(name, latency_wavs, extractor, encoder, encoder_only=False),
            "latency_ms_encoder": median_latency_ms(name, latency_wavs, extractor, encoder, encoder_only=True),
        }
    result["load_average_1min"] = os.getloadavg()[0]  # other jobs on the machine inflate latencies
    padded, real = (result["variants"][name] for name in VARIANTS)
    result["latency_ratio_real_over_padded"] = {
        "end_to_end": real["latency_ms_end_to_end"] / padded["latency_ms_end_to_end"],
        "encoder": real["latency_ms_encoder"] / padded["latency_ms_encoder"],
    }

    table = markdown(result)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "whisper_length.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "whisper_length.md").write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
