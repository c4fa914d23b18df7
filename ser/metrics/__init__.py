"""Speaker-independent evaluation metrics of speech emotion recognition, and their reports.

The metrics themselves are evaluate modules in the folders beside this file, loaded from their
local path so that evaluation works with no Hugging Face Hub (``evaluate.load("accuracy")`` would
need it).
"""

from ser.metrics.compute import METRIC_MODULES, compute_metrics, load_metric
from ser.metrics.report import write_report

__all__ = ["METRIC_MODULES", "compute_metrics", "load_metric", "write_report"]
