"""One call that turns references and predictions into every metric the project reports."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_MODULES: tuple[str, ...] = ("accuracy", "uar", "macro_f1", "per_class", "confusion_matrix")


@lru_cache(maxsize=None)
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of the project's evaluate modules from its folder (works offline); cached per process.

    ``evaluate`` is imported here, not at module level: importing it pulls in transformers'
    pipelines (seconds), which a caller that only writes reports should not pay for.
    """
    import evaluate

    if name not in METRIC_MODULES:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_MODULES)}")
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


def compute_metrics(
    y_true: Sequence[int | str], y_pred: Sequence[int | str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, UAR, macro-F1, per-class scores and the confusion matrix, as plain JSON-able values.

    ``y_true`` and ``y_pred`` hold class indices into ``labels`` or the label names themselves.
    """
    labels = [str(label) for label in labels]
    references = _indices(y_true, labels, "y_true")
    predictions = _indices(y_pred, labels, "y_pred")
    if len(references) != len(predictions):
        raise ValueError(f"y_true has {len(references)} items but y_pred has {len(predictions)}")
    if not references:
        raise ValueError("cannot compute metrics on zero examples")
    pairs = {"predictions": predictions, "references": references}
    per_class = load_metric("per_class").compute(**pairs, num_classes=len(labels))
    return {
        "accuracy": load_metric("accuracy").compute(**pairs)["accuracy"],
        "uar": load_metric("uar").compute(**pairs)["uar"],
        "macro_f1": load_metric("macro_f1").compute(**pairs)["macro_f1"],
        "per_class": {
            label: {key: per_class[key][i] for key in ("precision", "recall", "f1", "support")}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": load_metric("confusion_matrix").compute(**pairs, num_classes=len(labels))[
            "confusion_matrix"
        ],
        "labels": labels,
        "n": len(references),
    }


def _indices(values: Sequence[int | str], labels: list[str], name: str) -> list[int]:
    """Map label names (or indices) to indices into ``labels``, refusing anything outside them."""
    position = {label: i for i, label in enumerate(labels)}
    indices = []
    for value in values:
        if isinstance(value, str):
            if value not in position:
                raise ValueError(f"{name} holds {value!r}, which is not one of the labels {labels}")
            indices.append(position[value])
        else:
            index = int(value)
            if not 0 <= index < len(labels):
                raise ValueError(f"{name} holds index {index}, outside 0..{len(labels) - 1}")
            indices.append(index)
    return indices
