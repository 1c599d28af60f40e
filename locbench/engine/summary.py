"""The end of a run: thresholds tuned on the best epoch's validation predictions, and ``summary.json``.

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
from locbench.metrics import compute_metrics, tune_thresholds
from locbench.store.rundir import RunDir

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
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-class thresholds tuned on ``probs`` and the content of ``summary.json``.

    Args:
        probs, targets: the best epoch's validation predictions, (N, C).
        class_names: the C class names.
        history: the metrics lines of the epochs run.
        best_epoch: the epoch of the best validation mAP (1-based).
        cost: the ``cost`` section (:func:`run_cost`).
        device: where the run trained.
    """
    thresholds = tune_thresholds(probs, targets)
    at_half = compute_metrics(probs, targets, class_names=class_names, thresholds=0.5)
    tuned = compute_metrics(probs, targets, class_names=class_names, thresholds=thresholds)
    per_class = {}
    for name in class_names:
        row = dict(at_half["per_class"][name])
        row["f1_tuned"] = tuned["per_class"][name]["f1"]
        row["threshold"] = float(thresholds[class_names.index(name)])
        per_class[name] = row
    summary = {
        "format_version": FORMAT_VERSION,
        "val": {
            "macro_f1": at_half["macro_f1"],
            "micro_f1": at_half["micro_f1"],
            "map": at_half["map"],
            "macro_f1_tuned": tuned["macro_f1"],
            "micro_f1_tuned": tuned["micro_f1"],
            "n_images": int(len(targets)),
            "per_class": per_class,
            "absent_classes": at_half["absent_classes"],
        },
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "cost": cost,
        "device": device,
    }
    return thresholds, summary


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
) -> None:
    """Tune thresholds on the best epoch's validation predictions, write ``thresholds.json`` and
    ``summary.json``; status done."""
    preds = run.read_predictions("val")
    history = run.read_metrics()
    cost = run_cost(
        history, params=params, gmacs=gmacs, epoch_times=epoch_times, throughputs=throughputs, device=device
    )
    thresholds, summary = summarize(
        preds.probs, preds.targets, class_names, history, best_epoch=best_epoch, cost=cost, device=str(device)
    )
    run.write_thresholds(class_names, thresholds)
    run.write_summary(summary)
    run.set_status("done")
    val = summary["val"]
    log.info(
        "done: best epoch %s, val mAP %.4f, macro F1 %.4f at 0.5, %.4f with tuned thresholds -> %s",
        best_epoch,
        nan_if_none(val["map"]),
        nan_if_none(val["macro_f1"]),
        nan_if_none(val["macro_f1_tuned"]),
        run.root,
    )


def nan_if_none(x: float | None) -> float:
    """A metric for a log line: None (undefined, no class present) prints as nan."""
    return float("nan") if x is None else x
