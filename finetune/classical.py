"""``python -m finetune classical``: hand-crafted features with an SVM, a decision tree or an MLP.

The seed article's baselines, kept because they train in seconds on a CPU and show what the
transformer models add. Features are cached per clip (keyed by a hash of the audio file), so
cross-validation and benchmarks extract each clip once. Splits are speaker-independent: the
SVM's hyper-parameter search runs inside the training speakers only, so no test speaker leaks.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.data import speaker_groups
from finetune.options import check_choices, from_mapping, parse_command, save_config
from ser.cache import CACHE_ENV, cache_root
from ser.classical import FEATURE_SETS, FEATURES_VERSION, ClassicalModel, extract_features, feature_dim
from ser.denoise import METHODS as DENOISE_METHODS

ESTIMATORS: tuple[str, ...] = ("svm", "tree", "mlp")
SVM_C_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
# RBF widths relative to sklearn's "scale" (1 / (n_features * variance), variance 1 after scaling).
SVM_GAMMA_FACTORS: tuple[float, ...] = (0.25, 1.0, 4.0)


@dataclass
class ClassicalOptions:
    """What ``run_fold`` and the CLI need."""

    features: str = field(default="egemaps", metadata={"help": "hand-crafted feature set", "choices": FEATURE_SETS})
    estimator: str = field(default="svm", metadata={"help": "scikit-learn estimator", "choices": ESTIMATORS})
    cache_dir: str | None = field(default=None, metadata={
        "help": f"feature cache (default: ${CACHE_ENV}/features/classical or the user cache)"})
    seed: int = field(default=0, metadata={"help": "fixes the split and the estimator's randomness"})
    model_dir: str | None = field(default=None, metadata={
        "help": "cross-validation: also save each fold's model here (benchmarks size it)"})
    denoise: str | None = field(default=None, metadata={
        "help": "denoise the training audio before the features; the model records it and Predictor "
        "denoises every clip it serves the same way", "choices": DENOISE_METHODS})

    def __post_init__(self) -> None:
        check_choices(self)


OPTIONS = ClassicalOptions  # what run_fold takes; ``finetune cv`` parses the options after ``--`` into it


def options_from(options: ClassicalOptions | Mapping[str, Any]) -> ClassicalOptions:
    """ClassicalOptions as given, or from a mapping (cross-validation, benchmarks); extra keys are ignored."""
    return options if isinstance(options, ClassicalOptions) else from_mapping(ClassicalOptions, options)


# --- features, cached per clip -------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$SER_CACHE_DIR/features/classical`` or the user cache dir's (the probe's cache lives beside it)."""
    return cache_root() / "features" / "classical"


def corpus_features(
    dataset: Any, feature_set: str, cache_dir: str | Path | None = None, denoise: str | None = None
) -> np.ndarray:
    """Feature matrix (n_clips, dim) for every clip of a corpus dataset, extracting only uncached clips.

    Combined sets reuse the caches of their parts, so "mfcc+egemaps" costs nothing after both.
    ``denoise`` (a ``ser.denoise`` method): features of the denoised clips, cached apart.
    """
    from tqdm.auto import tqdm

    from ser.audio import InvalidAudio, load_audio

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    parts = feature_set.split("+")
    sources = _audio_sources(dataset)
    data = [_source_bytes(source) for source in sources]
    digests = [hashlib.sha256(blob).hexdigest() for blob in data]
    variant = f"-denoise_{denoise}" if denoise else ""
    paths = [[cache / f"{part}-v{FEATURES_VERSION}{variant}" / key[:2] / f"{key}.npy" for part in parts]
             for key in digests]
    missing = [i for i, clip_paths in enumerate(paths) if not all(path.is_file() for path in clip_paths)]
    for i in tqdm(missing, desc=f"{feature_set} features", unit="clip", disable=not missing):
        try:
            waveform = load_audio(data[i])
        except InvalidAudio as error:
            raise InvalidAudio(f"{sources[i].get('path') or f'clip {i}'}: {error}") from error
        if denoise:
            from ser.denoise import denoise as suppress

            waveform = suppress(waveform, denoise)
        for part, path in zip(parts, paths[i]):
            if not path.is_file():
                _save_atomically(path, extract_features(waveform, part))
    if not paths:
        return np.zeros((0, feature_dim(feature_set)), dtype=np.float32)
    return np.stack([np.concatenate([np.load(path) for path in clip_paths]) for clip_paths in paths])


