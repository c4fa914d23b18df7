"""EmoDB leave-one-speaker-out accuracy of every model family, in one table.

Every family is a ``finetune.cv.TrainingMethod``; this script cross-validates it with
``finetune.cv.cross_validate`` on the 10 LOSO folds of EmoDB (no test speaker is ever seen in
training, so the numbers are not the inflated speaker-shared ones) and reports per row: UAR as mean
± sample std over folds (the rule of every table) and pooled over all 535 predictions, pooled
accuracy and macro-F1, training time per fold, the size of the saved model and its prediction
latency through ``Predictor``.

    python benchmarks/accuracy.py [--families classical probe ...] [--emodb ../shared/data/emodb]

Results accumulate in benchmarks/results/accuracy.json: running one family replaces only that
family's rows, and benchmarks/results/accuracy.md is rewritten from all rows.

Adding a family: append its rows to ``FAMILIES`` below. ``options`` is passed to ``run_fold`` as a
dict, plus ``model_dir`` (a temporary folder: save the fold's model there, in a format
``Predictor.from_pretrained`` loads, to get the size and latency columns) and ``cache_dir``. An
optional ``prepare(dataset, options)`` in the same module runs once before the folds, untimed
(e.g. feature extraction), so that "train s/fold" measures training.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune.cv import cross_validate  # noqa: E402
from finetune.data import loso_folds  # noqa: E402
from ser.corpora import label_names, load_corpus, waveform  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_EMODB = REPO.parent / "shared" / "data" / "emodb"
LATENCY_CLIPS = 5
# Trainer's bf16 where the GPU has it (TrainingArguments' --bf16), as the published GPU rows ran.
GPU_PRECISION = {"bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported()}


@dataclass(frozen=True)
class Row:
    """One line of the table: a family's ``run_fold`` with fixed options."""

    family: str
    model: str
    features: str
    module: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.family}|{self.model}|{self.features}"


def _classical(estimator: str, label: str, features: str) -> Row:
    return Row("classical", label, features, "finetune.classical", {"estimator": estimator, "features": features})


FAMILIES: dict[str, list[Row]] = {
    "classical": [
        _classical("svm", "SVM (RBF)", "mfcc"),
        _classical("svm", "SVM (RBF)", "egemaps"),
        _classical("svm", "SVM (RBF)", "mfcc+egemaps"),
        _classical("tree", "decision tree", "mfcc"),
        _classical("tree", "decision tree", "egemaps"),
        _classical("tree", "decision tree", "mfcc+egemaps"),
        _classical("mlp", "MLP", "mfcc"),
        _classical("mlp", "MLP", "egemaps"),
        _classical("mlp", "MLP", "mfcc+egemaps"),
    ],
    # The seed article's light models, trained from scratch with Trainer (finetune/train.py); each
    # fold early-stops on validation UAR of one of its own training speakers.
    # The embedded default model's recipe (finetune/make_default.py): frozen offline Whisper tiny.en at
    # the clip's real length, 5 hidden states mean-pooled and concatenated, linear head by L-BFGS.
    "probe": [
        Row("probe", "Whisper tiny.en frozen + linear head (default model)", "5 hidden states, mean", "finetune.probe",
            {"backbone": "whisper-tiny.en-offline", "pooling": "mean", "layer_mix": "concat", "head_hidden_size": 0,
             "optimizer": "lbfgs", "epochs": 500}),
    ],
    # Full fine-tuning of a pretrained transformer (finetune/train.py): the offline Whisper tiny.en
    # encoder with WhisperForAudioClassification's head, every encoder weight trained. Meant for a GPU:
    # each clip is padded to 30 s, a forward pass alone takes about 0.25 s per clip on 2 CPU cores.
    # Each fold early-stops on its own validation speakers.
    "finetune": [
        Row("finetune", "Whisper tiny.en encoder, fully fine-tuned", "log-mel 80 (30 s padded)", "finetune.train",
            {"model": "whisper-tiny.en-offline", "num_train_epochs": 20, "per_device_train_batch_size": 16,
             "patience": 5, "encoder_lr": 5e-5, "learning_rate": 5e-4, "disable_tqdm": True, **GPU_PRECISION}),
        Row("finetune", "Whisper tiny.en encoder, fully fine-tuned, weighted layer sum", "log-mel 80 (30 s padded)",
            "finetune.train",
            {"model": "whisper-tiny.en-offline", "weighted_layer_sum": True, "num_train_epochs": 30,
             "per_device_train_batch_size": 16, "patience": 8, "encoder_lr": 1e-4, "learning_rate": 5e-4,
             "disable_tqdm": True, **GPU_PRECISION}),
    ],
    "light": [
        Row("light", "CNN (seed article)", "logmel", "finetune.train",
            {"model": "light-cnn", "num_train_epochs": 15, "per_device_train_batch_size": 16, "patience": 5,
             "disable_tqdm": True, **GPU_PRECISION}),
        # 40 ms LSTM steps (4 MFCC frames averaged): at 10 ms a LOSO run takes hours on 2 CPU cores.
        Row("light", "BiLSTM (seed article)", "mfcc, 40 ms steps", "finetune.train",
            {"model": "light-bilstm", "frame_stride": 4, "num_train_epochs": 15, "per_device_train_batch_size": 16,
             "patience": 5, "disable_tqdm": True, **GPU_PRECISION}),
    ],
}


