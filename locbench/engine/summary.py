"""The end of a run: thresholds tuned on the best epoch's validation predictions, and ``summary.json``.

``summary.json`` holds a ``val`` block (the best epoch's validation predictions; tuned F1 cross-fitted) and, for a
run with a test part, a ``test`` block (the best checkpoint's predictions of the test part, scored once at the
end; tuned F1 at the validation thresholds). docs/VALIDATION.md says what each number is measured on.

:func:`summarize` is a pure function of the predictions, the metrics history and the run's cost;
:func:`finish_run` reads those from the run folder, writes the results through :class:`RunDir` and marks it done.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from locbench.engine.device import peak_memory_mb
from locbench.metrics import (
    compute_metrics,
    crossfit_metrics,
    small_sample_note,
    threshold_sources,
    tune_thresholds,
    untrainable_note,
    with_note,
)
from locbench.store.rundir import Predictions, RunDir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def summarize(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    history: Sequence[dict[str, Any]],
    *,
    best_epoch: int | None,
    cost: dict[str, Any],
    device: str,
    test: Predictions | None = None,
    train_positives: np.ndarray | None = None,
    n_fields: int | None = None,
    n_test_fields: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-class thresholds tuned on ``probs`` and the content of ``summary.json``.

    The ``val`` block's tuned F1 is cross-fitted (:func:`~locbench.metrics.crossfit_metrics`): F1 of thresholds
    scored on the images they were tuned on is never written. The ``test`` block (with ``test``) scores the best
    checkpoint's test predictions at 0.5 and at the thresholds tuned on all of validation.

    Args:
        probs, targets: the best epoch's validation predictions, (N, C).
        class_names: the C class names.
        history: the metrics lines of the epochs run.
        best_epoch: the epoch of the best validation mAP (1-based).
        cost: the ``cost`` section (:func:`run_cost`).
        device: where the run trained.
        test: the best checkpoint's predictions of the test part, if the run has one.
        train_positives: (C,) positive training items per class (None: unknown, every class trainable); a
            class with none is never predicted (:func:`~locbench.metrics.tune_thresholds`).
        n_fields, n_test_fields: validation and test fields (a cell-level run has more items than fields; None:
            one field per item).
    """
    thresholds = tune_thresholds(probs, targets, train_positives=train_positives)
    crossfit = crossfit_metrics(probs, targets, class_names=class_names, train_positives=train_positives)
    val = _block(probs, targets, class_names, thresholds, crossfit)
    summary: dict[str, Any] = {"format_version": FORMAT_VERSION, "val": val}
    if test is not None:
        tuned = compute_metrics(test.probs, test.targets, class_names=class_names, thresholds=thresholds)
        summary["test"] = _block(test.probs, test.targets, class_names, thresholds, tuned)
    summary.update(best_epoch=best_epoch, epochs_run=len(history), cost=cost, device=device)
    annotate_reliability(
        summary,
        targets,
        class_names,
        train_positives=train_positives,
        n_fields=n_fields,
        test_targets=None if test is None else test.targets,
        n_test_fields=n_test_fields,
    )
    return thresholds, summary


def _block(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    thresholds: np.ndarray,
    tuned: dict[str, Any] | None,
) -> dict[str, Any]:
    """One part's metrics: at 0.5, threshold-free (AP), and ``tuned`` (None: too few images to cross-fit).

    ``tuned_f1`` says what the tuned F1 is: ``cross-fitted`` (validation, ``crossfit_folds`` folds) or
    ``val thresholds`` (another part scored with the thresholds tuned on validation)."""
    at_half = compute_metrics(probs, targets, class_names=class_names, thresholds=0.5)
    per_class = {}
    for name in class_names:
        row = dict(at_half["per_class"][name])
        row["f1_tuned"] = tuned["per_class"][name]["f1"] if tuned else None
        row["threshold"] = float(thresholds[class_names.index(name)])
        per_class[name] = row
    block = {
        "macro_f1": at_half["macro_f1"],
        "micro_f1": at_half["micro_f1"],
        "map": at_half["map"],
        "macro_f1_tuned": tuned["macro_f1"] if tuned else None,
        "micro_f1_tuned": tuned["micro_f1"] if tuned else None,
        "tuned_f1": "cross-fitted" if tuned is None or "folds" in tuned else "val thresholds",
        "n_images": int(len(targets)),
        "per_class": per_class,
        "absent_classes": at_half["absent_classes"],
    }
    if tuned is None or "folds" in tuned:
        block["crossfit_folds"] = tuned["folds"] if tuned else None
    return block


