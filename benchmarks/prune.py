"""Structured pruning vs int8 quantization of the Whisper base probe: size, latency, speaker-independent UAR.

Variants of the encoder (the probe's head is refitted per fold on each variant's hidden states:
that is the recovery fine-tune of ``python -m finetune prune``; "no recovery" applies the head
fitted on the unpruned encoder to the pruned encoder's states):

- unpruned fp32; unpruned with torch dynamic int8 Linear layers; the same checkpoint on ONNX Runtime
  int8 (``runtime="onnx-int8"``, what ``Predictor`` ships): ONNX Runtime runs encoder and head as one
  graph, so its hidden states cannot refit a head; its UAR is each fold's head fitted on the fp32
  encoder, exported with it to int8 and run end to end through ``Predictor.predict`` on the fold's
  test clips (the "no recovery" column: one export per fold);
- ``--heads-per-layer`` heads of lowest out_proj norm removed from every layer (of 8);
- the same plus only ``--ffn-keep`` of each FFN's channels kept.

UAR: ``--folds`` speaker folds (``finetune.data.speaker_kfold``) over ``--clips`` EmoDB clips
(a spread subset: the loaded 2-CPU machine runs each variant's encoder over every clip). Latency:
median ``Predictor.predict`` per clip on ``--latency-clips`` clips, every variant in the same run.
Size: the checkpoint's encoder + head on disk (the int8 ONNX file for ONNX int8).

Run: ``python benchmarks/prune.py [--clips 200] [--heads-per-layer 2 4]``. Needs EmoDB at
``$SER_SHARED_DATA/emodb``; exits 0 with a message when it is absent.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from finetune.cache import encode_clip  # noqa: E402
from finetune.data import speaker_kfold  # noqa: E402
from finetune.probe import CachedFeatures, ProbeOptions, probe_config, train_head_lbfgs  # noqa: E402
from finetune.prune import prune_probe  # noqa: E402
from ser.backbones import OFFLINE_WHISPER_BASE  # noqa: E402
from ser.corpora import label_names, load_corpus, waveform  # noqa: E402
from ser.metrics import compute_metrics  # noqa: E402
from ser.probe import ProbeForAudioClassification  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))


def layer_means(probe: ProbeForAudioClassification, waves: list[np.ndarray]) -> CachedFeatures:
    """Per-layer means of every clip through ``probe``'s encoder (no cache: variants share a config digest)."""
    means = torch.from_numpy(np.stack([encode_clip(probe, w).mean(axis=0) for w in waves])).float()
    n = len(waves)
    return CachedFeatures(means=means, frames=None, clip=np.arange(n), copy=np.zeros(n, dtype=int))


def fold_uar(features: CachedFeatures, labels: np.ndarray, names: list[str], folds: list, config: Any,
             heads: list | None = None) -> tuple[float, list]:
    """Pooled UAR over folds; a head is fitted per fold unless ``heads`` (one per fold) are given."""
    truth, pred, fitted = [], [], []
    for i, (train, test) in enumerate(folds):
        head = heads[i] if heads else train_head_lbfgs(config, features, labels, np.asarray(train), ProbeOptions())[0]
        fitted.append(head)
        with torch.no_grad():
            pred.extend(head.forward_pooled(features.means[test]).argmax(-1).tolist())
        truth.extend(labels[test].tolist())
    return float(compute_metrics(truth, pred, names)["uar"]), fitted


def probe_checkpoint(config: Any, probe: ProbeForAudioClassification, head: Any, folder: Path) -> Path:
    """A saved probe: ``probe``'s encoder embedded, ``head``'s weights."""
    build = ProbeForAudioClassification(copy.deepcopy(config), encoder=probe.encoder, feature_extractor=probe.feature_extractor)
    build.config.backbone_embedded = True
    build.head.load_state_dict(head.state_dict())
    build.save_pretrained(folder)
    return folder


