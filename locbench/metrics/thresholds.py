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

Rules for classes the data cannot support (docs/VALIDATION.md, "Per-class thresholds"):

- **untrainable**: no positive training example. The model never saw the class, so its scores for it are noise:
  the class is never predicted. Its threshold is :data:`NEVER_PREDICTED` (2.0), above every probability; JSON has
  no infinity, so ``thresholds.json`` stores that number, and every threshold above 1 means "never predicted".
- **fallback**: fewer than :data:`MIN_TUNE_POSITIVES` (3) validation positives. A cut tuned on one or two
  positives sits just below their scores: it fits those images, not the class. Such a class keeps
  :data:`FALLBACK_THRESHOLD` (0.5: where a sigmoid output says "more likely than not", the threshold F1@0.5 uses).
- **tuned**: every other class, by the exact search above.
"""

from __future__ import annotations

import logging

import numpy as np

from locbench.errors import LocbenchError
from locbench.metrics.multilabel import check_inputs

log = logging.getLogger(__name__)

#: Threshold of a class with no positive training example: above every probability, so never predicted.
NEVER_PREDICTED = 2.0
#: Fewest validation positives a class needs for its threshold to be tuned.
MIN_TUNE_POSITIVES = 3
#: Threshold kept by a trainable class with fewer than MIN_TUNE_POSITIVES validation positives.
FALLBACK_THRESHOLD = 0.5
#: Where a class's threshold comes from (``summary.json`` per class ``threshold_source``).
THRESHOLD_SOURCES = ("tuned", "fallback", "untrainable")


def never_predicted(thresholds: np.ndarray) -> np.ndarray:
    """Boolean mask of the classes whose threshold is above every probability (untrainable classes)."""
    return np.asarray(thresholds, dtype=np.float64) > 1.0


def untrainable_note(classes: list[str]) -> str:
    """The note printed wherever a run's untrainable classes matter (train, evaluate, predict, report)."""
    one = len(classes) == 1
    return (
        f"{len(classes)} class{'' if one else 'es'} had no positive training example and "
        f"{'is' if one else 'are'} never predicted (untrainable; threshold above every score): " + ", ".join(classes)
    )


def threshold_sources(
    val_positives: np.ndarray,
    train_positives: np.ndarray | None = None,
    *,
    min_positives: int = MIN_TUNE_POSITIVES,
) -> list[str]:
    """Per class, where its threshold comes from: ``untrainable`` (no positive training example), ``fallback``
    (fewer than ``min_positives`` validation positives) or ``tuned``. ``train_positives`` None: all trainable."""
    val = np.asarray(val_positives)
    train = np.ones_like(val) if train_positives is None else np.asarray(train_positives)
    if train.shape != val.shape:
        raise LocbenchError(f"train_positives has shape {train.shape}, validation positives {val.shape}")
    return [
        "untrainable" if t <= 0 else "fallback" if v < min_positives else "tuned"
        for v, t in zip(val.tolist(), train.tolist(), strict=True)
    ]


def tune_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    grid: np.ndarray | None = None,
    default: float = FALLBACK_THRESHOLD,
    min_positives: int = MIN_TUNE_POSITIVES,
    train_positives: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class thresholds maximising that class's F1 on ``(probs, targets)``.

    A sample counts as positive when ``prob >= threshold`` (as in :func:`compute_metrics`).

    Args:
        probs: ``(N, C)`` validation probabilities in [0, 1].
        targets: ``(N, C)`` 0/1 validation targets.
        grid: Candidate thresholds to choose from; ``None`` searches every distinct score exactly (see the
            module docstring).
        default: Threshold kept by classes with fewer than ``min_positives`` positives (the fallback).
        min_positives: Fewest positives a class needs to be tuned (at least 1: with none, F1 is 0 everywhere).
        train_positives: ``(C,)`` positive training examples per class; classes with none get
            :data:`NEVER_PREDICTED`. None: every class counts as trainable.

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

    sources = np.array(threshold_sources(positives, train_positives, min_positives=min_positives))
    keep = sources == "fallback"
    if keep.any():
        n_keep = int(keep.sum())
        log.debug("%d class(es) with fewer than %d positives keep threshold %g", n_keep, min_positives, default)
    thr = np.where(keep, float(default), thr)
    return np.where(sources == "untrainable", NEVER_PREDICTED, thr).astype(np.float64)
