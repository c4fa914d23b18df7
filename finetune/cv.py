"""``python -m finetune cv``: speaker-independent cross-validation of any training method.

One hold-out speaker split says little on a 10-speaker corpus: the score moves by ten points
depending on which speakers land in the test set. Leave-one-speaker-out (or speaker k-fold)
tests every speaker once and reports the mean and spread over folds, which is what published SER
results on EmoDB/RAVDESS mean when they say "speaker-independent".

:func:`cross_validate` is the one fold loop of the project: ``python -m finetune cv``, ``probe
--eval loso``, ``finetune.make_default`` and the benchmarks all call it, so every ± printed
anywhere follows the same rule. Every method module (``finetune.train``, ``finetune.probe``,
``finetune.classical``) is a :class:`TrainingMethod`: ``OPTIONS``, the dataclass of its options,
and ``run_fold``; method options follow ``--`` on the command line, parsed from that dataclass as
the method's own command parses them::

    python -m finetune cv --method train --folds loso --corpus emodb --root DIR --out DIR -- --model light-cnn
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

METHODS: dict[str, str] = {
    "train": "finetune.train",
    "probe": "finetune.probe",
    "classical": "finetune.classical",
}
SUMMARY_KEYS = ("uar", "accuracy", "macro_f1")


@runtime_checkable
class TrainingMethod(Protocol):
    """What a training method module offers cross-validation (``finetune.train``, ``.probe``, ``.classical``)."""

    OPTIONS: type
    """The dataclass of its options (``cv`` parses what follows ``--`` into it)."""

    def prepare(self, dataset: Any, options: Any = None) -> None:
        """Work shared by every fold (decoding, feature extraction), done once before the folds are timed."""

    def run_fold(
        self, dataset: Any, train_idx: Sequence[int], test_idx: Sequence[int], options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Train on ``train_idx``, predict ``test_idx``: (y_true, y_pred) as class indices."""


def method_module(method: str) -> ModuleType:
    """The module implementing ``method`` (``train``, ``probe`` or ``classical``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[method])


def make_folds(dataset: Any, folds: str | int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``"loso"``: one fold per speaker; ``"loco"``: one per corpus; an integer K: K speaker-disjoint folds."""
    from finetune.data import loco_folds, loso_folds, speaker_kfold

    if str(folds).lower() == "loso":
        return loso_folds(dataset)
    if str(folds).lower() == "loco":
        return loco_folds(dataset)
    try:
        k = int(folds)
    except ValueError:
        raise ValueError(f"--folds must be 'loso', 'loco' or a number of folds, not {folds!r}") from None
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    return speaker_kfold(dataset, k, seed=seed)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and *sample* standard deviation (ddof=1) over folds; 0 for a single fold.

    The one spread rule of the project: folds are a sample of the speakers (or corpora) a model
    may meet, so the sample std is the honest estimate of how much a new one moves the score.
    """
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


@dataclass
class CVResult:
    """Scores of one cross-validation: per fold, mean ± std over folds (:func:`mean_std`), and pooled.

    ``per_fold`` rows hold ``fold``, ``test_speakers``, ``n``, ``seconds`` (training and predicting
    the fold) and every metric of ``SUMMARY_KEYS``; ``predictions`` are each fold's predicted class
    indices, in the order of its test indices; ``pooled`` is ``compute_metrics`` over all folds'
    predictions together; ``meta`` is whatever the caller records beside (corpus, fold scheme...).
    """

    method: str
    per_fold: list[dict[str, Any]]
    pooled: dict[str, Any]
    predictions: list[list[int]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def folds(self) -> int:
        return len(self.per_fold)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and sample std over folds of every metric of ``SUMMARY_KEYS``."""
        return {key: mean_std([fold[key] for fold in self.per_fold]) for key in SUMMARY_KEYS}

    def to_dict(self, *, predictions: bool = True) -> dict[str, Any]:
        """JSON-ready: method, folds, per_fold, summary, pooled (and predictions), then ``meta``."""
        record = {"method": self.method, "folds": self.folds, "per_fold": self.per_fold,
                  "summary": self.summary, "pooled": self.pooled}
        if predictions:
            record["predictions"] = self.predictions
        return record | self.meta


