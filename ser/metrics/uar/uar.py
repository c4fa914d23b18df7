"""Unweighted average recall (UAR), the headline metric of speech emotion recognition.

Acted corpora are unbalanced (EmoDB has 127 angry clips but 46 disgust), so plain accuracy rewards
a model that favours the big classes; UAR weighs every class equally. Recall is averaged over the
classes present in the references (a class nobody said has no recall), which is scikit-learn's
``balanced_accuracy_score``.
"""

import warnings

import datasets
import evaluate
from sklearn.metrics import balanced_accuracy_score

_DESCRIPTION = "Mean of per-class recall over the classes present in the references (= balanced accuracy)."
_KWARGS = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): reference class indices.
Returns:
    uar (float): in [0, 1].
"""


class Uar(evaluate.Metric):
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
        with warnings.catch_warnings():
            # Expected, not alarming: a fold without some class, or a model predicting one it lacks.
            warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
            warnings.filterwarnings("ignore", message="A single label was found")
            return {"uar": float(balanced_accuracy_score(references, predictions))}