def _audio_sources(dataset: Any) -> list[dict[str, Any]]:
    """The undecoded audio column: our own decoder handles it (datasets may lack torchcodec)."""
    from datasets import Audio

    return list(dataset.cast_column("audio", Audio(decode=False))["audio"])


def _source_bytes(source: dict[str, Any]) -> bytes:
    if source.get("bytes"):
        return source["bytes"]
    if source.get("path"):
        return Path(source["path"]).read_bytes()
    raise ValueError(f"audio entry has neither bytes nor a path: {source!r}")


def _save_atomically(path: Path, vector: np.ndarray) -> None:
    """Write via a temporary file so parallel runs never read a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(temporary, vector)
    os.replace(temporary, path)


# --- estimators -----------------------------------------------------------------------------------


def fit_pipeline(features: np.ndarray, labels: Sequence[str], speakers: Sequence[str], estimator: str, seed: int = 0) -> Any:
    """Fit StandardScaler + estimator; the SVM picks C and gamma by speaker-grouped inner CV (UAR)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if estimator == "svm":
        model = _tuned_svm(features, labels, np.asarray(speakers), seed)
    elif estimator == "tree":
        from sklearn.tree import DecisionTreeClassifier

        model = DecisionTreeClassifier(class_weight="balanced", min_samples_leaf=2, random_state=seed)
    elif estimator == "mlp":
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, max_iter=500, random_state=seed)
    else:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return make_pipeline(StandardScaler(), model).fit(features, labels)


def _tuned_svm(features: np.ndarray, labels: np.ndarray, speakers: np.ndarray, seed: int) -> Any:
    """A class-balanced RBF SVM with calibrated probabilities, tuned on training speakers only.

    scikit-learn 1.9 deprecates ``SVC(probability=True)`` in favour of ``CalibratedClassifierCV``.
    Temperature scaling keeps the SVM's own decision (a softmax of its scores); per-class Platt
    sigmoids changed the arg-max and cost 1-2 points of UAR on EmoDB LOSO.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scale = 1.0 / features.shape[1]
    grid = {"svc__C": list(SVM_C_GRID), "svc__gamma": [factor * scale for factor in SVM_GAMMA_FACTORS]}
    n_speakers = len(set(speakers.tolist()))
    if n_speakers >= 3:
        inner, groups = GroupKFold(n_splits=min(5, n_speakers)), speakers
    else:  # too few speakers to hold any out: fall back to stratified folds
        inner, groups = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed), None
    search = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(class_weight="balanced")),
        grid,
        scoring="balanced_accuracy",
        cv=inner,
        n_jobs=1,
    )
    search.fit(features, labels, groups=groups)
    best = {key.removeprefix("svc__"): value for key, value in search.best_params_.items()}
    svm = SVC(kernel="rbf", class_weight="balanced", random_state=seed, **best)
    calibration_folds = max(2, min(5, int(np.unique(labels, return_counts=True)[1].min())))
    return CalibratedClassifierCV(svm, method="temperature", cv=calibration_folds, ensemble=False)


def train_model(dataset: Any, indices: Sequence[int], options: Any, features: np.ndarray | None = None) -> ClassicalModel:
    """Fit a ClassicalModel on the clips ``indices`` of a corpus dataset."""
    options = options_from(options)
    if features is None:
        features = corpus_features(dataset, options.features, options.cache_dir, options.denoise)
    names = dataset.features["label"].names
    indices = np.asarray(indices, dtype=int)
    labels = np.asarray(names)[np.asarray(dataset["label"])[indices]]
    speakers = speaker_groups(dataset)[indices]
    pipeline = fit_pipeline(features[indices], labels, speakers, options.estimator, options.seed)
    info = {"estimator_name": options.estimator, "seed": options.seed, "version": f"classical-{options.features}-{options.estimator}",
            "denoise": options.denoise}  # Predictor denoises what it serves the same way (ser.model.trained_denoising)
    return ClassicalModel(pipeline, options.features, names, info=info)


def prepare(dataset: Any, options: Any) -> None:
    """Extract (or load) every clip's features once, before cross-validation times its folds."""
    options = options_from(options)
    corpus_features(dataset, options.features, options.cache_dir, options.denoise)


