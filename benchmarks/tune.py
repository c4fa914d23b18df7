"""Tuned vs default probe options on EmoDB, scored on speakers the tuning never saw (nested CV).

For each outer speaker fold, an Optuna study (``finetune.tune.search``: TPE, median pruning on
the running fold UAR) tunes the probe's options on inner speaker folds of the outer *training*
speakers only; the best options and the defaults (``finetune.probe.ProbeOptions``) are then each
trained on all outer training speakers and scored on the outer test speakers. The mean outer UAR
of the two is the comparison; the inner best UAR (a selected maximum, so optimistic) is reported
beside it. Features come from the probe's hidden-state cache (the encoder runs once per clip).

Run: ``python benchmarks/tune.py [--trials 16] [--outer-folds 5] [--inner-folds 3]``. Needs
EmoDB at ``$SER_SHARED_DATA/emodb`` (default ../shared/data/emodb beside the checkout) for the
default corpus and exits 0 with a message when it is absent; ``--corpus folder --root DIR
--backbone TINY`` runs anywhere (tests/test_tune.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("SER_SHARED_DATA", REPO.parent / "shared" / "data"))
# The cache holds per-layer means (attentive pooling needs every frame), and a linear head fits in a
# second or two where L-BFGS on an MLP head took ~10 s a fold on a loaded 2-core machine.
DEFAULT_SPACE = ("pooling=mean", "head_hidden_size=0")


def outer_fold(dataset: Any, base: argparse.Namespace, space: list, train_idx: np.ndarray, test_idx: np.ndarray,
               number: int, args: argparse.Namespace) -> dict[str, Any]:
    """Tune on the training speakers' inner folds; score defaults and the tuned options on the test speakers."""
    import optuna

    from finetune import probe as fp
    from finetune import tune
    from finetune.data import speaker_groups

    started = time.perf_counter()
    folds = tune.inner_folds(dataset, train_idx, args.inner_folds, seed=args.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=0)
    study = tune.search(dataset, "probe", folds, base, space, trials=args.trials, storage=None,
                        study_name=f"outer-{number}", seed=args.seed + number, pruner=pruner)
    tuned = tune.best_options(study, space, base)
    search_s = time.perf_counter() - started
    scores = {}
    for name, options in (("default", base), ("tuned", tuned)):
        y_true, y_pred = fp.run_fold(dataset, train_idx, test_idx, options)
        scores[name] = tune.uar(y_true, y_pred)
    states = [trial.state.name for trial in study.trials]
    defaults = [trial for trial in study.trials if trial.user_attrs.get("defaults")]
    return {
        "fold": number,
        "test_speakers": sorted(set(speaker_groups(dataset)[test_idx].tolist())),
        "n_train": len(train_idx), "n_test": len(test_idx), "inner_folds": len(folds),
        "default_uar": scores["default"], "tuned_uar": scores["tuned"],
        "inner_best_uar": study.best_value,
        "inner_default_uar": defaults[0].value if defaults else None,
        "best_params": study.best_trial.params,
        "config": tune.recipe("probe", tuned, space),
        "trials": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "inner_fits": sum(len(trial.intermediate_values) for trial in study.trials),
        "search_s": round(search_s, 1),
    }


