"""Leave-one-corpus-out: how a probe recipe holds up on a corpus, language and set of voices it never heard.

For each backbone and recipe, every corpus in turn is held out: the probe trains on the others and
is tested on it. Reported per held-out corpus:

- **4-class UAR** over its neutral / happy / sad / angry clips (TurEV-DB's "calm" as neutral). A
  prediction of another class (a 7-class model saying "fearful") counts as wrong: no restriction
  of the model's output to the four classes;
- **shared UAR**: over every clip whose emotion the training corpora also have;
- **neutral recall** and the recall of every class;

in three modes: single clips with no adaptation (the plain head), and the speaker-adapted head with
each test speaker standardised by the statistics of all their clips, or of only ``--context``
randomly drawn clips of theirs (what a user who recorded that many clips gets). The in-corpus
leave-one-speaker-out UAR of the same recipe stands beside it (``--in-corpus``).

    python benchmarks/generalization.py --roots emodb=DIR,nemo=DIR,emovo=DIR,turev=DIR

Writes benchmarks/results/generalization.{json,md}. Features come from the probe's cache
(``finetune.cache``): the encoder runs once per clip and backbone.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune import probe as fp  # noqa: E402
from finetune.cv import cross_validate  # noqa: E402
from finetune.data import loco_folds, loso_folds, speaker_groups  # noqa: E402
from ser.adaptation import speaker_stats, standardise  # noqa: E402
from ser.corpora import label_names, load_corpora  # noqa: E402
from ser.labels import FOUR_CLASS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MODES = ("single clip", "adapted (all clips)", "adapted (context)")


@dataclass(frozen=True)
class Recipe:
    """A probe recipe: the label set it learns and the options of ``finetune.probe``."""

    name: str
    label_map: str  # "harmonised" (every shared emotion) or "four-class"
    options: dict[str, Any] = field(default_factory=dict)
    # Corpora only ever tested on, never trained on (TurEV-DB's licence forbids derived models: the
    # shipped default model cannot learn from it, so its recipe is measured that way too).
    evaluation_only: tuple[str, ...] = ()


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe("4 classes, class-balanced", "four-class", {"l2": 1e-2}),
        Recipe("4 classes, corpus-balanced", "four-class", {"l2": 1e-2, "balance": "corpus"}),
        Recipe("harmonised classes, class-balanced", "harmonised", {"l2": 1e-2}),
        Recipe(
            "4 classes, corpus-balanced, TurEV-DB evaluation only (the default model's)", "four-class",
            {"l2": 1e-2, "balance": "corpus"}, evaluation_only=("turev",),
        ),
        Recipe(
            "4 classes, corpus-balanced, from layer 2 up, TurEV-DB evaluation only", "four-class",
            {"l2": 1e-2, "balance": "corpus", "first_layer": 2}, evaluation_only=("turev",),
        ),
    )
}


def recalls(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    return {c: float(np.mean(y_pred[y_true == c] == c)) for c in classes if (y_true == c).any()}


def scores(y_true: np.ndarray, y_pred: np.ndarray, trained: list[str]) -> dict[str, Any]:
    """4-class UAR (other predictions count as wrong), shared-label UAR, neutral and per-class recall."""
    four = np.isin(y_true, FOUR_CLASS)
    per_class_four = recalls(y_true[four], y_pred[four], list(FOUR_CLASS))
    shared = np.isin(y_true, trained)
    per_class = recalls(y_true[shared], y_pred[shared], trained)
    return {
        "uar_4": float(np.mean(list(per_class_four.values()))),
        "uar_shared": float(np.mean(list(per_class.values()))),
        "neutral_recall": per_class_four.get("neutral"),
        "recall": per_class,
        "n": int(shared.sum()),
    }


def context_standardised(
    features: fp.CachedFeatures, groups: np.ndarray, rows: np.ndarray, prior: np.ndarray, k: int, seed: int
) -> fp.CachedFeatures:
    """Test rows standardised by statistics of only ``k`` random clips of each speaker."""
    rng = np.random.default_rng(seed)
    means = features.means.numpy().copy()
    for group in np.unique(groups[rows]):
        own = rows[groups[rows] == group]
        context = rng.choice(own, size=min(k, len(own)), replace=False)
        means[own] = standardise(means[own], speaker_stats(means[context], prior))
    return fp.CachedFeatures(torch.from_numpy(means), None, features.clip, features.copy)


def evaluate_fold(dataset, features, options, train_idx, test_idx, context: int) -> dict[str, dict[str, Any]]:
    names = np.asarray(label_names(dataset))
    y_true = names[np.asarray(dataset["label"])[test_idx]]
    trained = sorted(set(names[np.asarray(dataset["label"])[train_idx]].tolist()))
    test_rows = features.rows(test_idx, with_copies=False)
    head, _, _ = fp.fit_head(dataset, train_idx, features, options)
    plain = names[fp.predict_rows(head, features, test_rows)]
    adapted_head, adapted = fp.fit_speaker_head(dataset, train_idx, features, options)
    everything = names[fp.predict_rows(adapted_head.head, adapted, test_rows)]
    groups = speaker_groups(dataset)[features.clip]
    few = context_standardised(features, groups, test_rows, adapted_head.prior_std.numpy(), context, options.seed)
    with_context = names[fp.predict_rows(adapted_head.head, few, test_rows)]
    return {mode: scores(y_true, pred, trained) for mode, pred in zip(MODES, (plain, everything, with_context))}


def in_corpus_loso(dataset, options, corpus: str) -> float:
    """Leave-one-speaker-out UAR inside one corpus (plain head): the usual in-corpus figure (``finetune.cv``)."""
    rows = np.flatnonzero(np.asarray(dataset["corpus"]) == corpus)
    folds = [(rows[train], rows[test]) for train, test in loso_folds(dataset.select(rows))]
    plain = fp.options_from({**asdict(options), "adapt": False})
    return cross_validate(dataset, "probe", folds, plain, progress=False).pooled["uar"]


def run(backbone: str, recipe: Recipe, names: list[str], roots: list[str], args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_corpora(names, roots, label_map=recipe.label_map)
    options = fp.options_from({**recipe.options, "backbone": backbone, "adapt": True, "cache_dir": args.cache_dir})
    features = fp.load_features(dataset, options)
    started = time.perf_counter()
    corpora = np.asarray(dataset["corpus"])
    held_out = {}
    for train_idx, test_idx in loco_folds(dataset, evaluation_only=recipe.evaluation_only):
        corpus = str(corpora[test_idx[0]])
        held_out[corpus] = evaluate_fold(dataset, features, options, train_idx, test_idx, args.context)
        if args.in_corpus:
            held_out[corpus]["in-corpus LOSO UAR"] = in_corpus_loso(dataset, options, corpus)
        print(backbone, recipe.name, corpus, {m: round(held_out[corpus][m]["uar_4"], 3) for m in MODES}, flush=True)
    means = {mode: float(np.mean([r[mode]["uar_4"] for r in held_out.values()])) for mode in MODES}
    return {
        "backbone": backbone,
        "recipe": asdict(recipe),
        "labels": label_names(dataset),
        "held_out": held_out,
        "mean_uar_4": means,
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(results: list[dict[str, Any]], context: int) -> str:
    lines = [
        "# Leave-one-corpus-out: 4-class UAR on a corpus never heard in training",
        "",
        f"Train on the other corpora, test on the named one. Modes: a single clip (plain head); the "
        f"speaker-adapted head with each test speaker standardised by all their clips, or by {context} "
        "random clips of theirs. Neutral recall in brackets. Regenerate: `python benchmarks/generalization.py`.",
        "",
    ]
    corpora = list(results[0]["held_out"]) if results else []
    header = "| backbone | recipe | mode | " + " | ".join(corpora) + " | **mean** |"
    lines += [header, "|" + "---|" * (4 + len(corpora))]
    for result in results:
        for mode in MODES:
            cells = [
                f"{r[mode]['uar_4']:.3f} ({r[mode]['neutral_recall']:.2f})" for r in result["held_out"].values()
            ]
            lines.append(
                f"| {result['backbone']} | {result['recipe']['name']} | {mode} | "
                + " | ".join(cells)
                + f" | **{result['mean_uar_4'][mode]:.3f}** |"
            )
    in_corpus = [r for r in results if any("in-corpus LOSO UAR" in c for c in r["held_out"].values())]
    if in_corpus:
        lines += ["", "In-corpus leave-one-speaker-out UAR of the same recipe (its own label set, single clips):", ""]
        lines += ["| backbone | recipe | " + " | ".join(corpora) + " |", "|" + "---|" * (2 + len(corpora))]
        for result in in_corpus:
            cells = [f"{c.get('in-corpus LOSO UAR', float('nan')):.3f}" for c in result["held_out"].values()]
            lines.append(f"| {result['backbone']} | {result['recipe']['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def merged(previous: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier rows of other backbones or recipes are kept: one run may measure only some of them."""
    if not previous.is_file():
        return results
    key = lambda result: (result["backbone"], result["recipe"]["name"])  # noqa: E731
    fresh = {key(result) for result in results}
    kept = [r for r in json.loads(previous.read_text(encoding="utf-8"))["results"] if key(r) not in fresh]
    return kept + results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", required=True, help="name=DIR per corpus, comma-separated (at least two)")
    parser.add_argument("--backbones", default="whisper-base-offline,whisper-tiny.en-offline")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), metavar="RECIPE",
                        help=f"recipe names, of: {'; '.join(RECIPES)}")
    parser.add_argument("--context", type=int, default=10, help="clips per test speaker in the context mode")
    parser.add_argument("--in-corpus", action="store_true", help="also the in-corpus LOSO UAR of each recipe")
    parser.add_argument("--cache-dir", default=None, help="hidden-state cache (default $SER_CACHE_DIR/features)")
    parser.add_argument("--out", default=str(RESULTS / "generalization"), help="output path without suffix")
    args = parser.parse_args(argv)
    pairs = [item.split("=", 1) for item in args.roots.split(",")]
    names, roots = [name for name, _ in pairs], [root for _, root in pairs]
    results = [
        run(backbone, RECIPES[recipe], names, roots, args)
        for backbone in args.backbones.split(",")
        for recipe in args.recipes
    ]
    out = Path(args.out)
    results = merged(out.with_suffix(".json"), results)
    table = markdown(results, args.context)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
