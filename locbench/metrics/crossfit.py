"""Cross-fitted tuned F1: per-class thresholds tuned on k-1 folds of the validation images, applied to the held-out
fold, so that no image is scored with a threshold its own label helped choose.

F1 at thresholds tuned on the very images it is measured on is biased upwards: every class's threshold is the one
that happened to suit those images best (with 19 classes at HPA-like prevalences, 100 validation images and no
signal at all, by about +0.085; tests/unit/test_validation_bias.py). Where a run has no test part this is the
tuned F1 locbench reports. The thresholds a run keeps for ``predict`` are still tuned on all of validation; the
cross-fitted number estimates how such thresholds do on new images (from slightly fewer tuning images: a small
pessimistic bias instead of a large optimistic one).

Folds are multi-label stratified (``iterative-stratification``, as the splits) with a fixed seed: the same
predictions always give the same number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from locbench.metrics.multilabel import check_inputs, compute_metrics
from locbench.metrics.thresholds import tune_thresholds

#: Folds of the validation images (fewer when there are fewer images).
CROSSFIT_FOLDS = 5
#: Seed of the fold assignment: fixed, so a run's cross-fitted F1 is a function of its predictions alone.
CROSSFIT_SEED = 0


def crossfit_folds(targets: np.ndarray, k: int = CROSSFIT_FOLDS, seed: int = CROSSFIT_SEED) -> np.ndarray:
    """(N,) fold number of each image: ``min(k, N)`` multi-label stratified folds (N >= 2)."""
    n = len(targets)
    k = min(k, n)
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 images, got {n}")
    fold = np.empty(n, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held) in enumerate(splitter.split(np.zeros(n), np.asarray(targets))):
        fold[held] = i
    return fold


def crossfit_predictions(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    k: int = CROSSFIT_FOLDS,
    seed: int = CROSSFIT_SEED,
    train_positives: np.ndarray | None = None,
) -> np.ndarray:
    """(N, C) 0/1 predictions: each image thresholded with thresholds tuned on the other folds only (by the
    rules of :func:`~locbench.metrics.tune_thresholds`: untrainable classes never predicted, thin ones at the
    fallback)."""
    probs, targets = check_inputs(probs, targets)
    fold = crossfit_folds(targets, k, seed)
    pred = np.zeros(probs.shape, dtype=np.uint8)
    for f in np.unique(fold):
        held = fold == f
        thr = tune_thresholds(probs[~held], targets[~held], train_positives=train_positives)
        pred[held] = probs[held] >= thr[None, :]
    return pred


def crossfit_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    class_names: list[str],
    k: int = CROSSFIT_FOLDS,
    seed: int = CROSSFIT_SEED,
    train_positives: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """:func:`~locbench.metrics.compute_metrics`'s F1 entries (``macro_f1``, ``micro_f1``, per-class ``f1``) of the
    cross-fitted predictions, plus ``folds``; None with fewer than 2 images (nothing to cross-fit). Its AP entries
    are of 0/1 scores and mean nothing."""
    if len(targets) < 2:
        return None
    pred = crossfit_predictions(probs, targets, k=k, seed=seed, train_positives=train_positives)
    # 0/1 scores at threshold 0.5 are exactly the cross-fitted decisions
    out = compute_metrics(pred.astype(np.float32), targets, class_names=class_names, thresholds=0.5)
    out["folds"] = min(k, len(targets))
    return out
