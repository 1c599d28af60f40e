"""Multi-label metrics on stored probabilities: per-class and averaged F1, average precision, confusion counts.

Conventions (the same everywhere in locbench):

- A sample is predicted positive for a class when ``prob >= threshold``.
- A class with no positive in ``targets`` is *absent* from the split. Its AP, F1, precision and recall are
  undefined (recall divides by zero, AP has no positive to rank), so they are reported as ``None``, the class is
  listed in ``absent_classes``, and it is left out of every averaged number (macro and micro F1, mAP, micro AP).
  Counting it as 0 would punish a model for a split that happens to miss a rare class; counting it as 1 would
  reward it. Leaving it out keeps headline numbers computed over the same columns.
- Precision of a present class with no predicted positive is 0.0 (scikit-learn's ``zero_division=0``).

Counting is a few numpy sums; average precision comes from scikit-learn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from locbench.errors import LocbenchError

log = logging.getLogger(__name__)


def check_inputs(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a ``(N, C)`` probability array and its ``(N, C)`` 0/1 targets.

    Args:
        probs: Probabilities in [0, 1] (after the sigmoid), one row per sample, one column per class.
        targets: Multi-hot ground truth, values 0 or 1 (any numeric or bool dtype).

    Returns:
        ``(probs as float64, targets as bool)``.

    Raises:
        LocbenchError: on a shape mismatch, an empty array, NaN/inf or out-of-range probabilities, or
            targets other than 0/1.
    """
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    if probs.ndim != 2 or targets.ndim != 2:
        raise LocbenchError(
            f"metrics need 2-D arrays (samples x classes); got probs of shape {probs.shape} and targets of "
            f"shape {targets.shape}"
        )
    if probs.shape != targets.shape:
        raise LocbenchError(
            f"probs shape {probs.shape} does not match targets shape {targets.shape}; both must be "
            "(samples, classes) for the same samples and class scheme"
        )
    if probs.shape[0] == 0:
        raise LocbenchError("metrics need at least one sample; the probs/targets arrays are empty")
    if not np.issubdtype(probs.dtype, np.number) or np.issubdtype(probs.dtype, np.complexfloating):
        raise LocbenchError(f"probs must be a real numeric array; got dtype {probs.dtype}")
    probs = probs.astype(np.float64, copy=False)
    bad = ~np.isfinite(probs)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise LocbenchError(
            f"probs contain {int(bad.sum())} NaN/inf value(s) in {rows.size} row(s) (first rows: "
            f"{rows[:5].tolist()}); the model diverged or the predictions file is corrupt: re-run prediction"
        )
    if probs.min() < 0.0 or probs.max() > 1.0:
        raise LocbenchError(
            f"probs must lie in [0, 1]; got values in [{probs.min():.4g}, {probs.max():.4g}]. "
            "Pass sigmoid probabilities, not logits"
        )
    is_binary = (targets == 0) | (targets == 1)
    if not np.all(is_binary):
        odd = np.unique(targets[~is_binary])[:5]
        raise LocbenchError(
            f"targets must be 0/1 multi-hot; found value(s) {odd.tolist()}. "
            "Evaluate against hard labels, not mixed or smoothed targets"
        )
    return probs, targets.astype(bool)


def check_thresholds(thresholds: float | np.ndarray, num_classes: int) -> np.ndarray:
    """Broadcast a scalar or per-class threshold to a ``(num_classes,)`` float64 array, checking it."""
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(num_classes, float(thr))
    if thr.shape != (num_classes,):
        raise LocbenchError(
            f"thresholds must be one number or one per class ({num_classes}); got shape {thr.shape}. "
            "Check that thresholds.json belongs to the same class scheme"
        )
    if not np.all(np.isfinite(thr)):
        raise LocbenchError(f"thresholds must be finite numbers; got {thr.tolist()}")
    return thr


