"""Confusion matrix as a local evaluate module: rows are references, columns predictions."""

import warnings

import datasets
import evaluate
from sklearn.metrics import confusion_matrix

_DESCRIPTION = "Counts of (reference, prediction) pairs over class indices 0..num_classes-1."
_KWARGS = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): reference class indices.
    num_classes (int): size of the square matrix.
Returns:
    confusion_matrix (list of list of int): row = reference class, column = predicted class.
"""


class ConfusionMatrix(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, num_classes):
        with warnings.catch_warnings():
            # scikit-learn warns about one-class input even when ``labels`` fixes the shape, as here.
            warnings.filterwarnings("ignore", message="A single label was found")
            matrix = confusion_matrix(references, predictions, labels=list(range(num_classes)))
        return {"confusion_matrix": matrix.tolist()}