def runtime_fold_uar(probe: ProbeForAudioClassification, heads: list, config: Any, waves: list[np.ndarray],
                     labels: np.ndarray, names: list[str], folds: list, tmp: Path, runtime: str) -> tuple[float, Path]:
    """Pooled UAR of each fold's ``heads`` on ``probe``'s encoder served by ``runtime`` end to end
    (``Predictor.predict`` on the fold's test clips); the last fold's checkpoint folder."""
    from ser.model import Predictor

    truth, pred, folder = [], [], tmp
    for i, (_, test) in enumerate(folds):
        folder = probe_checkpoint(config, probe, heads[i], tmp / f"{runtime}_fold{i}")
        predictor = Predictor.from_pretrained(folder, runtime=runtime)
        if predictor.runtime != runtime:
            raise RuntimeError(f"asked for {runtime}, got {predictor.runtime}")
        for j in test:
            probs = predictor.predict(waves[j])
            pred.append(names.index(max(probs, key=probs.get)))
        truth.extend(labels[test].tolist())
        print(f"{runtime} fold {i}: {len(test)} clips", flush=True)
    return float(compute_metrics(truth, pred, names)["uar"]), folder


def interleaved_latency(predictors: list[Any], clips: list[np.ndarray], repeats: int) -> list[float]:
    """Median seconds per clip of each predictor, the variants taking turns clip by clip so a change
    in the machine's load hits them all alike (one warm-up pass first)."""
    for predictor in predictors:
        for clip in clips[:2]:
            predictor.predict(clip)
    times: list[list[float]] = [[] for _ in predictors]
    for _ in range(repeats):
        for clip in clips:
            for i, predictor in enumerate(predictors):
                start = time.perf_counter()
                predictor.predict(clip)
                times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def folder_bytes(folder: Path, skip: str = "onnx") -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and skip not in f.relative_to(folder).parts)


def state_bytes(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def quantized(probe: ProbeForAudioClassification) -> ProbeForAudioClassification:
    """The probe with torch dynamic int8 Linear layers in its encoder (weights int8, activations fp32)."""
    out = copy.deepcopy(probe)
    out.encoder = torch.ao.quantization.quantize_dynamic(out.encoder, {torch.nn.Linear}, dtype=torch.qint8)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "emodb", help="EmoDB folder")
    parser.add_argument("--backbone", default=OFFLINE_WHISPER_BASE)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--heads-per-layer", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--ffn-keep", type=float, default=0.5)
    parser.add_argument("--latency-clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime int8 row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.root / "wav").is_dir():
        print(f"EmoDB not found at {args.root}: nothing to benchmark (set SER_SHARED_DATA or --root)")
        return 0
    torch.set_num_threads(args.threads)
    started, loadavg_before = time.perf_counter(), os.getloadavg()
    from ser.model import Predictor

    dataset = load_corpus("emodb", args.root)
    dataset = dataset.shuffle(seed=args.seed).select(range(min(args.clips, len(dataset))))
    names, labels = label_names(dataset), np.asarray(dataset["label"])
    waves = [waveform(row) for row in dataset]
    folds = speaker_kfold(dataset, k=args.folds, seed=args.seed)
    base = ProbeForAudioClassification.from_backbone(args.backbone, names, layer_mix="concat", head_hidden_size=0,
                                                     embed_backbone=True).eval()
    config = probe_config(base.config, names, ProbeOptions())
    clips = waves[: args.latency_clips]
    rows: list[dict[str, Any]] = []
    predictors: list[Any] = []

    def measure(title: str, probe: ProbeForAudioClassification, features: CachedFeatures, heads: list,
                tmp: Path, runtime: str = "eager", saved: Path | None = None, **extra: Any) -> None:
        folder = saved or tmp / title.replace(" ", "_").replace(",", "")
        if "int8" in title and runtime == "eager":  # torch dynamic int8 has no safetensors form: time it in memory
            build = ProbeForAudioClassification(copy.deepcopy(config), encoder=probe.encoder,
                                                feature_extractor=probe.feature_extractor)
            build.head.load_state_dict(heads[-1].state_dict())
            size = state_bytes(build.encoder) + state_bytes(build.head)
            predictor = Predictor(build.eval(), probe.feature_extractor, name=title, version=title)
        else:
            if saved is None:
                probe_checkpoint(config, probe, heads[-1], folder)
            predictor = Predictor.from_pretrained(folder, runtime=runtime)
            size = folder_bytes(folder) if runtime == "eager" else (folder / "onnx" / "model.int8.onnx").stat().st_size
        predictors.append(predictor)
        rows.append({"variant": title, "bytes": size,
                     "encoder_parameters": sum(p.numel() for p in (base if "int8" in title else probe).encoder.parameters()),
                     **extra})
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base_features = layer_means(base, waves)
        base_uar, base_heads = fold_uar(base_features, labels, names, folds, config)
        measure("unpruned fp32", base, base_features, base_heads, tmp, uar=base_uar)
        int8 = quantized(base)
        int8_uar, int8_heads = fold_uar(layer_means(int8, waves), labels, names, folds, config)
        measure("unpruned, torch dynamic int8", int8, base_features, int8_heads, tmp, uar=int8_uar)
        if not args.no_onnx:
            try:
                onnx_uar, saved = runtime_fold_uar(base, base_heads, config, waves, labels, names, folds, tmp, "onnx-int8")
                measure("unpruned, ONNX Runtime int8", base, base_features, base_heads, tmp, runtime="onnx-int8",
                        saved=saved, uar=None, uar_no_recovery=onnx_uar, end_to_end=True)
            except Exception as error:  # noqa: BLE001 - a failed export is a row, not a crash
                rows.append({"variant": "unpruned, ONNX Runtime int8", "failed": f"{type(error).__name__}: {error}"})
        variants = [(f"{k} heads/layer pruned", k, 1.0) for k in args.heads_per_layer]
        variants += [(f"{args.heads_per_layer[0]} heads/layer + FFN {args.ffn_keep:.0%}", args.heads_per_layer[0], args.ffn_keep)]
        for title, k, ffn in variants:
            pruned = copy.deepcopy(base)
            report = prune_probe(pruned, heads_per_layer=k, ffn_keep=ffn)
            features = layer_means(pruned, waves)
            uar, heads = fold_uar(features, labels, names, folds, config)
            stale, _ = fold_uar(features, labels, names, folds, config, heads=base_heads)
            measure(title, pruned, features, heads, tmp, uar=uar, uar_no_recovery=stale,
                    heads_per_layer=report["heads"], ffn_per_layer=report["ffn"])

        timed = [row for row in rows if "failed" not in row]
        for row, seconds in zip(timed, interleaved_latency(predictors, clips, args.repeats)):
            row["latency_s"] = seconds

    meta = {
        "corpus": "emodb", "clips": len(dataset), "folds": len(folds), "backbone": args.backbone,
        "head": "concat layer means, linear, L-BFGS (the default probe recipe), refitted per fold",
        "latency_clips": len(clips), "repeats": args.repeats, "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
    }
    result = {"meta": meta, "rows": rows}
    table = markdown(result)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "prune.md").write_text(table)
    return 0