def annotate_reliability(
    summary: dict[str, Any],
    targets: np.ndarray,
    class_names: list[str],
    *,
    train_positives: np.ndarray | None,
    n_fields: int | None,
    test_targets: np.ndarray | None = None,
    n_test_fields: int | None = None,
) -> None:
    """Add to ``summary`` what its numbers can and cannot support (docs/VALIDATION.md, "Per-class thresholds").

    Per class ``threshold_source`` (tuned, fallback or untrainable); ``train_positives`` (positive training items
    per class, null when unknown) and ``untrainable_classes`` (no positive training example: never predicted);
    in ``val``, ``n_fields`` and ``sample_note`` (a warning when the validation numbers rest on too few fields or
    classes with too few positives, else null); the same two in ``test`` when the summary has a test block.
    """
    val_positives = np.asarray(targets).sum(axis=0)
    sources = threshold_sources(val_positives, train_positives)
    parts_present = [part for part in ("val", "test") if part in summary]
    for name, source in zip(class_names, sources, strict=True):
        for part in parts_present:
            summary[part]["per_class"][name]["threshold_source"] = source
    parts = [("val", targets, n_fields)] + ([("test", test_targets, n_test_fields)] if "test" in summary else [])
    for part, part_targets, fields in parts:
        fields = int(len(part_targets)) if fields is None else int(fields)
        summary[part]["n_fields"] = fields
        summary[part]["sample_note"] = small_sample_note(fields, np.asarray(part_targets).sum(axis=0))
    summary["train_positives"] = (
        None
        if train_positives is None
        else {name: int(k) for name, k in zip(class_names, np.asarray(train_positives).tolist(), strict=True)}
    )
    summary["untrainable_classes"] = [name for name, s in zip(class_names, sources, strict=True) if s == "untrainable"]


def run_cost(
    history: Sequence[dict[str, Any]],
    *,
    params: int,
    gmacs: float,
    epoch_times: list[float],
    throughputs: list[float],
    device: torch.device,
) -> dict[str, Any]:
    """The ``cost`` section: size, median epoch time and throughput, peak accelerator memory.

    ``epoch_times`` and ``throughputs`` are this process's; when empty (resumed after the last epoch had
    finished) they are taken from the metrics ``history``.
    """
    if not epoch_times:
        epoch_times = [r["time/epoch_s"] for r in history]
        throughputs = [r["train/img_per_s"] for r in history]
    return {
        "params": params,
        "gmacs": gmacs,
        "train_img_per_s": statistics.median(throughputs) if throughputs else None,
        "epoch_s": statistics.median(epoch_times) if epoch_times else None,
        "peak_mem_mb": peak_memory_mb(device),
    }


def finish_run(
    run: RunDir,
    class_names: list[str],
    *,
    best_epoch: int | None,
    params: int,
    gmacs: float,
    epoch_times: list[float],
    throughputs: list[float],
    device: torch.device,
    train_positives: np.ndarray | None = None,
    n_fields: int | None = None,
    n_test_fields: int | None = None,
    weights: dict[str, Any] | None = None,
) -> None:
    """Tune thresholds on the best epoch's validation predictions, write ``thresholds.json`` and
    ``summary.json`` (with the ``test`` block when ``predictions/test.npz`` is there); status done.
    ``train_positives``, ``n_fields`` and ``n_test_fields``: see :func:`summarize`. ``weights``: what loading
    the pretrained weights file did (``pretrained_weights``, :class:`~locbench.models.weights.WeightsReport`)."""
    preds = run.read_predictions("val")
    test = run.read_predictions("test") if run.has_predictions("test") else None
    history = run.read_metrics()
    cost = run_cost(
        history, params=params, gmacs=gmacs, epoch_times=epoch_times, throughputs=throughputs, device=device
    )
    thresholds, summary = summarize(
        preds.probs,
        preds.targets,
        class_names,
        history,
        best_epoch=best_epoch,
        cost=cost,
        device=str(device),
        test=test,
        train_positives=train_positives,
        n_fields=n_fields,
        n_test_fields=n_test_fields,
    )
    if weights is not None:
        summary["pretrained_weights"] = weights
    run.write_thresholds(class_names, thresholds)
    run.write_summary(summary)
    run.set_status("done")
    part = "test" if "test" in summary else "val"
    block = summary[part]
    if summary["untrainable_classes"]:
        log.warning("%s", untrainable_note(summary["untrainable_classes"]))
    log.info(
        "done: best epoch %s (by val mAP); %s, macro F1 %.4f at 0.5, %.4f with %s -> %s",
        best_epoch,
        with_note(f"{part} mAP {nan_if_none(block['map']):.4f}", block["sample_note"]),
        nan_if_none(block["macro_f1"]),
        nan_if_none(block["macro_f1_tuned"]),
        "the val-tuned thresholds" if part == "test" else "cross-fitted tuned thresholds (no test part)",
        run.root,
    )


def nan_if_none(x: float | None) -> float:
    """A metric for a log line: None (undefined, no class present) prints as nan."""
    return float("nan") if x is None else x