def cross_validate(
    dataset: Any,
    method: str | TrainingMethod,
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    options: Any = None,
    *,
    fold_options: Callable[[int, Any], Any] | None = None,
    progress: bool = True,
) -> CVResult:
    """Run ``method`` (a name of ``METHODS`` or a :class:`TrainingMethod`) on every fold.

    The method's ``prepare`` runs once first, untimed. ``fold_options(number, options)``, if
    given, returns the options of one fold (e.g. a model folder for the first fold only).
    """
    from finetune.data import check_speaker_disjoint, speaker_groups
    from ser.corpora import label_names
    from ser.metrics import compute_metrics

    module = method_module(method) if isinstance(method, str) else method
    name = method if isinstance(method, str) else getattr(module, "__name__", type(module).__name__)
    labels = label_names(dataset)
    groups = speaker_groups(dataset)
    if hasattr(module, "prepare"):
        module.prepare(dataset, options)
    per_fold: list[dict[str, Any]] = []
    predictions: list[list[Any]] = []
    pooled_true: list[Any] = []
    for number, (train_idx, test_idx) in enumerate(tqdm(folds, desc=f"cv {name}", disable=not progress)):
        check_speaker_disjoint(dataset, {"train": train_idx, "test": test_idx})
        started = time.perf_counter()
        y_true, y_pred = module.run_fold(
            dataset, train_idx, test_idx, fold_options(number, options) if fold_options else options
        )
        seconds = time.perf_counter() - started
        y_true, y_pred = _plain(y_true), _plain(y_pred)
        scores = compute_metrics(y_true, y_pred, labels)
        per_fold.append(
            {
                "fold": number,
                "test_speakers": sorted(set(groups[np.asarray(test_idx, dtype=int)].tolist())),
                "n": len(y_true),
                **{key: scores[key] for key in SUMMARY_KEYS},
                "seconds": seconds,
            }
        )
        pooled_true += y_true
        predictions.append(y_pred)
    pooled = compute_metrics(pooled_true, [p for fold in predictions for p in fold], labels)
    return CVResult(name, per_fold, pooled, predictions)


def _plain(values: Any) -> list[Any]:
    """NumPy arrays of indices or names -> a list of Python ints/strs (what compute_metrics takes)."""
    return np.asarray(values).tolist()


def markdown(result: CVResult, *, title: str) -> str:
    """A per-fold table and a mean ± std (sample std) line per metric."""
    lines = [
        f"# {title}",
        "",
        "| fold | test speakers | clips | UAR | accuracy | macro-F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fold in result.per_fold:
        lines.append(
            f"| {fold['fold']} | {', '.join(fold['test_speakers'])} | {fold['n']} | {fold['uar']:.4f} | "
            f"{fold['accuracy']:.4f} | {fold['macro_f1']:.4f} |"
        )
    summary = result.summary
    lines.append(
        "| **mean ± std** | | | "
        + " | ".join(f"**{summary[key]['mean']:.4f} ± {summary[key]['std']:.4f}**" for key in SUMMARY_KEYS)
        + " |"
    )
    pooled = result.pooled
    lines += [
        "",
        (
            f"Pooled over all folds ({pooled['n']} clips): UAR {pooled['uar']:.4f}, "
            f"accuracy {pooled['accuracy']:.4f}, macro-F1 {pooled['macro_f1']:.4f}."
        ),
        "",
    ]
    return "\n".join(lines)


def method_options(method: str, method_args: Sequence[str]) -> Any:
    """``method_args`` parsed into the method's options dataclass (the data come from cv's own flags)."""
    from transformers import HfArgumentParser

    from finetune.options import parse_args

    parser = HfArgumentParser(method_module(method).OPTIONS, prog=f"python -m finetune cv --method {method} --")
    (options,) = parse_args(parser, method_args)
    return options


# --- command line -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=tuple(METHODS), required=True, help="training method to cross-validate")
    parser.add_argument("--folds", default="loso",
                        help="'loso' (leave one speaker out), 'loco' (leave one corpus out) or a number K of speaker folds")
    parser.add_argument("--corpus", required=True, help="corpus name known to ser.corpora (e.g. emodb), or several: emodb,nemo")
    parser.add_argument("--root", required=True, help="folder holding the corpus (several: one per corpus, comma-separated)")
    parser.add_argument("--label-map", default=None, help='merge/drop classes, e.g. "four-class"')
    parser.add_argument("--out", required=True, help="folder for cv.json, cv.md and the pooled report")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed (K-fold)")
    parser.add_argument("--max-folds", type=int, default=None, help="run only the first N folds (quick checks)")
    parser.add_argument("method_args", nargs=argparse.REMAINDER,
                        help="after --: options of the method's own command (e.g. -- --model light-cnn)")


def run(args: argparse.Namespace) -> int:
    """Cross-validate and write ``cv.json`` (everything), ``cv.md`` (tables) and the pooled report."""
    from ser.corpora import load_corpora
    from ser.metrics import write_report

    out = Path(args.out)
    method_args = list(args.method_args)
    if method_args[:1] == ["--"]:
        method_args = method_args[1:]
    options = method_options(args.method, method_args)
    dataset = load_corpora(args.corpus, args.root, label_map=args.label_map)
    folds = make_folds(dataset, args.folds, seed=args.seed)[: args.max_folds]
    result = cross_validate(dataset, args.method, folds, options)
    result.meta.update(corpus=args.corpus, fold_scheme=str(args.folds), method_args=method_args)
    title = f"{args.corpus}: {args.method} {' '.join(method_args)}, {args.folds} folds (speaker-independent)"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    table = markdown(result, title=title)
    (out / "cv.md").write_text(table, encoding="utf-8")
    write_report(result.pooled, out, title=f"{args.corpus} {args.method}: pooled over folds")
    print(table)
    return 0
