"""CPU inference latency per backbone family and runtime, as ratios to eager PyTorch in the same run.

Weights are random where no pretrained checkpoint is reachable offline: the architecture is what
costs. Every figure goes through ``Predictor.predict`` (validation + feature extraction + model),
which is what the app and CLI pay. Run: ``python benchmarks/inference.py [--quick]``.
A runtime that fails to export or run stays in the tables as "failed", with its error.
``--families tiny-wav2vec2 --seconds 1 --repeats 1 --no-default --out DIR`` is the smallest run
(tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser.model import DEFAULT_MODEL_DIR, Predictor  # noqa: E402
from ser.runtime import check_signals  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECONDS = (1, 3, 10, 30)
LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom"]


def save_family(name: str, out: Path) -> Path:
    """A randomly initialised checkpoint of a real architecture, with its feature extractor."""
    from transformers import (
        HubertConfig,
        HubertForSequenceClassification,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForAudioClassification,
    )

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {k: i for i, k in enumerate(LABELS)}}
    torch.manual_seed(0)
    if name == "tiny-wav2vec2":  # a few thousand weights: the benchmark's plumbing, not a speed figure
        config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                num_conv_pos_embedding_groups=2, classifier_proj_size=16, **labels)
        model, extractor = Wav2Vec2ForSequenceClassification(config), Wav2Vec2FeatureExtractor(return_attention_mask=True)
    elif name == "wav2vec2-base":
        model, extractor = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**labels)), Wav2Vec2FeatureExtractor()
    elif name == "hubert-base":
        model, extractor = HubertForSequenceClassification(HubertConfig(**labels)), Wav2Vec2FeatureExtractor()
    elif name == "distilhubert":
        config = HubertConfig(num_hidden_layers=2, **labels)
        model, extractor = HubertForSequenceClassification(config), Wav2Vec2FeatureExtractor()
    elif name == "whisper-tiny-encoder (30 s padding)":
        config = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
                               decoder_layers=4, decoder_attention_heads=6, decoder_ffn_dim=1536, **labels)
        model, extractor = WhisperForAudioClassification(config), WhisperFeatureExtractor(feature_size=80)
    elif name == "light-cnn":
        from ser.light_models import create_light_model

        model, extractor = create_light_model("light-cnn", LABELS)
    else:
        raise ValueError(name)
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    return out


def time_call(call: Callable[[], object], repeats: int) -> dict[str, float]:
    call()  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_s": statistics.median(times), "p95_s": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]}


def torch_int8(predictor: Predictor) -> Predictor:
    """Dynamic int8 quantization of every Linear layer, on a copy of the eager model."""
    import copy

    quantized = copy.copy(predictor)
    quantized.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(predictor.model), {torch.nn.Linear}, dtype=torch.qint8)
    return quantized


# The Predictor's own runtimes, as the table names them.
FAST_RUNTIMES = {"onnx": "ORT fp32", "onnx-int8": "ORT int8", "openvino": "OpenVINO"}


def failure(error: Exception) -> str:
    """One line for the table: the error's type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:160]


def variants(path: Path) -> tuple[dict[str, Predictor], dict[str, str]]:
    """The predictors to time, and the runtimes that failed to export or load with their reason."""
    eager = Predictor.from_pretrained(path, runtime="eager")
    found = {"eager fp32": eager, "torch dynamic int8": torch_int8(eager)}
    failed: dict[str, str] = {}
    for runtime, label in FAST_RUNTIMES.items():
        try:
            found[label] = Predictor.from_pretrained(path, runtime=runtime)
        except Exception as error:  # noqa: BLE001 - one exporter failure is a result: it goes in the table
            failed[label] = failure(error)
            print(f"  {runtime}: failed ({failed[label]})", file=sys.stderr)
    auto = Predictor.from_pretrained(path)
    found[f"default (auto -> {auto.runtime})"] = auto
    return found, failed


def clip(seconds: float) -> np.ndarray:
    base = check_signals()[1]
    return np.resize(base, int(seconds * 16000)).astype(np.float32)


