"""What training costs: feature caching throughput and the probe head's retrain time, on real EmoDB.

Every training run here starts from cached features, so two costs matter:
- caching: clips per second of the probe's hidden-state extraction (offline Whisper tiny.en
  encoder) and of the classical features (MFCC statistics, eGeMAPS), on the first run (extract
  and write the cache) against the second run over the same clips (read the cache);
- retraining: the probe head (``finetune.probe.fit_head``) on 500 cached clips: the current
  default recipe (``ProbeOptions()``: a linear head fitted to convergence by full-batch L-BFGS,
  no validation split) against an MLP head trained by AdamW with early stopping on validation
  speakers and a refit on every training speaker; and what the default retrain would cost without
  the cache (extraction at the measured first-run rate plus the head), which is what the cache
  saves every retrain.

Run: ``python benchmarks/train.py [--extract-clips 40] [--train-clips 500]``. Needs EmoDB at
``$SER_SHARED_DATA/emodb`` (default ../shared/data/emodb beside the checkout); exits 0 with a
message when it is absent. ``--corpus-clips`` limits the corpus (tests/test_benchmarks.py runs a
few clips). The numbers depend on the machine's load: the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from finetune.cache import cached_hidden_states  # noqa: E402
from finetune.classical import corpus_features  # noqa: E402
from finetune.probe import ProbeOptions, encoder_probe, fit_head, load_features  # noqa: E402
from ser.backbones import OFFLINE_WHISPER  # noqa: E402
from ser.corpora import load_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))
CLASSICAL_SETS = ("mfcc", "egemaps")


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def first_and_second_run(name: str, n_clips: int, extract: Callable[[Any], Any], warm_up: Any, clips: Any) -> dict[str, Any]:
    """Clips/s of the first run (extract + write the cache) and the second (read it back).

    One other clip goes through first, so one-time costs (numba compilation, first forward pass)
    are not counted as per-clip throughput."""
    extract(warm_up)
    _, first = timed(lambda: extract(clips))
    _, second = timed(lambda: extract(clips))
    row = {
        "features": name, "clips": n_clips,
        "first_run_s": first, "first_run_clips_per_s": n_clips / first,
        "cached_run_s": second, "cached_run_clips_per_s": n_clips / second,
        "speedup": first / second,
    }
    print(f"{name:28s} first {n_clips / first:8.1f} clips/s   cached {n_clips / second:9.1f} clips/s")
    return row


def caching_rows(dataset: Any, backbone: str, cache: Path) -> tuple[list[dict[str, Any]], float]:
    """The probe's and the classical features' caching throughput on ``dataset`` (but its first
    clip, the warm-up), into a fresh cache."""
    warm_up, clips = dataset.select([0]), dataset.select(range(1, len(dataset)))
    probe, load_s = timed(lambda: encoder_probe(backbone))
    print(f"encoder {backbone} loaded in {load_s:.1f} s (not counted in throughput)")
    rows = [first_and_second_run(
        f"probe hidden states ({backbone})", len(clips),
        lambda d: cached_hidden_states(d, probe, cache_dir=cache / "probe"), warm_up, clips,
    )]
    for feature_set in CLASSICAL_SETS:
        rows.append(first_and_second_run(
            f"classical {feature_set}", len(clips),
            lambda d, fs=feature_set: corpus_features(d, fs, cache_dir=cache / "classical"), warm_up, clips,
        ))
    return rows, load_s


def retrain_rows(
    dataset: Any, n_train: int, backbone: str, seed: int, cache_dir: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Head retrain time on ``n_train`` clips whose features are cached (the probe's cache: extracted once)."""
    options = ProbeOptions(backbone=backbone, seed=seed, cache_dir=cache_dir)
    features, features_s = timed(lambda: load_features(dataset, options))
    print(f"features of {len(dataset)} clips ready in {features_s:.1f} s (cache hit unless this is the first run)")
    rows_idx = np.sort(np.random.default_rng(seed).choice(len(dataset), size=min(n_train, len(dataset)), replace=False))
    rows = []
    for head, head_options in head_recipes(options):
        (_, _, log), seconds = timed(lambda o=head_options: fit_head(dataset, rows_idx, features, o))
        rows.append({
            "head": head, "clips": len(rows_idx), "seconds": seconds,
            "epochs_early_stopping": log["epochs_run"], "best_epoch": log["best_epoch"],
            "refit_epochs": len(log.get("refit_losses", [])), "val_uar": log["val_uar"],
        })
        print(f"head {head:48s} on {len(rows_idx)} cached clips: {seconds:6.1f} s "
              f"({log['epochs_run']} + {len(log.get('refit_losses', []))} iterations)")
    return rows, {"load_features_s": features_s, "corpus_clips": len(dataset)}