def markdown(result: dict[str, Any]) -> str:
    meta, rows = result["meta"], result["rows"]
    base = next(row for row in rows if row["variant"] == "unpruned fp32")
    lines = [
        f"# Pruning vs quantization: {meta['backbone']} probe, EmoDB {meta['clips']} clips, {meta['folds']} speaker folds",
        "",
        f"Head: {meta['head']}. Latency: median Predictor.predict of {meta['latency_clips']} clips x {meta['repeats']}, "
        f"{meta['torch_threads']} torch thread, variants taking turns clip by clip in the same run.",
        "",
        "| variant | heads per layer | FFN per layer | encoder params | size | latency | speed-up | UAR (head refitted) | UAR (no recovery) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['variant']} | failed: {row['failed']} | | | | | | | |")
            continue
        uar = ("n/a (one graph)" if row.get("end_to_end") else "not measured") if row.get("uar") is None else f"{row['uar']:.3f}"
        stale = f"{row['uar_no_recovery']:.3f}" if "uar_no_recovery" in row else ""
        lines.append(
            f"| {row['variant']} | {row.get('heads_per_layer', '')} | {row.get('ffn_per_layer', '')} | {row['encoder_parameters']:,} | "
            f"{row['bytes'] / 2**20:.1f} MiB | {row['latency_s'] * 1000:.0f} ms | {base['latency_s'] / row['latency_s']:.2f}x | "
            f"{uar} | {stale} |"
        )
    if any(row.get("end_to_end") for row in rows):
        lines += ["", "ONNX Runtime int8 runs encoder and head as one graph, so no head can be refitted on its hidden "
                  "states: its UAR is each fold's head fitted on the fp32 encoder, exported with it and run end to end "
                  "(Predictor.predict, runtime=\"onnx-int8\") on the fold's test clips."]
    lines += ["", f"Whole run {meta['seconds']:.0f} s on {meta['cpus']} shared CPUs (load {meta['loadavg_before'][0]:.1f} "
              f"before, {meta['loadavg_after'][0]:.1f} after).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
