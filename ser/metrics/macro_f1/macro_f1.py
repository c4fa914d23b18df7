"""Macro-averaged F1 as a local evaluate module.

Averaged over every class that occurs in the references or the predictions (scikit-learn's
default), so predicting a class that never occurs costs F1.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "Unweighted mean of per-class F1 over classes present in references or predictions."
_KWARGS = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): reference class indices.
Returns:
    macro_f1 (float): in [0, 1].
"""


class MacroF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        return {"macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
