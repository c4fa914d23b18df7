"""Per-class precision, recall, F1 and support as a local evaluate module.

``num_classes`` fixes the class order, so a class missing from one fold still gets its row
(with zeros) and rows line up across folds.
"""

import datasets
import evaluate
from sklearn.metrics import precision_recall_fscore_support

_DESCRIPTION = "Precision, recall, F1 and support for every class index 0..num_classes-1."
_KWARGS = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): reference class indices.
    num_classes (int): number of classes; rows are returned for indices 0..num_classes-1.
Returns:
    precision, recall, f1 (list of float) and support (list of int), one entry per class.
"""


class PerClass(evaluate.Metric):
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
        precision, recall, f1, support = precision_recall_fscore_support(
            references, predictions, labels=list(range(num_classes)), zero_division=0
        )
        return {
            "precision": [float(v) for v in precision],
            "recall": [float(v) for v in recall],
            "f1": [float(v) for v in f1],
            "support": [int(v) for v in support],
        }
