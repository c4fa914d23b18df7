"""``python -m finetune retrain``: the labels saved in the app, plus a corpus, become the next model.

This closes the loop from a correction in the browser to a better model: the annotation store's
resolved labels are merged with an optional base corpus (a correction overrides the corpus label
of the same audio, matched by the store's content hash, not by file name), a frozen-encoder probe
is trained on the result, and the new model is scored against the model now serving on the same
speaker-independent test set: the corpus's held-out speakers plus a held-out slice of the
corrections, each correction without a speaker being its own group. A version that scores a
lower UAR than the serving model is not written (unless ``--force``), so retraining can never
silently make the app worse. The app runs this as a child process and reads its progress lines.

Exit codes: 0 a version was written, 3 it was rejected as worse, 2 bad input (nothing to train
on, too few speakers, missing store or corpus), 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset
from tqdm.auto import tqdm

from finetune.card import corpus_licence, write_run_outputs
from finetune.data import check_speaker_disjoint, speaker_groups, train_val_test_split
from finetune.probe import (
    ProbeOptions,
    build_probe,
    fit_head,
    fit_speaker_head,
    load_features,
    options_from,
    predict_rows,
    train_probe,
)
from ser.audio import InvalidAudio
from ser.backbones import DEFAULT_BACKBONE, is_encoder_model_type
from ser.corpora import CorpusError, concatenate_corpora, label_names, load_corpus, waveform, with_label_names
from ser.labels import EMOTIONS, canonical
from ser.metrics import compute_metrics
from ser.model import ModelLoadError, Predictor
from ser.probe import BACKBONE_SUBDIR, ProbeConfig, ProbeForAudioClassification, ProbeHead, SpeakerAdaptedHead
from ser.store import DB_NAME, POLICIES, AnnotationStore, Resolution, clip_sha256

EXIT_WRITTEN, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 1, 2, 3
STORE_CORPUS = "store"  # the ``corpus`` value of rows that come from the annotation store alone
STAGES = 7
_VERSION_RE = re.compile(r"^v(\d+)-")


class RetrainInputError(ValueError):
    """A problem the user can fix (no data, too few speakers, missing store): exit code 2."""


@dataclass
class TrainingData:
    """The merged training set and what the corrections contributed to it."""

    dataset: Dataset  # audio, label, speaker, corpus, path
    corrections: int  # resolved store clips used
    overridden: int  # corpus clips whose label came from the store
    changed: int  # ... of which the store's label differs from the corpus's
    skipped: dict[str, int]  # store clips left out by the label policy, by reason


@dataclass
class Decision:
    accepted: bool
    reason: str


@dataclass
class ServingModel:
    """The model to beat: its version and folder, and its metrics once scored on the test clips."""

    version: str
    path: str
    metrics: dict[str, Any] | None = None


def stage(number: int, text: str) -> None:
    """One progress line per stage, flushed at once so the app can stream it."""
    print(f"[retrain {number}/{STAGES}] {text}", flush=True)


# --- data ------------------------------------------------------------------------------------------


def store_corrections(store: AnnotationStore, policy: str = "majority") -> Resolution:
    """The store's labels settled by ``policy``; a clip without a speaker becomes its own group.

    Speakerless clips get speaker ``clip-<sha prefix>``, so a speaker-independent split never puts
    one clip's labels on both sides.
    """
    resolution = store.resolve(policy)
    for clip in resolution.clips:
        clip.speaker = clip.speaker or f"clip-{clip.sha256[:12]}"
    return resolution


def content_hashes(corpus: Dataset) -> list[str | None]:
    """The store's id of every corpus clip (None where the audio cannot be decoded)."""
    hashes: list[str | None] = []
    for row in tqdm(corpus.select_columns(["audio", "path"]), desc="matching corpus clips to corrections"):
        try:
            hashes.append(clip_sha256(waveform(row)))
        except InvalidAudio:
            hashes.append(None)
    return hashes