def run_fold(dataset: Any, train_idx: Sequence[int], test_idx: Sequence[int], options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Train on ``train_idx``, predict ``test_idx``: (y_true, y_pred) as class indices (for finetune/cv.py)."""
    options = options_from(options)
    features = corpus_features(dataset, options.features, options.cache_dir, options.denoise)
    model = train_model(dataset, train_idx, options, features)
    if options.model_dir:
        model.save(options.model_dir)
    test_idx = np.asarray(test_idx, dtype=int)
    y_true = np.asarray(dataset["label"])[test_idx]
    y_pred = model.predict_proba_features(features[test_idx]).argmax(axis=1)
    return y_true, y_pred


# --- command line ---------------------------------------------------------------------------------


@dataclass
class ClassicalCommand:
    """The data and output of ``python -m finetune classical`` (cross-validation brings its own)."""

    corpus: str = field(metadata={"help": "corpus name known to ser.corpora (e.g. emodb)"})
    root: str = field(metadata={"help": "folder holding the corpus"})
    out: str = field(metadata={"help": "model directory to write"})
    test_size: float = field(default=0.2, metadata={"help": "share of speakers held out for testing"})


def main(argv: Sequence[str], *, prog: str = "python -m finetune classical", description: str | None = None) -> int:
    """Parse the options (or a saved run's ``--config``), record them in OUT, train."""
    args, options = parse_command((ClassicalCommand, ClassicalOptions), argv, prog=prog, description=description)
    save_config(args.out, (args, options))
    return run(args, options)


def run(args: ClassicalCommand, options: ClassicalOptions) -> int:
    """Speaker-disjoint split, train, evaluate on the held-out speakers, write model + report + card."""
    from finetune.card import corpus_licence, version_id, write_run_outputs
    from finetune.data import train_val_test_split
    from ser.corpora import load_corpus
    from ser.metrics import compute_metrics

    out = Path(args.out)
    dataset = load_corpus(args.corpus, args.root)
    # No validation part: the SVM tunes by cross-validation inside the training speakers.
    split = train_val_test_split(dataset, val=0.0, test=args.test_size, seed=options.seed)
    train_idx, test_idx = split.train, split.test
    features = corpus_features(dataset, options.features, options.cache_dir, options.denoise)

    started = time.perf_counter()
    model = train_model(dataset, train_idx, options, features)
    train_seconds = time.perf_counter() - started
    y_true = np.asarray(dataset["label"])[test_idx]
    y_pred = model.predict_proba_features(features[test_idx]).argmax(axis=1)
    metrics = compute_metrics(y_true.tolist(), y_pred.tolist(), model.labels)

    speakers = speaker_groups(dataset)
    test_speakers = sorted(set(speakers[test_idx].tolist()))
    summary = {
        "train_speakers": sorted(set(speakers[train_idx].tolist())),
        "test_speakers": test_speakers,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "train_seconds": round(train_seconds, 3),
        "options": asdict(options),
    }
    version = version_id(out.name)
    model.metrics = {key: metrics[key] for key in ("accuracy", "uar", "macro_f1", "n")}
    model.info.update(version=version, corpus=args.corpus, training=summary)
    model.save(out)
    estimator = {"svm": "RBF SVM", "tree": "decision tree", "mlp": "MLP"}[options.estimator]
    write_run_outputs(
        out,
        metrics,
        model_name=f"{options.features} features + {estimator} (scikit-learn)",
        data_desc=f"{args.corpus} ({len(dataset)} clips, {len(set(speakers.tolist()))} speakers) from {args.root}.",
        split_desc=(
            f"Speaker-independent hold-out: trained on {len(train_idx)} clips of {len(summary['train_speakers'])} "
            f"speakers, tested on {len(test_idx)} clips of speakers {', '.join(test_speakers)}, never seen in "
            "training. The SVM's C and gamma were chosen by speaker-grouped cross-validation inside the "
            "training speakers."
        ),
        licence=corpus_licence(args.corpus),
        extra=summary,
        version=version,
    )
    print(
        f"{args.corpus} {options.features}+{options.estimator}: UAR {metrics['uar']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on "
        f"{len(test_idx)} clips of held-out speakers {', '.join(test_speakers)} -> {out}"
    )
    return 0
