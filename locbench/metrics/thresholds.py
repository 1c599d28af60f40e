"""Per-class decision thresholds that maximise each class's F1 on validation data.

Exact search (the default): F1 only changes where the threshold crosses a score, so sorting each class's
scores once and taking cumulative sums of the targets gives F1 at every distinct score in one pass. The chosen
threshold sits at the midpoint between the lowest score predicted positive and the next lower score, rather
than on the score itself, so a test sample scoring a hair below a validation positive is not flipped by
rounding. Among equal F1 values the higher threshold wins (fewer positives predicted for the same F1).

Because "predict the samples scoring >= 0.5" is one of the candidates the exact search evaluates, the tuned
F1 on the tuning data is never below F1 at 0.5. With an explicit ``grid`` that guarantee holds only if 0.5 is
in the grid.

Written by hand because scikit-learn's ``precision_recall_curve`` works one class at a time, places thresholds on
the scores themselves and gives F1 only through float precision and recall, so equal F1 values need not compare
equal; here F1 is one division of integers, which makes the tie-break exact.
"""

from __future__ import annotations

import logging

import numpy as np

from locbench.errors import LocbenchError
from locbench.metrics.multilabel import check_inputs

log = logging.getLogger(__name__)


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    grid: np.ndarray | None = None,
    default: float = 0.5,
    min_positives: int = 1,
) -> np.ndarray:
    """Per-class thresholds maximising that class's F1 on ``(probs, targets)``.

    A sample counts as positive when ``prob >= threshold`` (as in :func:`compute_metrics`).

    Args:
        probs: ``(N, C)`` validation probabilities in [0, 1].
        targets: ``(N, C)`` 0/1 validation targets.
        grid: Candidate thresholds to choose from; ``None`` searches every distinct score exactly (see the
            module docstring).
        default: Threshold kept by classes with fewer than ``min_positives`` positives.
        min_positives: Fewest positives a class needs to be tuned (at least 1: with none, F1 is 0 everywhere).

    Returns:
        ``(C,)`` float64 thresholds.

    Raises:
        LocbenchError: on invalid inputs, an empty or non-finite grid, or ``min_positives < 1``.
    """
    probs, targets = check_inputs(probs, targets)
    if min_positives < 1:
        raise LocbenchError(f"min_positives must be at least 1; got {min_positives}")
    n, c = probs.shape
    positives = targets.sum(axis=0)

    # Sort every column at once, highest score first; tp[k, j] = positives among the top k + 1 of class j.
    order = np.argsort(-probs, axis=0, kind="stable")
    scores = np.take_along_axis(probs, order, axis=0)
    tp = np.cumsum(np.take_along_axis(targets, order, axis=0), axis=0, dtype=np.int64)
    n_pred = np.arange(1, n + 1, dtype=np.int64)[:, None]

    if grid is None:
        # A cut is only reachable after the last of a run of tied scores.
        last_of_run = np.ones((n, c), dtype=bool)
        last_of_run[:-1] = scores[:-1] != scores[1:]
        # Integer numerator and denominator: equal F1 values compare equal, so the tie-break is exact.
        f1 = np.where(last_of_run, 2.0 * tp / (n_pred + positives), -1.0)
        best = np.argmax(f1, axis=0)  # first maximum = highest threshold
        hi = scores[best, np.arange(c)]
        lo = np.where(best + 1 < n, scores[np.minimum(best + 1, n - 1), np.arange(c)], 0.0)
        thr = np.where(best + 1 < n, (hi + lo) / 2.0, hi / 2.0)
        # Midpoints of adjacent float64 values can round down onto ``lo``; nudge up so ``lo`` stays excluded.
        thr = np.where((thr <= lo) & (lo < hi), np.nextafter(lo, np.inf), thr)
    else:
        cand = np.unique(np.asarray(grid, dtype=np.float64))[::-1]  # descending: first maximum = highest
        if cand.size == 0 or not np.all(np.isfinite(cand)):
            raise LocbenchError("threshold grid must be a non-empty array of finite numbers")
        thr = np.empty(c)
        for j in range(c):
            # Number of samples with score >= each candidate, from the ascending view of the sorted column.
            k = n - np.searchsorted(scores[::-1, j], cand, side="left")
            tp_k = np.where(k > 0, tp[np.maximum(k - 1, 0), j], 0)
            denom = k + positives[j]
            f1 = np.divide(2.0 * tp_k, denom, out=np.zeros(cand.size), where=denom > 0)
            thr[j] = cand[np.argmax(f1)]

    keep = positives < min_positives
    if keep.any():
        n_keep = int(keep.sum())
        log.debug("%d class(es) with fewer than %d positives keep threshold %g", n_keep, min_positives, default)
    return np.where(keep, float(default), thr).astype(np.float64)