def merge_training_data(store: AnnotationStore, corpus: Dataset | None, resolution: Resolution) -> TrainingData:
    """Corpus + corrections in one dataset on the label set they use; corrections win on the same audio.

    A store clip whose audio is a corpus clip relabels that row (keeping its speaker, so the split
    still keeps that speaker on one side) instead of being added a second time.
    """
    fixes = {clip.sha256: clip.label for clip in resolution.clips}
    hashes = content_hashes(corpus) if corpus is not None and fixes else []
    overrides = {i: fixes[sha] for i, sha in enumerate(hashes) if sha in fixes}  # corpus row -> label
    matched = {hashes[i] for i in overrides}
    rest = Resolution(clips=[clip for clip in resolution.clips if clip.sha256 not in matched])
    original = [] if corpus is None else [label_names(corpus)[i] for i in corpus["label"]]
    final = [overrides.get(i, label) for i, label in enumerate(original)] + [clip.label for clip in rest.clips]
    if not final:
        raise RetrainInputError(
            "nothing to train on: the store has no resolved labels "
            f"(left out: {dict(resolution.skipped) or 'none'}) and no --corpus was given"
        )
    names = [name for name in EMOTIONS if name in set(final)]
    parts = [] if corpus is None else [_relabel(corpus, final[: len(original)], names)]
    if rest.clips:
        parts.append(with_label_names(store.dataset_from(rest), names))
    return TrainingData(
        dataset=concatenate_corpora(parts),
        corrections=len(resolution.clips),
        overridden=len(overrides),
        changed=sum(original[i] != label for i, label in overrides.items()),
        skipped=dict(resolution.skipped),
    )


def _relabel(corpus: Dataset, labels: list[str], names: list[str]) -> Dataset:
    """The corpus with one label per row (by name) on the class list ``names``."""
    features = corpus.features.copy()
    features["label"] = ClassLabel(names=names)
    ids = [names.index(label) for label in labels]
    return corpus.map(lambda _, i: {"label": ids[i]}, input_columns=["label"], with_indices=True,
                      features=features, desc="applying corrections to the corpus")


# --- split -----------------------------------------------------------------------------------------


def split_rows(dataset: Dataset, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speaker-disjoint train/test rows: ``holdout`` of the corpus's speakers (``finetune.data``) and
    of the store's speaker groups (a speakerless correction is a group of one) go to the test side.

    Both sides are stable from one retrain to the next (same corpus, seed and holdout): the corpus
    split is seeded, and a correction group's side is a hash of its name, so adding corrections
    never moves an old one. No version this command wrote has therefore trained on a clip that a
    later retrain tests on, and comparing with the serving model stays fair.
    """
    if not 0 < holdout < 1:
        raise RetrainInputError(f"--holdout must be between 0 and 1, got {holdout}")
    from_store = np.asarray(dataset["corpus"]) == STORE_CORPUS
    test = np.zeros(len(dataset), dtype=bool)
    corpus_rows = np.flatnonzero(~from_store)
    if len(corpus_rows):
        try:
            split = train_val_test_split(dataset.select(corpus_rows), val=0.0, test=holdout, seed=seed)
        except ValueError as error:
            raise RetrainInputError(f"cannot hold out corpus speakers: {error}") from error
        test[corpus_rows[split.test]] = True
    speakers = np.asarray(dataset["speaker"])  # a store row's group is its speaker (or clip-<sha>)
    store_groups = sorted(set(speakers[from_store].tolist()))
    held = {group for group in store_groups if _bucket(group, seed) < holdout}
    if not test.any() and not held and len(store_groups) >= 2:
        held = {min(store_groups, key=lambda group: _bucket(group, seed))}  # something to test on
    test |= from_store & np.isin(speakers, list(held))
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    if not len(test_idx):
        raise RetrainInputError(
            "nothing to test on: give a --corpus with several speakers, or label clips from at least two speakers"
        )
    check_speaker_disjoint(dataset, {"train": train_idx, "test": test_idx})
    return train_idx, test_idx


def _bucket(group: str, seed: int) -> float:
    """A stable number in [0, 1) for a group: its side of the split never changes."""
    return int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) / 2**32


# --- models ----------------------------------------------------------------------------------------


def default_backbone(model_dir: str | Path | None) -> str:
    """The encoder to probe: the serving model's own (a probe's backbone, or a fine-tuned encoder
    checkpoint itself), else the default offline encoder."""
    config_path = Path(model_dir) / "config.json" if model_dir else None
    if config_path is None or not config_path.is_file():
        return DEFAULT_BACKBONE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") == ProbeConfig.model_type:
        backbone = str(config.get("backbone") or DEFAULT_BACKBONE)
        embedded = Path(model_dir) / BACKBONE_SUBDIR
        if config.get("backbone_embedded") and not Path(backbone).is_dir() and embedded.is_dir():
            return str(embedded)  # the original encoder folder is gone (or was a hub id): use the copy
        return backbone
    if is_encoder_model_type(str(config.get("model_type"))):
        return str(model_dir)
    return DEFAULT_BACKBONE


def serving_model(store: AnnotationStore, base: str | None) -> ServingModel | None:
    """The model to beat: ``--base`` if given, else the store's active model (None: there is none)."""
    if base:
        if not Path(base).exists():
            raise RetrainInputError(f"--base {base} does not exist")
        return ServingModel(Path(base).name, str(base))
    active = store.active_model()
    return ServingModel(active["version"], active["path"]) if active else None


