"""``python -m finetune tune``: Optuna search of a method's options on speaker-independent folds.

A recipe tuned on one speaker split fits those speakers; the objective here is the mean UAR over
speaker-disjoint folds (``finetune.cv.make_folds``), each fold trained by the method's own
``run_fold``, so a trial is scored the way ``python -m finetune cv`` would score it. The study
lives in SQLite, so an interrupted search resumes where it stopped; a trial whose running UAR
falls below the median of earlier trials after some folds is pruned, which skips most of the cost
of bad regions. The best options are written as ``best_config.json`` (the method's option names,
as its ``run_fold`` reads them) and printed as command-line flags::

    python -m finetune tune --method probe --corpus emodb --root DIR --out runs/tune --trials 30 \\
        --space pooling=mean -- --backbone whisper-base-offline
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from finetune.cv import METHODS, make_folds, method_module, method_options

CONFIG_NAME = "best_config.json"
# Method options never written to the config: where a run caches, saves and validates is its own, not
# the recipe's (the data and output flags are the commands', not the methods' options).
NOT_RECIPE = ("cache_dir", "model_dir", "val")


@dataclass(frozen=True)
class Param:
    """One searched option: a float/int range (``log`` scale) or categorical ``choices``.

    ``when`` = (option, value): sampled only when that option has that value (AdamW's learning
    rate means nothing to L-BFGS); otherwise the option keeps its base value.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    when: tuple[str, Any] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return self.choices[0] if len(self.choices) == 1 else trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def probe_space() -> list[Param]:
    """Frozen-encoder probe: pooling, how layers are combined, head size and L2 (L-BFGS by default)."""
    from ser.probe import LAYER_MIXES, POOLINGS

    return [
        Param("pooling", choices=POOLINGS),
        Param("layer_mix", choices=LAYER_MIXES),
        Param("head_hidden_size", choices=(0, 64, 256)),
        Param("optimizer", choices=("lbfgs",)),  # widen with --space optimizer=lbfgs,adamw
        Param("l2", 1e-5, 1.0, log=True, when=("optimizer", "lbfgs")),
        Param("lr", 1e-4, 1e-2, log=True, when=("optimizer", "adamw")),
        Param("weight_decay", 1e-4, 1e-1, log=True, when=("optimizer", "adamw")),
        Param("dropout", 0.0, 0.5, when=("optimizer", "adamw")),
    ]


def classical_space() -> list[Param]:
    """Hand-crafted features: feature set and estimator (the SVM already grid-searches C and gamma
    inside the training speakers, ``finetune.classical._tuned_svm``)."""
    from finetune.classical import ESTIMATORS
    from ser.classical import FEATURE_SETS

    return [Param("features", choices=FEATURE_SETS), Param("estimator", choices=ESTIMATORS)]


def train_space() -> list[Param]:
    """Light models (CNN/BiLSTM on log-mel or MFCC): learning rate, weight decay, batch size."""
    from ser.light_models import LIGHT_MODELS

    return [
        Param("model", choices=LIGHT_MODELS),
        Param("learning_rate", 1e-4, 1e-2, log=True),
        Param("weight_decay", 1e-4, 1e-1, log=True),
        Param("per_device_train_batch_size", choices=(8, 16, 32)),
    ]


SPACES: dict[str, Callable[[], list[Param]]] = {"probe": probe_space, "classical": classical_space, "train": train_space}


def default_space(method: str) -> list[Param]:
    if method not in SPACES:
        raise ValueError(f"no search space for {method!r}; choose one of {', '.join(SPACES)}")
    return SPACES[method]()


# --- overrides: --space NAME=a,b | NAME=LOW:HIGH | NAME=VALUE --------------------------------------------


def _fields(method: str) -> dict[str, Field[Any]]:
    """The fields of the method's options dataclass by name (the option names ``run_fold`` reads)."""
    return {option.name: option for option in fields(method_module(method).OPTIONS) if option.init}


