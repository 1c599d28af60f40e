"""Multi-label metrics and per-class threshold tuning on stored probabilities."""

from locbench.metrics.crossfit import CROSSFIT_FOLDS, crossfit_metrics, crossfit_predictions
from locbench.metrics.multilabel import (
    check_inputs,
    compute_metrics,
    cross_confusion,
    format_metrics_table,
    multilabel_confusion,
    with_tuned,
)
from locbench.metrics.samples import MIN_RELIABLE_N, small_sample_note, with_note
from locbench.metrics.thresholds import (
    FALLBACK_THRESHOLD,
    MIN_TUNE_POSITIVES,
    NEVER_PREDICTED,
    THRESHOLD_SOURCES,
    never_predicted,
    threshold_sources,
    tune_thresholds,
    untrainable_note,
)

__all__ = [
    "CROSSFIT_FOLDS",
    "crossfit_metrics",
    "crossfit_predictions",
    "FALLBACK_THRESHOLD",
    "MIN_RELIABLE_N",
    "MIN_TUNE_POSITIVES",
    "NEVER_PREDICTED",
    "THRESHOLD_SOURCES",
    "check_inputs",
    "compute_metrics",
    "format_metrics_table",
    "cross_confusion",
    "multilabel_confusion",
    "never_predicted",
    "small_sample_note",
    "threshold_sources",
    "tune_thresholds",
    "untrainable_note",
    "with_note",
    "with_tuned",
]