def score_model(model_dir: str, dataset: Dataset, test_idx: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Metrics of a saved model on the test rows, through ``Predictor`` as the app would run it.

    The label set is the union of the test labels and what the model can say, so a model that
    lacks a class the corrections introduced is scored on it (and gets no recall for it).
    """
    try:
        predictor = Predictor.from_pretrained(model_dir, runtime="eager")
    except (ModelLoadError, OSError) as error:
        raise RetrainInputError(
            f"cannot load the serving model at {model_dir} to compare with: {error} "
            "(pass --base with a model folder, or switch the app to a model that loads)"
        ) from error
    rows = dataset.select(test_idx).select_columns(["audio", "path"])
    predicted = []
    for row in tqdm(rows, desc=f"scoring {predictor.version}"):
        # any_length: the new model is scored on every test clip, however short, so the serving one is too
        probs = predictor.predict(waveform(row), any_length=True)
        predicted.append(_canonical_or_raw(max(probs, key=probs.get)))
    truth = [names[i] for i in np.asarray(dataset["label"])[test_idx]]
    known = set(names) | set(predicted)
    labels = [name for name in EMOTIONS if name in known] + sorted(known - set(EMOTIONS))
    return compute_metrics(truth, predicted, labels) | {"model_version": predictor.version,
                                                        "n_classes": len(predictor.labels)}


def _canonical_or_raw(label: str) -> str:
    try:
        return canonical(label)
    except KeyError:
        return label


def decide(new_uar: float, active_uar: float | None, *, force: bool = False, tolerance: float = 0.0,
           new_classes: int | None = None, serving_classes: int | None = None) -> Decision:
    """Keep the new model unless it scores a lower UAR than the serving one (beyond ``tolerance``)
    or can say fewer emotions than it; ``active_uar`` None means there is no serving model.

    A serving score that is missing or not a number is an error, never a zero to beat.
    """
    if active_uar is None:
        return Decision(True, "no serving model to compare with")
    if isinstance(active_uar, bool) or not isinstance(active_uar, (int, float)) or not math.isfinite(active_uar):
        raise ValueError(f"the serving model's UAR is not a number ({active_uar!r}): refusing to compare with it")
    if not isinstance(new_uar, (int, float)) or not math.isfinite(new_uar):
        raise ValueError(f"the new model's UAR is not a number ({new_uar!r})")
    problems = []
    if new_classes is not None and serving_classes is not None and new_classes < serving_classes:
        problems.append(f"the new model knows {new_classes} emotions, fewer than the serving model's {serving_classes}")
    if new_uar + tolerance < active_uar:
        problems.append(f"new UAR {new_uar:.4f} < serving model's {active_uar:.4f}")
    if not problems:
        return Decision(True, f"new UAR {new_uar:.4f} is not worse than the serving model's {active_uar:.4f}")
    if force:
        return Decision(True, f"forced (--force): {'; '.join(problems)}")
    return Decision(False, f"{'; '.join(problems)}: not adopted without confirmation (--force keeps it)")


def next_version(models_dir: Path, store: AnnotationStore) -> str:
    """``v<NNNN>-<UTC time>``, numbered after every version in the folder and in the store."""
    taken = [p.name for p in models_dir.iterdir()] if models_dir.is_dir() else []
    taken += [str(record["version"]) for record in store.list_models()]
    numbers = [int(match.group(1)) for name in taken if (match := _VERSION_RE.match(name.lstrip(".")))]
    from finetune.card import version_id  # the one version format; the v<NNNN> name keeps versions numbered

    return version_id(f"v{max(numbers, default=0) + 1:04d}", time.time())


def write_version(
    models_dir: Path,
    version: str,
    model: ProbeForAudioClassification,
    metrics: dict[str, Any],
    *,
    describe: dict[str, str],
    extra: dict[str, Any],
) -> Path:
    """Checkpoint, metrics.json, report + PNGs and model card, moved into place in one rename
    so the app never sees half a version."""
    target = models_dir / version
    partial = models_dir / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.config.ser_model_version = version
    model.save_pretrained(partial)
    write_run_outputs(partial, metrics, version=version, extra=extra, **describe)
    partial.rename(target)
    return target


# --- the command -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="annotation store folder (the app's --store)")
    parser.add_argument("--out", required=True, help="models folder: the new version is written in a subfolder")
    parser.add_argument("--corpus", default=None, help="base corpus known to ser.corpora (e.g. emodb); needs --root")
    parser.add_argument("--root", default=None, help="folder (or CSV) of the base corpus")
    parser.add_argument("--model", default=None, help="backbone to probe (default: the serving model's, else "
                        f"{DEFAULT_BACKBONE})")
    parser.add_argument("--base", default=None,
                        help="model directory to compare with (default: the store's active model)")
    parser.add_argument("--method", choices=("probe",), default="probe", help="training recipe (frozen-encoder probe)")
    parser.add_argument("--policy", choices=POLICIES, default="majority",
                        help="how several people's labels for one clip become one")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of corpus speakers and of correction groups held out for testing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.0, help="UAR the new model may lose and still be kept")
    parser.add_argument("--force", action="store_true", help="write the new version even when it scores worse")
    parser.add_argument("--activate", action="store_true", help="make the new version the store's active model")
    parser.add_argument("--keep-rejected", action="store_true",
                        help="write and register a rejected version too (never active; exit code 3 all the same), "
                        "so an admin can adopt it in a second, explicit step")
    parser.add_argument("--refit-all", dest="refit", action="store_true",
                        help="after the comparison, retrain on the test clips too (a better model, but the next "
                        "retrain can no longer compare with it fairly)")
    parser.add_argument("--epochs", type=int, default=None, help="upper bound on the head's epochs (probe default)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (probe default)")
    parser.add_argument("--cache-dir", default=None, help="hidden-state cache (default $SER_CACHE_DIR/features)")


def run(args: argparse.Namespace) -> int:
    """Retrain, compare, write and register; one line on stderr and exit 1/2 when something fails."""
    try:
        return retrain(args)
    except RetrainInputError as error:
        print(f"retrain: error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - the traceback goes to the log; the last line says what failed
        traceback.print_exc(file=sys.stderr)
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"retrain: failed: {type(error).__name__}: {message}", file=sys.stderr, flush=True)
        return EXIT_FAILED


def open_store(folder: str) -> AnnotationStore:
    if not (Path(folder) / DB_NAME).is_file():
        raise RetrainInputError(f"no annotation store at {folder} (no {DB_NAME}); pass the app's --store folder")
    return AnnotationStore(folder)


def load_base_corpus(name: str | None, root: str | None) -> Dataset | None:
    if name is None and root is None:
        return None
    if not (name and root):
        raise RetrainInputError("--corpus and --root go together")
    try:
        return load_corpus(name, root)
    except CorpusError as error:
        raise RetrainInputError(str(error)) from error


@dataclass
class Candidate:
    """The new model as evaluated: its head, its test metrics and the training log."""

    head: ProbeHead
    config: ProbeConfig
    options: ProbeOptions
    metrics: dict[str, Any]
    log: dict[str, Any]
    speaker_head: SpeakerAdaptedHead | None = None  # when the recipe has one


def priority_line() -> str:
    """How this process shares the machine (the app starts it niced, with fewer torch threads)."""
    import os

    import torch

    niceness = os.nice(0) if hasattr(os, "nice") else 0
    return f"  running at niceness {niceness} with {torch.get_num_threads()} torch thread(s)"


def retrain(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    print(priority_line(), flush=True)
    data = gather(args, store)
    train_idx, test_idx = split_stage(args, data.dataset)
    serving = serving_model(store, args.base)
    candidate = train_stage(args, data.dataset, train_idx, test_idx, serving)
    serving_metrics = None
    if serving is not None:
        stage(6, f"scoring the serving model {serving.version} on the same test clips")
        serving_metrics = score_model(serving.path, data.dataset, test_idx, candidate.metrics["labels"])
        uar = serving_metrics.get("uar")
        if isinstance(uar, bool) or not isinstance(uar, (int, float)) or not math.isfinite(uar):
            raise RuntimeError(f"the serving model {serving.version} could not be scored (UAR {uar!r}); "
                               "nothing was compared, nothing is written")
        print(f"  serving model: UAR {serving_metrics['uar']:.4f}, accuracy {serving_metrics['accuracy']:.4f}",
              flush=True)
        serving.metrics = serving_metrics
    else:
        stage(6, "no serving model to compare with")
    caveat = comparison_caveat(serving, args)
    if caveat:
        print(f"  caution: {caveat}", flush=True)
    decision = decide(candidate.metrics["uar"], serving_metrics["uar"] if serving_metrics else None,
                      force=args.force, tolerance=args.tolerance, new_classes=len(candidate.metrics["labels"]),
                      serving_classes=serving_metrics.get("n_classes") if serving_metrics else None)
    uars = f"new UAR {candidate.metrics['uar']:.4f}, serving UAR " + (
        f"{serving_metrics['uar']:.4f}" if serving_metrics else "n/a")
    result = {"decision": "accepted" if decision.accepted else "rejected", "reason": decision.reason,
              "new_uar": candidate.metrics["uar"], "serving_uar": serving_metrics["uar"] if serving_metrics else None}
    if not decision.accepted and not getattr(args, "keep_rejected", False):
        stage(7, f"decision: REJECTED: {decision.reason}")
        print(f"result: {json.dumps(result | {'version': None})}", flush=True)
        print(f"rejected ({uars}); nothing written", flush=True)
        return EXIT_REJECTED
    if not decision.accepted:  # --keep-rejected: written for an admin's explicit second step, never active
        stage(7, f"decision: NEEDS CONFIRMATION: {decision.reason}; writing it as a candidate")
        args.activate = False
        version, path = publish(args, store, data, candidate, test_idx,
                                serving=serving, decision=decision, caveat=caveat)
        print(f"result: {json.dumps(result | {'decision': 'needs_confirmation', 'version': version, 'path': str(path)})}",
              flush=True)
        print(f"candidate {version} written but not adopted ({uars})", flush=True)
        return EXIT_REJECTED
    stage(7, f"decision: accepted ({decision.reason}); writing the new version")
    version, path = publish(args, store, data, candidate, test_idx,
                            serving=serving,
                            decision=decision, caveat=caveat)
    print(f"result: {json.dumps(result | {'version': version, 'path': str(path)})}", flush=True)
    print(f"wrote {version} ({uars}) -> {path}" + ("; now active" if args.activate else ""), flush=True)
    return EXIT_WRITTEN


def gather(args: argparse.Namespace, store: AnnotationStore) -> TrainingData:
    """Stages 1-2: the store's settled labels merged into the base corpus."""
    stage(1, f"reading labels from {store.root} (policy: {args.policy})")
    resolution = store_corrections(store, args.policy)
    print(f"  {len(resolution.clips)} clips with a settled label; left out: {dict(resolution.skipped) or 'none'}",
          flush=True)
    stage(2, f"loading the base corpus {args.corpus} from {args.root}" if args.corpus else "no base corpus: store only")
    data = merge_training_data(store, load_base_corpus(args.corpus, args.root), resolution)
    print(f"  {len(data.dataset)} clips, classes {', '.join(label_names(data.dataset))}; corrections override "
          f"{data.overridden} corpus labels ({data.changed} changed)", flush=True)
    return data


def split_stage(args: argparse.Namespace, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    stage(3, f"speaker-independent split (holdout {args.holdout}, seed {args.seed})")
    train_idx, test_idx = split_rows(dataset, args.holdout, args.seed)
    from_store = np.asarray(dataset["corpus"]) == STORE_CORPUS
    print(f"  train {len(train_idx)} clips / test {len(test_idx)} clips ({int(from_store[test_idx].sum())} of them "
          f"corrections) from {len(set(speaker_groups(dataset)[test_idx].tolist()))} held-out speakers or "
          "correction groups", flush=True)
    return train_idx, test_idx


def train_stage(
    args: argparse.Namespace, dataset: Dataset, train_idx: np.ndarray, test_idx: np.ndarray,
    serving: ServingModel | None
) -> Candidate:
    """Stages 4-5: encode every clip once (cached), train the probe without the test rows, score it."""
    backbone = args.model or default_backbone(serving.path if serving else None)
    options = options_from({**serving_recipe(serving), "backbone": backbone, "seed": args.seed,
                            "cache_dir": args.cache_dir, "epochs": args.epochs, "patience": args.patience})
    stage(4, f"encoding clips with the frozen {backbone} (cached)")
    features = load_features(dataset, options)
    stage(5, f"training the probe on {len(train_idx)} clips and scoring it on {len(test_idx)} test clips")
    try:
        head, config, log = fit_head(dataset, train_idx, features, options)
    except ValueError as error:
        raise RetrainInputError(f"cannot train: {error}") from error
    y_true = np.asarray(dataset["label"])[test_idx]
    y_pred = predict_rows(head, features, features.rows(test_idx, with_copies=False))
    metrics = compute_metrics(y_true.tolist(), y_pred.tolist(), label_names(dataset))
    print(f"  new model: UAR {metrics['uar']:.4f}, accuracy {metrics['accuracy']:.4f}", flush=True)
    speaker_head = fit_speaker_head(dataset, train_idx, features, options)[0] if options.adapt else None
    return Candidate(head, config, options, metrics, log, speaker_head)


RECIPE_KEYS = ("pooling", "layer_mix", "first_layer", "head_hidden_size", "dropout", "optimizer", "l2", "lr",
               "weight_decay", "balance", "adapt", "denoise")


def serving_recipe(serving: ServingModel | None) -> dict[str, Any]:
    """The head recipe the serving model recorded (its metrics.json ``options``): a retrained version
    keeps it, e.g. the default model's corpus balance and speaker-adapted head. Empty when unknown."""
    record = Path(serving.path) / "metrics.json" if serving else None
    if record is None or not record.is_file():
        return {}
    options = json.loads(record.read_text(encoding="utf-8")).get("options")
    return {key: options[key] for key in RECIPE_KEYS if isinstance(options, dict) and key in options}


def split_signature(args: argparse.Namespace) -> dict[str, Any]:
    """What fixes the test side of the split: equal signatures mean the same held-out speakers."""
    return {"corpus": args.corpus, "holdout": args.holdout, "seed": args.seed}


def comparison_caveat(serving: ServingModel | None, args: argparse.Namespace) -> str | None:
    """Why the serving model's score may be flattered (it may have trained on test clips), or None."""
    if serving is None:
        return None
    record_path = Path(serving.path) / "metrics.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    evaluation = record.get("evaluation") if isinstance(record.get("evaluation"), dict) else {}
    if evaluation.get("split") == split_signature(args) and not evaluation.get("refit_on_all"):
        return None
    return (
        f"{serving.version} was not written by `finetune retrain` with this corpus, holdout and seed "
        "(or was retrained on its test clips): it may have heard some test clips in training, which flatters "
        "its score (see --tolerance and --force)"
    )


def publish(
    args: argparse.Namespace,
    store: AnnotationStore,
    data: TrainingData,
    candidate: Candidate,
    test_idx: np.ndarray,
    *,
    serving: ServingModel | None,
    decision: Decision,
    caveat: str | None,
) -> tuple[str, Path]:
    """Write the version (optionally retrained on every clip first), register it, maybe activate it."""
    dataset, options = data.dataset, candidate.options
    if args.refit:
        print(f"  retraining on all {len(dataset)} clips (--refit-all)", flush=True)
        model, final_log = train_probe(dataset, None, options)
    else:
        model = build_probe(candidate.head, candidate.config, options.backbone, candidate.speaker_head)
        final_log = candidate.log
    from_store = np.asarray(dataset["corpus"]) == STORE_CORPUS
    names = label_names(dataset)
    evaluation = {
        "protocol": "speaker-independent hold-out: corpus test speakers + held-out correction groups",
        "split": split_signature(args),
        "test_clips": len(test_idx),
        "test_corrections": int(from_store[test_idx].sum()),
        "test_groups": sorted(set(speaker_groups(dataset)[test_idx].tolist())),
        "refit_on_all": bool(args.refit),
    }
    extra = {
        "decision": asdict(decision) | {"caveat": caveat},
        "serving_model": asdict(serving) if serving else None,
        "evaluation": evaluation,
        "training_data": {"clips": len(dataset), "corrections": data.corrections, "overridden": data.overridden,
                          "changed": data.changed, "left_out": data.skipped, "policy": args.policy,
                          "corpus": args.corpus, "class_counts": dict(Counter(names[i] for i in dataset["label"]))},
        "options": asdict(options),
        "training": {"best_epoch": candidate.log.get("best_epoch"), "val_uar": candidate.log.get("val_uar"),
                     "final_epochs": final_log.get("epochs_run")},
    }
    describe = {
        "model_name": f"probe on frozen {options.backbone}",
        "data_desc": _data_description(args, data),
        "split_desc": _split_description(evaluation, serving, args.refit),
        "licence": (corpus_licence(args.corpus) + " " if args.corpus else "")
        + "Corrections: recordings and labels saved by the app's users; share the model only as they agreed.",
    }
    models_dir = Path(args.out)
    models_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(models_dir, store)
    path = write_version(models_dir, version, model, candidate.metrics, describe=describe, extra=extra).resolve()
    headline = {key: candidate.metrics[key] for key in ("uar", "accuracy", "macro_f1")}
    store.register_model(version, str(path), headline | {
        "serving_uar": serving.metrics["uar"] if serving and serving.metrics else None, "decision": decision.reason})
    if args.activate:
        store.set_active(version)
    return version, path


def _data_description(args: argparse.Namespace, data: TrainingData) -> str:
    base = f"the `{args.corpus}` corpus and " if args.corpus else ""
    return (
        f"{len(data.dataset)} clips: {base}{data.corrections} clips labelled in the annotation store "
        f"(policy `{args.policy}`), {data.overridden} of which replace the corpus label of the same audio "
        f"({data.changed} changed it). Store clips left out: {data.skipped or 'none'}."
    )


def _split_description(evaluation: dict[str, Any], serving: ServingModel | None, refit: bool) -> str:
    text = (
        f"{evaluation['protocol']}: {evaluation['test_clips']} test clips "
        f"({evaluation['test_corrections']} corrections), speakers disjoint from training "
        f"(holdout {evaluation['split']['holdout']}, seed {evaluation['split']['seed']})."
    )
    if serving and serving.metrics:
        text += (
            f" The model serving before, `{serving.version}`, scored UAR {serving.metrics['uar']:.4f} "
            "on the same clips."
        )
    if refit:
        text += (
            " The metrics are those of the same recipe trained without the test clips; the model stored here "
            "was then retrained on all clips (`--refit-all`)."
        )
    return text