def _cast(option: Field[Any] | None, text: str) -> Any:
    """A value as the method's parser would have typed it (by the type of the field's default)."""
    default = None if option is None else option.default
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{option.name} takes true or false, not {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(default, int) and "." not in text:
        return int(text)
    if isinstance(default, (int, float)):
        return float(text)  # a float field, or a fractional value for an int field's range
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def override_space(method: str, space: Sequence[Param], overrides: Sequence[str]) -> list[Param]:
    """Narrow or widen single parameters: ``NAME=a,b`` choices, ``NAME=LOW:HIGH`` a range, ``NAME=V`` fixed."""
    actions = _fields(method)
    params = {param.name: param for param in space}
    for item in overrides:
        name, sep, spec = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not spec:
            raise ValueError(f"--space wants NAME=SPEC, not {item!r}")
        if name not in actions:
            raise ValueError(f"{method} has no option {name!r}; known: {', '.join(sorted(actions))}")
        old = params.get(name, Param(name))
        if ":" in spec and "," not in spec:
            low, high = (_cast(actions[name], part) for part in spec.split(":", 1))
            integer = isinstance(low, int) and isinstance(high, int) and old.choices is None and (old.integer or old.low is None)
            params[name] = replace(old, low=low, high=high, choices=None, integer=integer)
        else:
            params[name] = replace(old, low=None, high=None, choices=tuple(_cast(actions[name], v) for v in spec.split(",")))
    return list(params.values())


# --- the objective -----------------------------------------------------------------------------------


def uar(y_true: Any, y_pred: Any) -> float:
    """Unweighted average recall over the classes present in ``y_true`` (``ser.metrics``' UAR)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def sample(trial: Any, space: Sequence[Param], base: Any) -> Any:
    """The base options with this trial's values; conditional parameters follow their condition."""
    options = copy.copy(base)
    for param in space:
        if param.when is not None and getattr(options, param.when[0], None) != param.when[1]:
            continue
        setattr(options, param.name, param.suggest(trial))
    return options


def objective(
    dataset: Any,
    method: str,
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    base: Any,
    space: Sequence[Param],
) -> Callable[[Any], float]:
    """Mean fold UAR of a trial's options; the running mean is reported after every fold for pruning."""
    import optuna

    run_fold = method_module(method).run_fold

    def score(trial: Any) -> float:
        options = sample(trial, space, base)
        scores: list[float] = []
        for step, (train_idx, test_idx) in enumerate(folds):
            y_true, y_pred = run_fold(dataset, train_idx, test_idx, options)
            scores.append(uar(y_true, y_pred))
            trial.report(float(np.mean(scores)), step)
            if step + 1 < len(folds) and trial.should_prune():
                trial.set_user_attr("fold_uar", scores)
                raise optuna.TrialPruned(f"running UAR {np.mean(scores):.4f} after {step + 1} folds")
        trial.set_user_attr("fold_uar", scores)
        return float(np.mean(scores))

    return score


def default_params(space: Sequence[Param], base: Any) -> dict[str, Any]:
    """The base (default) values of the searched parameters, to enqueue as trial 0; empty when a
    default lies outside the space (then no trial is the defaults)."""
    options = copy.copy(base)
    values: dict[str, Any] = {}
    for param in space:
        if param.when is not None and getattr(options, param.when[0], None) != param.when[1]:
            continue
        if param.choices is not None and len(param.choices) == 1:
            setattr(options, param.name, param.choices[0])  # fixed, not a distribution of the study
            continue
        value = getattr(options, param.name, None)
        inside = (value in param.choices) if param.choices is not None else (
            value is not None and param.low <= value <= param.high
        )
        if not inside:
            return {}
        values[param.name] = value
    return values


FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def search(
    dataset: Any,
    method: str,
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    base: Any,
    space: Sequence[Param],
    *,
    trials: int,
    storage: str | None,
    study_name: str,
    seed: int = 0,
    pruner: Any = None,
    progress: bool = False,
) -> Any:
    """Run the study until it holds ``trials`` finished trials (a resumed study only adds the rest).

    A new study's first trial is the base (default) options, so the best is never worse than the
    defaults on these folds.
    """
    import optuna

    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize", load_if_exists=True, pruner=pruner
    )
    # Seeded by the trials already run, so a resumed study does not replay the same random start.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    if not study.trials:
        defaults = default_params(space, base)
        if defaults:
            study.enqueue_trial(defaults, user_attrs={"defaults": True})
    done = sum(trial.state.name in FINISHED for trial in study.trials)
    if trials > done:
        study.optimize(objective(dataset, method, folds, base, space), n_trials=trials - done, show_progress_bar=progress)
    return study


def best_options(study: Any, space: Sequence[Param], base: Any) -> Any:
    """The base options with the best trial's values (and the fixed single-choice parameters)."""
    options = copy.copy(base)
    for param in space:
        if param.choices is not None and len(param.choices) == 1:
            setattr(options, param.name, param.choices[0])
    for name, value in study.best_trial.params.items():
        setattr(options, name, value)
    return options