def evaluate_row(row: Row, dataset: Any, folds: list, cache_dir: str | None) -> dict[str, Any]:
    """Cross-validate one row (``finetune.cv``); metrics per fold and pooled, timings, model size and latency."""
    module = importlib.import_module(row.module)
    with tempfile.TemporaryDirectory(prefix="ser-accuracy-") as scratch:
        model_dir = Path(scratch) / "model"

        def fold_options(number: int, options: dict[str, Any]) -> dict[str, Any]:
            # Only the first fold saves its model: enough to measure size and latency.
            return {**options, "model_dir": str(model_dir) if number == 0 else None}

        result = cross_validate(dataset, module, folds, {**row.options, "cache_dir": cache_dir},
                                fold_options=fold_options)
        size, latency = _model_cost(model_dir, dataset, folds[0][1])
    summary = result.summary
    return {
        "key": row.key,
        "family": row.family,
        "model": row.model,
        "features": row.features,
        "options": row.options,
        "uar_folds": [fold["uar"] for fold in result.per_fold],
        "uar_mean": summary["uar"]["mean"],
        "uar_std": summary["uar"]["std"],
        "uar_pooled": result.pooled["uar"],
        "accuracy_pooled": result.pooled["accuracy"],
        "macro_f1_pooled": result.pooled["macro_f1"],
        "accuracy_folds": [fold["accuracy"] for fold in result.per_fold],
        "confusion_matrix": result.pooled["confusion_matrix"],
        "labels": label_names(dataset),
        "train_seconds_per_fold": statistics.fmean(fold["seconds"] for fold in result.per_fold),
        "model_bytes": size,
        "predict_ms_per_clip": latency,
        "machine": machine(),
    }


def machine() -> str:
    """Where a row ran: its train time depends on it (latency is always ``Predictor`` on the CPU)."""
    import torch

    cpus = f"{os.cpu_count()} CPU cores"
    return f"1 {torch.cuda.get_device_name()} GPU + {cpus}" if torch.cuda.is_available() else f"{cpus}, no GPU"


def _model_cost(model_dir: Path, dataset: Any, clip_idx: Any) -> tuple[int | None, float | None]:
    """Bytes on disk and median ``Predictor.predict`` latency on real test clips, if a model was saved."""
    if not model_dir.is_dir():
        return None, None
    from ser.model import Predictor

    size = sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file())
    predictor = Predictor.from_pretrained(model_dir)
    clips = [waveform(dataset[int(i)]) for i in list(clip_idx)[:LATENCY_CLIPS]]
    predictor.predict(clips[0])  # warm-up: lazy imports, extractor start-up
    times = []
    for clip in clips:
        started = time.perf_counter()
        predictor.predict(clip)
        times.append((time.perf_counter() - started) * 1000)
    return size, statistics.median(times)


