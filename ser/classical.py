"""The seed article's classical path at inference time: hand-crafted features + a scikit-learn model.

A classical model is a directory holding ``classical.json`` (format, feature set, labels, versions,
metrics) and ``pipeline.skops`` (a fitted ``StandardScaler`` + estimator pipeline). skops is used
rather than pickle/joblib because loading a pickle runs arbitrary code, and model directories are
meant to be shared and switched between in the app. ``Predictor`` detects ``classical.json`` and
puts a ``ClassicalModel`` behind the same ``predict()`` API as the transformer checkpoints.

Training lives in ``finetune/classical.py``; this module only extracts features and predicts.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE, InvalidAudio

FORMAT = "ser-classical/1"
CONFIG_NAME = "classical.json"
PIPELINE_NAME = "pipeline.skops"
FEATURE_SETS: tuple[str, ...] = ("mfcc", "egemaps", "mfcc+egemaps")
# Bump when a feature definition changes, so training caches keyed on it are not reused.
FEATURES_VERSION = 1

# MFCC frames: 25 ms windows every 10 ms, the speech-processing convention.
N_MFCC = 20
N_MELS = 40
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
DELTA_WIDTH = 9
MFCC_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "p10", "p50", "p90")
EGEMAPS_DIM = 88

# skops refuses every type it does not know to be safe. These are the ones our own estimators need:
# the calibrated SVM's temperature or sigmoids and the MLP's optimizer state (plain Python objects
# holding arrays), and a decision tree's node array, which a crafted file could make index out of
# bounds: `_check_trees` verifies every index after loading.
TREE_TYPE = "sklearn.tree._tree.Tree"
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    TREE_TYPE,
)


def feature_dim(feature_set: str) -> int:
    """Length of the vector ``extract_features`` returns for ``feature_set``."""
    _check_feature_set(feature_set)
    mfcc = 3 * N_MFCC * len(MFCC_STATS)
    return {"mfcc": mfcc, "egemaps": EGEMAPS_DIM, "mfcc+egemaps": mfcc + EGEMAPS_DIM}[feature_set]


def extract_features(waveform: np.ndarray, feature_set: str) -> np.ndarray:
    """One fixed-length float32 vector per clip, whatever its duration (16 kHz mono input)."""
    _check_feature_set(feature_set)
    samples = _as_samples(waveform)
    parts = []
    if "mfcc" in feature_set.split("+"):
        parts.append(mfcc_statistics(samples))
    if "egemaps" in feature_set.split("+"):
        parts.append(egemaps_functionals(samples))
    return np.concatenate(parts).astype(np.float32)


def feature_matrix(waveforms: Sequence[np.ndarray], feature_set: str) -> np.ndarray:
    """Stack ``extract_features`` over clips into an (n_clips, feature_dim) matrix."""
    if len(waveforms) == 0:
        return np.zeros((0, feature_dim(feature_set)), dtype=np.float32)
    return np.stack([extract_features(waveform, feature_set) for waveform in waveforms])


def mfcc_statistics(samples: np.ndarray) -> np.ndarray:
    """Statistics over time of MFCCs and their first and second deltas.

    Summary statistics turn a variable number of frames into the fixed-length vector that SVMs,
    trees and MLPs need; the deltas carry how the spectrum moves, which prosody lives in.
    """
    import librosa

    # Deltas need at least DELTA_WIDTH frames; pad very short clips with silence.
    minimum = (DELTA_WIDTH - 1) * HOP_LENGTH
    if samples.size < minimum:
        samples = np.pad(samples, (0, minimum - samples.size))
    mfcc = librosa.feature.mfcc(
        y=samples,
        sr=SAMPLE_RATE,
        n_mfcc=N_MFCC,
        n_fft=N_FFT,
        win_length=WIN_LENGTH,
        hop_length=HOP_LENGTH,
        n_mels=N_MELS,
        fmin=20.0,
        fmax=SAMPLE_RATE / 2,
    )
    frames = np.concatenate(
        [
            mfcc,
            librosa.feature.delta(mfcc, width=DELTA_WIDTH, order=1),
            librosa.feature.delta(mfcc, width=DELTA_WIDTH, order=2),
        ]
    )
    p10, p50, p90 = np.percentile(frames, [10, 50, 90], axis=1)
    stats = [frames.mean(axis=1), frames.std(axis=1), frames.min(axis=1), frames.max(axis=1), p10, p50, p90]
    return np.concatenate(stats)


def egemaps_functionals(samples: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPSv02 functionals (Eyben et al., 2016), the field's standard minimal feature set."""
    values = _smile().process_signal(samples, SAMPLE_RATE).to_numpy()
    return np.nan_to_num(values.reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)


_SMILE_LOCAL = threading.local()


def _smile() -> Any:
    """One openSMILE extractor per thread: the app predicts from several threads at once."""
    smile = getattr(_SMILE_LOCAL, "smile", None)
    if smile is None:
        import opensmile

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        _SMILE_LOCAL.smile = smile
    return smile