def bench_family(name: str, path: Path, seconds: tuple[int, ...], repeats: int) -> list[dict]:
    rows = []
    predictors, failed = variants(path)
    for length in seconds:
        audio = clip(length)
        baseline = None
        for runtime, predictor in predictors.items():
            try:
                timing = time_call(lambda: predictor.predict(audio), repeats if length < 10 else max(2, repeats // 3))
            except Exception as error:  # noqa: BLE001 - a runtime that fails on this length is a result too
                rows.append({"family": name, "runtime": runtime, "clip_s": length, "failed": failure(error)})
                continue
            baseline = baseline or timing["median_s"]
            rows.append({
                "family": name, "runtime": runtime, "clip_s": length, **timing,
                "rtf": timing["median_s"] / length, "speedup_vs_eager": baseline / timing["median_s"],
            })
            print(f"{name:38s} {runtime:28s} {length:>3d} s  {timing['median_s'] * 1000:8.1f} ms  x{baseline / timing['median_s']:.2f}")
        rows += [{"family": name, "runtime": runtime, "clip_s": length, "failed": reason} for runtime, reason in failed.items()]
    return rows


def emodb_agreement(name: str, path: Path, clips: list[Path]) -> list[dict]:
    """Max probability difference and label agreement of each fast runtime against eager on real speech."""
    eager = Predictor.from_pretrained(path, runtime="eager")
    reference = [eager.predict(clip) for clip in clips]
    rows = []
    for runtime in FAST_RUNTIMES:
        try:
            fast = Predictor.from_pretrained(path, runtime=runtime)
            probs = [fast.predict(clip) for clip in clips]
        except Exception as error:  # noqa: BLE001 - shown as failed, with the reason
            rows.append({"family": name, "runtime": runtime, "clips": len(clips), "failed": failure(error)})
            continue
        diff = max(abs(a[k] - b[k]) for a, b in zip(reference, probs) for k in a)
        same = sum(max(a, key=a.get) == max(b, key=b.get) for a, b in zip(reference, probs))
        rows.append({"family": name, "runtime": runtime, "clips": len(clips), "max_prob_diff": diff,
                     "label_agreement": same / len(clips)})
        print(f"{name:38s} {runtime:10s} max |dp| {diff:.4f}  agreement {same}/{len(clips)}")
    return rows


def openvino_precision() -> str:
    """The precision the OpenVINO rows ran in: the project holds it (``ser.runtime.OPENVINO_PRECISION``)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "not installed"
    from ser.runtime import OPENVINO_PRECISION

    return OPENVINO_PRECISION


def markdown(rows: list[dict]) -> str:
    lines = ["| family | runtime | clip | median | p95 | RTF | speed-up vs eager |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['family']} | {r['runtime']} | {r['clip_s']} s | failed: {r['failed']} | | | |")
            continue
        lines.append(
            f"| {r['family']} | {r['runtime']} | {r['clip_s']} s | {r['median_s'] * 1000:.0f} ms | "
            f"{r['p95_s'] * 1000:.0f} ms | {r['rtf']:.3f} | {r['speedup_vs_eager']:.2f}x |"
        )
    return "\n".join(lines)


def agreement_markdown(rows: list[dict]) -> str:
    lines = ["| family | runtime | clips | max probability difference | label agreement |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['family']} | {r['runtime']} | {r['clips']} | failed: {r['failed']} | |" if "failed" in r else
        f"| {r['family']} | {r['runtime']} | {r['clips']} | {r['max_prob_diff']:.4f} | {r['label_agreement']:.1%} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s clips only, fewer repeats")
    parser.add_argument("--seconds", type=int, nargs="*", default=None, help=f"clip lengths (default {SECONDS})")
    parser.add_argument("--no-default", action="store_true", help="leave out the embedded default model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--emodb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb",
                        help="real clips for the agreement check (skipped when absent)")
    parser.add_argument("--agreement-clips", type=int, default=40)
    args = parser.parse_args(argv)
    clips = sorted((args.emodb / "wav").glob("*.wav"))[:: max(1, 535 // max(1, args.agreement_clips))][: args.agreement_clips]
    seconds = tuple(args.seconds) if args.seconds else (3,) if args.quick else SECONDS
    families = args.families or ["wav2vec2-base", "hubert-base", "distilhubert", "whisper-tiny-encoder (30 s padding)", "light-cnn"]
    rows, agreement_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {name: save_family(name, Path(tmp) / name.split()[0]) for name in families}
        if (DEFAULT_MODEL_DIR / "config.json").is_file() and not args.no_default:
            backbone = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text()).get("backbone", "probe")
            checkpoints[f"embedded default ({backbone} probe, real length)"] = DEFAULT_MODEL_DIR
        for name, path in checkpoints.items():
            rows += bench_family(name, path, seconds, args.repeats)
            if clips:
                agreement_rows += emodb_agreement(name, path, clips)
    precision = openvino_precision()
    table = f"OpenVINO's CPU inference precision here: {precision}.\n\n" + markdown(rows)
    if agreement_rows:
        table += "\n\nAgreement with eager fp32 on real EmoDB clips:\n\n" + agreement_markdown(agreement_rows)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    meta["load_average_1min"] = os.getloadavg()[0]
    meta["openvino_precision"] = precision
    (args.out / "inference.json").write_text(json.dumps({"meta": meta, "rows": rows, "agreement": agreement_rows}, indent=2))
    (args.out / "inference.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