def _counts(probs: np.ndarray, targets: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (tp, fp, fn, tn) as int64 arrays."""
    pred = probs >= thr[None, :]
    tp = np.sum(pred & targets, axis=0, dtype=np.int64)
    fp = np.sum(pred & ~targets, axis=0, dtype=np.int64)
    fn = np.sum(~pred & targets, axis=0, dtype=np.int64)
    tn = targets.shape[0] - tp - fp - fn
    return tp, fp, fn, tn


def multilabel_confusion(probs: np.ndarray, targets: np.ndarray, *, thresholds: float | np.ndarray) -> np.ndarray:
    """Per-class 2x2 confusion matrices, laid out like ``sklearn.metrics.multilabel_confusion_matrix``.

    Args:
        probs: ``(N, C)`` probabilities in [0, 1].
        targets: ``(N, C)`` 0/1 targets.
        thresholds: One threshold for all classes or one per class; positive means ``prob >= threshold``.

    Returns:
        ``(C, 2, 2)`` int64 array; ``[c] == [[tn, fp], [fn, tp]]``.
    """
    probs, targets = check_inputs(probs, targets)
    tp, fp, fn, tn = _counts(probs, targets, check_thresholds(thresholds, probs.shape[1]))
    return np.stack([np.stack([tn, fp], axis=1), np.stack([fn, tp], axis=1)], axis=1)


def cross_confusion(
    probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | Sequence[float] | float
) -> np.ndarray:
    """``(C, C)`` counts: entry ``[a, b]`` is the number of images where class ``a`` is a false positive and class
    ``b`` is among the true classes (what the model said instead of, or besides, the truth).

    The diagonal is zero: a false positive of ``a`` means ``a`` is not true. Inputs as :func:`multilabel_confusion`.
    """
    probs, truth = check_inputs(probs, targets)
    thr = check_thresholds(thresholds, probs.shape[1])
    fp = (probs >= thr[None, :]) & ~truth
    return fp.T.astype(np.int64) @ truth.astype(np.int64)


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    # 2tp / (2tp + fp + fn) is F1 without the 0/0 of precision and recall; callers keep denom > 0.
    denom = 2 * tp + fp + fn
    return np.divide(2.0 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)


def compute_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    class_names: Sequence[str],
    thresholds: float | np.ndarray = 0.5,
) -> dict[str, Any]:
    """Per-class and averaged multi-label metrics at the given thresholds.

    Classes with no positive in ``targets`` are listed in ``absent_classes``, get ``None`` for AP, F1,
    precision and recall, and are excluded from all averages (see the module docstring for why).

    Args:
        probs: ``(N, C)`` probabilities in [0, 1].
        targets: ``(N, C)`` 0/1 targets.
        class_names: The ``C`` class names, in column order.
        thresholds: One threshold for all classes or one per class (e.g. from :func:`tune_thresholds`).

    Returns:
        A JSON-able dict: ``macro_f1``, ``micro_f1``, ``map`` (mean of per-class AP), ``micro_ap`` (AP of all
        present columns pooled), ``per_class`` ({name: {ap, f1, precision, recall, support, threshold}}),
        ``absent_classes`` (names) and ``n_samples``. The averaged numbers are ``None`` when no class is present.

    Raises:
        LocbenchError: on invalid inputs (see :func:`check_inputs`) or a class-name count that does not match.
    """
    probs, targets = check_inputs(probs, targets)
    n, c = probs.shape
    names = [str(x) for x in class_names]
    if len(names) != c:
        raise LocbenchError(
            f"got {len(names)} class names for {c} probability columns; the predictions and the class scheme "
            "do not match"
        )
    thr = check_thresholds(thresholds, c)
    tp, fp, fn, _ = _counts(probs, targets, thr)
    support = tp + fn
    present = support > 0
    f1 = _f1_from_counts(tp, fp, fn)
    precision = np.divide(tp, tp + fp, out=np.zeros(c), where=(tp + fp) > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=present)

    per_class: dict[str, dict[str, Any]] = {}
    aps = []
    for j, name in enumerate(names):
        entry: dict[str, Any] = {"ap": None, "f1": None, "precision": None, "recall": None}
        if present[j]:
            ap = float(average_precision_score(targets[:, j], probs[:, j]))
            aps.append(ap)
            entry = {"ap": ap, "f1": float(f1[j]), "precision": float(precision[j]), "recall": float(recall[j])}
        entry["support"] = int(support[j])
        entry["threshold"] = float(thr[j])
        per_class[name] = entry

    absent = [name for name, p in zip(names, present, strict=True) if not p]
    if absent:
        log.debug(
            "%d of %d classes have no positive in this split and are left out of averages: %s",
            len(absent),
            c,
            ", ".join(absent),
        )
    out: dict[str, Any] = {"macro_f1": None, "micro_f1": None, "map": None, "micro_ap": None}
    if present.any():
        micro = _f1_from_counts(tp[present].sum(), fp[present].sum(), fn[present].sum())
        out = {
            "macro_f1": float(f1[present].mean()),
            "micro_f1": float(micro),
            "map": float(np.mean(aps)),
            "micro_ap": float(average_precision_score(targets[:, present].ravel(), probs[:, present].ravel())),
        }
    else:
        log.warning("no class has a positive among the %d samples: averaged metrics are undefined", n)
    out.update(per_class=per_class, absent_classes=absent, n_samples=int(n))
    return out


def with_tuned(default: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Merge metrics at 0.5 and at tuned thresholds into the ``summary.json`` "val" shape.

    Args:
        default: :func:`compute_metrics` at the default threshold.
        tuned: :func:`compute_metrics` on the same data at tuned thresholds.

    Returns:
        ``default`` plus ``macro_f1_tuned``, ``micro_f1_tuned`` and per-class ``f1_tuned``; each class's
        ``threshold`` becomes the tuned one.
    """
    if set(default["per_class"]) != set(tuned["per_class"]) or default["n_samples"] != tuned["n_samples"]:
        raise LocbenchError("cannot merge metrics computed on different classes or samples")
    merged = dict(default)
    merged["macro_f1_tuned"] = tuned["macro_f1"]
    merged["micro_f1_tuned"] = tuned["micro_f1"]
    merged["per_class"] = {
        name: {**entry, "f1_tuned": tuned["per_class"][name]["f1"], "threshold": tuned["per_class"][name]["threshold"]}
        for name, entry in default["per_class"].items()
    }
    return merged


def _number(x: float | None, width: int, digits: int = 4) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Render metrics as a fixed-width table for the terminal (``locbench evaluate``).

    Accepts the output of :func:`compute_metrics` or :func:`with_tuned` (the ``summary.json`` "val" block); with
    ``tuned_f1: cross-fitted`` the tuned F1 is labelled so.
    Undefined values (absent classes) show as ``-``.

    Args:
        metrics: The metrics dict.

    Returns:
        The headline lines, a blank line, then one row per class.
    """
    per_class = metrics["per_class"]
    tuned = any("f1_tuned" in e for e in per_class.values())
    thresholds = [e["threshold"] for e in per_class.values()]
    # Without tuned numbers, "f1" was computed at each class's own threshold: only call it F1@0.5 if it was.
    f1_label = "F1@0.5" if tuned or all(t == 0.5 for t in thresholds) else "F1@thr"
    name_w = max([5, *(len(n) for n in per_class)])
    cols = [("support", 8), ("AP", 7), (f1_label, 7)] + ([("F1@tuned", 8)] if tuned else [])
    # With tuned numbers, precision and recall are at 0.5 but the threshold shown is the tuned one.
    cols += [("prec", 7), ("recall", 7), ("tuned thr" if tuned else "thresh", 9 if tuned else 7)]
    header = f"{'class':<{name_w}}" + "".join(f" {label:>{w}}" for label, w in cols)
    rows = [header, "-" * len(header)]
    for name, e in per_class.items():
        vals = [f"{e['support']:>8d}", _number(e["ap"], 7), _number(e["f1"], 7)]
        if tuned:
            vals.append(_number(e.get("f1_tuned"), 8))
        # a threshold above 1 is an untrainable class's: never predicted (metrics/thresholds.py)
        thr = f"{'never':>{cols[-1][1]}}" if e["threshold"] > 1 else _number(e["threshold"], cols[-1][1], 3)
        vals += [_number(e["precision"], 7), _number(e["recall"], 7), thr]
        rows.append(f"{name:<{name_w}} " + " ".join(vals))

    present = len(per_class) - len(metrics["absent_classes"])
    head = [
        f"samples: {metrics['n_samples']}   classes present: {present} of {len(per_class)}",
        f"macro F1 ({f1_label[3:]}): {_number(metrics['macro_f1'], 0)}   micro F1: {_number(metrics['micro_f1'], 0)}",
        f"mAP: {_number(metrics['map'], 0)}   micro AP: {_number(metrics['micro_ap'], 0)}",
    ]
    if "macro_f1_tuned" in metrics:
        how = "tuned, cross-fitted" if metrics.get("tuned_f1") == "cross-fitted" else "tuned"
        head.append(
            f"macro F1 ({how}): {_number(metrics['macro_f1_tuned'], 0)}   "
            f"micro F1 ({how}): {_number(metrics.get('micro_f1_tuned'), 0)}"
        )
    if metrics["absent_classes"]:
        head.append("absent (no positives, left out of averages): " + ", ".join(metrics["absent_classes"]))
    return "\n".join(head + [""] + rows)