def head_recipes(options: ProbeOptions) -> list[tuple[str, ProbeOptions]]:
    """The default recipe, named from what it is, and an MLP trained with early stopping."""
    default = options.optimizer, options.head_hidden_size
    name = ("linear" if default[1] == 0 else f"MLP {default[1]}") + f", {default[0]} (default)"
    mlp = replace(options, head_hidden_size=256, optimizer="adamw")
    return [(name, options), ("MLP 256, AdamW + early stopping", mlp)]


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(meta: dict[str, Any], caching: list[dict[str, Any]], retrain: list[dict[str, Any]], uncached_s: float | None) -> str:
    lines = [
        (
            f"EmoDB, {meta['cpus']} CPUs, torch threads {meta['torch_threads']}, "
            f"load average {meta['loadavg_before'][0]:.1f} before / {meta['loadavg_after'][0]:.1f} after."
        ),
        "",
        "| features | clips | first run (extract + cache) | cached run | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in caching:
        lines.append(
            f"| {r['features']} | {r['clips']} | {r['first_run_clips_per_s']:.1f} clips/s | "
            f"{r['cached_run_clips_per_s']:.1f} clips/s | {r['speedup']:.0f}x |"
        )
    if not retrain:
        return "\n".join(lines)
    lines += [
        "",
        "Retrain time of the head alone, from cached features (the encoder's time is in the table above). "
        "Iterations: L-BFGS steps, or AdamW epochs until early stopping + refit epochs; "
        "validation UAR only where the recipe holds out validation speakers.",
        "",
        "| probe head retrain | clips | time | iterations | validation UAR |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in retrain:
        iterations = f"{r['epochs_early_stopping']}" + (f" + {r['refit_epochs']}" if r["refit_epochs"] else "")
        lines.append(
            f"| {r['head']} | {r['clips']} | {r['seconds']:.1f} s | {iterations} | {_num(r['val_uar'], '.3f')} |"
        )
    if uncached_s is not None:
        note = (
            f"Without the cache the same default retrain would also extract every clip: about {uncached_s:.0f} s "
            f"(first-run extraction rate x clips + head), {uncached_s / retrain[0]['seconds']:.0f}x the cached retrain."
        )
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "emodb", help="EmoDB folder")
    parser.add_argument("--backbone", default=OFFLINE_WHISPER)
    parser.add_argument("--extract-clips", type=int, default=40, help="clips for the caching throughput (fresh cache)")
    parser.add_argument("--train-clips", type=int, default=500, help="clips the head retrains on (0: skip)")
    parser.add_argument("--cache-dir", default=None,
                        help="the probe's feature cache for the retrain (default: $SER_CACHE_DIR/features or the user cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--corpus-clips", type=int, default=None, help="use only this many clips of the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.root / "wav").is_dir():
        print(f"EmoDB not found at {args.root}: nothing to benchmark (set SER_SHARED_DATA or --root)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    loadavg_before = os.getloadavg()
    dataset = load_corpus("emodb", args.root)
    if args.corpus_clips:
        dataset = dataset.shuffle(seed=args.seed).select(range(min(args.corpus_clips, len(dataset))))
    subset = dataset.shuffle(seed=args.seed).select(range(min(args.extract_clips + 1, len(dataset))))
    with tempfile.TemporaryDirectory() as cache:
        caching, encoder_load_s = caching_rows(subset, args.backbone, Path(cache))
    retrain, retrain_meta, uncached_s = [], {}, None
    if args.train_clips > 0:
        retrain, retrain_meta = retrain_rows(dataset, args.train_clips, args.backbone, args.seed, args.cache_dir)
        uncached_s = retrain[0]["clips"] / caching[0]["first_run_clips_per_s"] + retrain[0]["seconds"]
    meta = {
        "corpus": "emodb", "backbone": args.backbone, "encoder_load_s": encoder_load_s, **retrain_meta,
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
    }
    table = markdown(meta, caching, retrain, uncached_s)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "caching": caching, "retrain": retrain, "estimated_uncached_retrain_s": uncached_s}
    (args.out / "train.json").write_text(json.dumps(result, indent=2))
    (args.out / "train.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