def _mean_std(values: list[float]) -> str:
    array = np.asarray(values, dtype=float)
    std = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.4f} ± {std:.4f}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Hyperparameter search: tuned vs default probe ({meta['corpus']}, {meta['backbone']})",
        "",
        (
            f"Nested speaker CV: {meta['outer_folds']} outer speaker folds; in each, {meta['trials']} Optuna trials "
            f"(TPE, median pruning after {meta['startup_trials']} trials) on {meta['inner_folds']} inner speaker folds "
            f"of the training speakers only; then defaults and the best options are each trained on all training "
            f"speakers and scored on the outer test speakers, never used for selection. {meta['clips']} clips, "
            f"{meta['speakers']} speakers. Search space: {meta['space']}."
        ),
        "",
        "| outer fold | test speakers | default UAR | tuned UAR | inner UAR: default / best | trials (pruned) | best params |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        inner_default = "-" if row["inner_default_uar"] is None else f"{row['inner_default_uar']:.4f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["best_params"].items())
        lines.append(
            f"| {row['fold']} | {', '.join(row['test_speakers'])} | {row['default_uar']:.4f} | {row['tuned_uar']:.4f} | "
            f"{inner_default} / {row['inner_best_uar']:.4f} | {row['trials']} ({row['pruned']}) | {params} |"
        )
    lines += [
        f"| **mean ± std** | | **{_mean_std([r['default_uar'] for r in rows])}** | "
        f"**{_mean_std([r['tuned_uar'] for r in rows])}** | | | |",
        "",
        (
            f"Search: {meta['search_s']:.0f} s in all, {meta['inner_fits']} inner fold fits "
            f"({meta['inner_fits_unpruned']} without pruning); torch threads {meta['torch_threads']}, "
            f"load average {meta['loadavg_before'][0]:.1f} before, {meta['loadavg_after'][0]:.1f} after."
        ),
        "",
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="emodb")
    parser.add_argument("--root", type=Path, default=SHARED_DATA / "emodb")
    parser.add_argument("--backbone", default="whisper-base-offline")
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16, help="Optuna trials per outer fold (the first: defaults)")
    parser.add_argument("--startup-trials", type=int, default=4, help="trials before the median pruner acts")
    parser.add_argument("--space", action="append", default=None, metavar="NAME=SPEC",
                        help=f"override the probe's search space (default: {' '.join(DEFAULT_SPACE)})")
    parser.add_argument("--cache-dir", default=None, help="hidden-state cache (default $SER_CACHE_DIR/features)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "tune", help="output path without suffix")
    args = parser.parse_args(argv)
    if not args.root.is_dir() or (args.corpus == "emodb" and not (args.root / "wav").is_dir()):
        print(f"{args.corpus} not found at {args.root}: nothing to benchmark (set SER_SHARED_DATA or --root)")
        return 0

    import optuna
    import torch

    from finetune import probe as fp
    from finetune import tune
    from finetune.cv import make_folds, method_options
    from finetune.data import speaker_groups
    from ser.corpora import load_corpus

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    loadavg_before = os.getloadavg()
    dataset = load_corpus(args.corpus, args.root)
    method_args = ["--model", args.backbone] + (["--cache-dir", args.cache_dir] if args.cache_dir else [])
    base = method_options("probe", method_args)
    overrides = list(DEFAULT_SPACE) if args.space is None else args.space
    space = tune.override_space("probe", tune.probe_space(), overrides)
    started = time.perf_counter()
    fp.load_features(dataset, base)
    features_s = time.perf_counter() - started
    rows = []
    for number, (train_idx, test_idx) in enumerate(make_folds(dataset, args.outer_folds, seed=args.seed)):
        rows.append(outer_fold(dataset, base, space, train_idx, test_idx, number, args))
        print(f"outer fold {number}: default {rows[-1]['default_uar']:.4f}, tuned {rows[-1]['tuned_uar']:.4f} "
              f"({rows[-1]['search_s']} s)", flush=True)
    meta = {
        "corpus": args.corpus, "backbone": args.backbone, "clips": len(dataset),
        "speakers": len(set(speaker_groups(dataset).tolist())), "outer_folds": args.outer_folds,
        "inner_folds": args.inner_folds, "trials": args.trials, "startup_trials": args.startup_trials,
        "space": "; ".join(_describe(param) for param in space), "space_overrides": overrides,
        "features_s": round(features_s, 1), "search_s": sum(row["search_s"] for row in rows),
        "inner_fits": sum(row["inner_fits"] for row in rows),
        "inner_fits_unpruned": sum(row["trials"] * row["inner_folds"] for row in rows),
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "optuna": optuna.__version__,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
    }
    summary = {
        key: {"mean": float(np.mean([row[f"{key}_uar"] for row in rows])),
              "std": float(np.std([row[f"{key}_uar"] for row in rows], ddof=1)) if len(rows) > 1 else 0.0}
        for key in ("default", "tuned")
    }
    table = markdown(meta, rows)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "summary": summary, "outer_folds": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(table)
    return 0


def _describe(param: Any) -> str:
    when = f" if {param.when[0]}={param.when[1]}" if param.when else ""
    if param.choices is not None:
        return f"{param.name} in {{{', '.join(map(str, param.choices))}}}{when}"
    scale = " (log)" if param.log else ""
    return f"{param.name} {param.low:g}..{param.high:g}{scale}{when}"


if __name__ == "__main__":
    sys.exit(main())