def inner_folds(
    dataset: Any, train_idx: Sequence[int], folds: str | int, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaker folds of the training rows only (indices into ``dataset``): nested tuning that never
    sees an outer fold's test speakers."""
    from finetune.data import speaker_groups

    train_idx = np.asarray(train_idx, dtype=int)
    subset = {"speaker": speaker_groups(dataset)[train_idx].tolist(), "label": np.asarray(dataset["label"])[train_idx].tolist()}
    return [(train_idx[fit], train_idx[held]) for fit, held in make_folds(subset, folds, seed=seed)]


# --- the config file ---------------------------------------------------------------------------------


def recipe(method: str, options: Any, space: Sequence[Param]) -> dict[str, Any]:
    """The options worth writing, by name: every searched one (whose condition holds), and every other
    that differs from the method's default."""
    defaults = method_options(method, [])
    searched = {p.name for p in space if p.when is None or getattr(options, p.when[0], None) == p.when[1]}
    values = {}
    for name in sorted(set(_fields(method)) - set(NOT_RECIPE)):
        value = getattr(options, name, getattr(defaults, name))
        if name in searched or value != getattr(defaults, name):
            values[name] = value
    return values


def command_flags(method: str, config: Mapping[str, Any]) -> list[str]:
    """The same options as command-line flags of ``python -m finetune METHOD`` (HfArgumentParser
    takes ``--name VALUE`` for every field, booleans as true/false)."""
    known = _fields(method)
    flags: list[str] = []
    for name, value in config.items():
        if name not in known:
            raise ValueError(f"{method} has no option {name!r}")
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", _flag_value(value)]
    return flags


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest exact float


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """A flat JSON object of option names -> values: a config file for the method's command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(config), indent=2) + "\n", encoding="utf-8")
    return path


def trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for trial in study.trials:
        value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
        rows.append({
            "number": trial.number, "state": trial.state.name, "value": value, "params": trial.params,
            "folds_run": len(trial.intermediate_values), "defaults": bool(trial.user_attrs.get("defaults")),
        })
    return rows


# --- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=tuple(METHODS), required=True, help="training method whose options to tune")
    parser.add_argument("--corpus", required=True, help="corpus name known to ser.corpora (e.g. emodb), or several: emodb,nemo")
    parser.add_argument("--root", required=True, help="folder holding the corpus (several: comma-separated)")
    parser.add_argument("--label-map", default=None, help='merge/drop classes, e.g. "four-class"')
    parser.add_argument("--out", required=True, help="folder for study.db, best_config.json and tune.json")
    parser.add_argument("--folds", default="5", help="'loso', 'loco' or a number K of speaker folds (the objective)")
    parser.add_argument("--trials", type=int, default=30, help="finished trials the study should hold (resuming adds the rest)")
    parser.add_argument("--space", action="append", default=[], metavar="NAME=SPEC",
                        help="override one parameter: NAME=a,b (choices), NAME=LOW:HIGH (range), NAME=VALUE (fixed)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", default=None, help="default: METHOD-CORPUS")
    parser.add_argument("--pruner", choices=("median", "none"), default="median",
                        help="median: stop a trial whose running fold UAR is below the median of earlier trials")
    parser.add_argument("--startup-trials", type=int, default=5, help="trials run to the end before pruning starts")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment and sampler seed")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("method_args", nargs=argparse.REMAINDER,
                        help="after --: fixed options of the method's own command (e.g. -- --model whisper-base-offline)")


def run(args: Any) -> int:
    """Search, then write ``best_config.json`` (the options) and ``tune.json`` (every trial), print the flags."""
    import optuna

    from ser.corpora import load_corpora

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    method_args = list(args.method_args)
    if method_args[:1] == ["--"]:
        method_args = method_args[1:]
    base = method_options(args.method, method_args)
    space = override_space(args.method, default_space(args.method), args.space)
    dataset = load_corpora(args.corpus, args.root, label_map=args.label_map)
    folds = make_folds(dataset, args.folds, seed=args.seed)
    prepare = getattr(method_module(args.method), "prepare", None)
    if prepare is not None:
        prepare(dataset, base)  # encode / extract features once, before the first trial
    pruner = (
        optuna.pruners.NopPruner() if args.pruner == "none"
        else optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=0)
    )
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = args.study_name or f"{args.method}-{args.corpus.replace(',', '+')}"
    study = search(dataset, args.method, folds, base, space, trials=args.trials, storage=storage, study_name=name,
                   seed=args.seed, pruner=pruner, progress=True)
    config = recipe(args.method, best_options(study, space, base), space)
    write_config(out / CONFIG_NAME, config)
    flags = command_flags(args.method, config)
    summary = {
        "method": args.method, "corpus": args.corpus, "folds": str(args.folds), "n_folds": len(folds),
        "study": name, "storage": storage, "best_uar": study.best_value, "best_trial": study.best_trial.number,
        "config": config, "flags": flags, "trials": trial_rows(study),
    }
    (out / "tune.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    states = [trial.state.name for trial in study.trials]
    print(
        f"{len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned); "
        f"best mean UAR {study.best_value:.4f} over {len(folds)} speaker folds (trial {study.best_trial.number})"
    )
    print(f"config: {out / CONFIG_NAME}")
    print(f"python -m finetune {args.method} --corpus {args.corpus} --root {args.root} --out OUT {' '.join(flags)}")
    return 0