def render(results: dict[str, Any]) -> str:
    """The Markdown table, best pooled UAR first."""
    rows = sorted(results["rows"].values(), key=lambda row: -row["uar_pooled"])
    lines = [
        "# EmoDB accuracy, leave-one-speaker-out",
        "",
        f"{results['corpus']}: {results['n_clips']} clips, {results['n_speakers']} speakers, "
        f"{len(results['labels'])} classes; {results['n_speakers']} folds, each testing one speaker never seen "
        "in training.",
        "Model selection: the SVM picks C and gamma by speaker-grouped inner cross-validation on the training "
        "speakers; the probe's recipe (the default model's) was chosen among the recipes of "
        "`benchmarks/results/probe_emodb.md` by this same LOSO score, not by nested cross-validation, so its row is "
        "slightly optimistic (each recipe's score is in that file).",
        "UAR = unweighted average recall (balanced accuracy). Pooled = over all predictions of all folds; "
        "mean ± std = over the per-speaker folds (sample std). Train time is wall-clock per fold on the row's machine: "
        "the probe and classical rows train on features extracted once before the folds (not counted: the probe's "
        "Whisper encoding is in `benchmarks/results/train.md`), the light and fine-tuned rows compute their "
        "features inside training (counted); "
        f"latency is `Predictor.predict` on the CPU of that machine for one EmoDB clip (median of {LATENCY_CLIPS}), "
        "feature extraction included.",
        "",
        (
            "| family | model | features | UAR (folds) | UAR (pooled) | accuracy | macro-F1 | train s/fold "
            "| model size | predict ms/clip | machine |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['family']} | {row['model']} | {row['features']} "
            f"| {row['uar_mean']:.3f} ± {row['uar_std']:.3f} | {row['uar_pooled']:.3f} "
            f"| {row['accuracy_pooled']:.3f} | {row['macro_f1_pooled']:.3f} "
            f"| {row['train_seconds_per_fold']:.2f} | {_size(row['model_bytes'])} | {_ms(row['predict_ms_per_clip'])} "
            f"| {row['machine']} |"
        )
    lines += ["", f"Updated {results['updated']}. Regenerate: `python benchmarks/accuracy.py --families ...`.", ""]
    return "\n".join(lines)


def _size(size: int | None) -> str:
    if size is None:
        return "–"
    return f"{size / 1024:.0f} KiB" if size < 1024**2 else f"{size / 1024**2:.1f} MiB"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def rerender(out: Path = RESULTS / "accuracy") -> None:
    """Rewrite the Markdown table from the committed JSON (after a wording change), running nothing."""
    results = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".md").write_text(render(results), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["classical"], choices=sorted(FAMILIES))
    parser.add_argument("--only", nargs="*", default=None, help="run only rows whose key contains one of these")
    parser.add_argument("--emodb", type=Path, default=DEFAULT_EMODB)
    parser.add_argument("--cache-dir", default=None, help="feature cache passed to the families")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = parser.parse_args(argv)
    if args.render_only:
        rerender(args.out)
        return 0

    dataset = load_corpus("emodb", args.emodb)
    folds = loso_folds(dataset)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": {}}
    results.update(
        corpus="EmoDB",
        n_clips=len(dataset),
        n_speakers=len(folds),
        labels=label_names(dataset),
    )
    for family in args.families:
        for row in FAMILIES[family]:
            if args.only and not any(part in row.key for part in args.only):
                continue
            print(f"{row.key}:", flush=True)
            results["rows"][row.key] = evaluate_row(row, dataset, folds, args.cache_dir)
    results["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = render(results)
    md_path.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