class ClassicalModel:
    """A fitted scikit-learn pipeline plus the feature set and label order it was trained with."""

    def __init__(
        self,
        pipeline: Any,
        feature_set: str,
        labels: Sequence[str],
        *,
        metrics: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        _check_feature_set(feature_set)
        unknown = [str(name) for name in pipeline.classes_ if str(name) not in labels]
        if unknown:
            raise ValueError(f"the pipeline predicts {unknown}, which are not among the labels {list(labels)}")
        self.pipeline = pipeline
        self.feature_set = feature_set
        self.labels = [str(label) for label in labels]
        self.metrics = dict(metrics or {})
        self.info = dict(info or {})

    @property
    def version(self) -> str:
        """What ``Predictor.version`` shows: the training run's version, from ``classical.json``."""
        return str(self.info.get("version", "classical"))

    def predict_proba(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (n_clips, len(labels)), columns in ``labels`` order, rows summing to 1."""
        return self.predict_proba_features(feature_matrix(waveforms, self.feature_set))

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Like ``predict_proba`` for precomputed features (training caches them)."""
        probabilities = np.zeros((len(features), len(self.labels)), dtype=np.float64)
        if len(features) == 0:
            return probabilities
        columns = [self.labels.index(str(name)) for name in self.pipeline.classes_]
        # A label the training split never saw keeps probability 0.
        probabilities[:, columns] = self.pipeline.predict_proba(features)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def save(self, directory: str | Path) -> Path:
        """Write ``classical.json`` and ``pipeline.skops`` into ``directory`` (created if needed)."""
        import sklearn
        import skops
        import skops.io

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        skops.io.dump(self.pipeline, directory / PIPELINE_NAME)
        config = {
            **self.info,  # first: what describes this file now must not be overridden by old info
            "format": FORMAT,
            "feature_set": self.feature_set,
            "features_version": FEATURES_VERSION,
            "labels": self.labels,
            "estimator": _describe(self.pipeline),
            "sample_rate": SAMPLE_RATE,
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": self.metrics,
        }
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ClassicalModel:
        """Load a directory written by ``save``, refusing files that would need unsafe types."""
        import sklearn
        import skops.io

        directory = Path(directory)
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory} holds format {config.get('format')!r}, expected {FORMAT!r}")
        if config.get("features_version") != FEATURES_VERSION:
            raise ValueError(
                f"{directory} was trained on features version {config.get('features_version')}, this code "
                f"computes version {FEATURES_VERSION}: retrain it with `python -m finetune classical`"
            )
        if config.get("sklearn_version") != sklearn.__version__:
            warnings.warn(
                f"{directory} was saved with scikit-learn {config.get('sklearn_version')}, "
                f"this is {sklearn.__version__}: predictions may differ",
                stacklevel=2,
            )
        path = directory / PIPELINE_NAME
        untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ValueError(f"{path} contains types that are not safe to load: {sorted(untrusted)}")
        pipeline = skops.io.load(path, trusted=list(TRUSTED_TYPES))
        _check_trees(pipeline)
        reserved = {"format", "feature_set", "features_version", "labels", "metrics"}
        info = {key: value for key, value in config.items() if key not in reserved}
        return cls(pipeline, config["feature_set"], config["labels"], metrics=config.get("metrics"), info=info)


def is_classical_dir(path: str | Path) -> bool:
    """Whether ``path`` is a classical model directory (``Predictor`` dispatches on this)."""
    return (Path(path) / CONFIG_NAME).is_file()


def _describe(pipeline: Any) -> str:
    """The final estimator's class, and the one it wraps (``CalibratedClassifierCV(SVC)``)."""
    final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    inner = getattr(final, "estimator", None)
    return f"{type(final).__name__}({type(inner).__name__})" if inner is not None else type(final).__name__


def _check_trees(pipeline: Any) -> None:
    """Refuse decision trees whose node indices point outside their arrays (see TREE_TYPE)."""
    steps = pipeline.steps if hasattr(pipeline, "steps") else [("model", pipeline)]
    for _, step in steps:
        tree = getattr(step, "tree_", None)
        if tree is None:
            continue
        nodes, n_features = tree.node_count, getattr(step, "n_features_in_", 0)
        children = np.concatenate([tree.children_left, tree.children_right])
        internal = tree.children_left >= 0
        if (
            np.any((children < -1) | (children >= nodes))
            or np.any(tree.feature[internal] < 0)
            or np.any(tree.feature[internal] >= n_features)
            or tree.value.shape[0] != nodes
        ):
            raise ValueError("the decision tree in this model file is corrupt (node indices out of range)")


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")


def _as_samples(waveform: np.ndarray) -> np.ndarray:
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise InvalidAudio(f"expected a non-empty 1-D 16 kHz waveform, got an array of shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise InvalidAudio("the waveform contains NaN or infinite samples")
    return samples

