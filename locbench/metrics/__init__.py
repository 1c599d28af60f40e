"""Multi-label metrics and per-class threshold tuning on stored probabilities."""

from locbench.metrics.crossfit import CROSSFIT_FOLDS, crossfit_metrics, crossfit_predictions
from locbench.metrics.multilabel import (
    check_inputs,
    compute_metrics,
    format_metrics_table,
    multilabel_confusion,
    with_tuned,
)
from locbench.metrics.thresholds import tune_thresholds

__all__ = [
    "CROSSFIT_FOLDS",
    "crossfit_metrics",
    "crossfit_predictions",
    "check_inputs",
    "compute_metrics",
    "format_metrics_table",
    "multilabel_confusion",
    "tune_thresholds",
    "with_tuned",
]
