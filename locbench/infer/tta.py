"""Test-time augmentation of a finished run at evaluate and predict time, with thresholds that fit it.

The model side is :mod:`locbench.models.tta` (:meth:`FinishedRun.model` averages over the views of
``config.infer.tta``). Averaging over flips changes the distribution of the scores (they spread less: each is a
mean of several), so thresholds tuned on plain probabilities would cut in the wrong place. A run's own thresholds
were tuned on probabilities made with its own ``infer.tta`` (training ends by predicting the validation part with
it); asking for another mode here re-predicts the run's validation part with that mode and tunes the thresholds
again on it, by the rules training uses (:func:`~locbench.metrics.tune_thresholds`: classes with fewer than
``MIN_TUNE_POSITIVES`` validation positives keep 0.5, classes never seen in training stay never predicted).
The cell level scores and submits probabilities, never thresholded labels: no re-tuning there.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from locbench.config import load_config
from locbench.data.formats import table_from_config
from locbench.data.splits import load_split
from locbench.errors import LocbenchError
from locbench.infer.images import FinishedRun, field_probs
from locbench.metrics import never_predicted, tune_thresholds
from locbench.models import TTA_MODES, TTA_PASSES

log = logging.getLogger(__name__)


def own_tta(run: FinishedRun) -> str:
    """The test-time augmentation the run's stored predictions and thresholds were made with (its ``config.yaml``)."""
    return load_config(run.folder.config).infer.tta


def tta_words(mode: str) -> str:
    """``d8 (x8 forward passes per image)``: a mode with its cost, for printed output."""
    n = TTA_PASSES[mode]
    return f"{mode} (x{n} forward pass{'es' if n > 1 else ''} per image)"


def _with_tta(cfg, mode: str):
    """``cfg`` predicting with test-time augmentation ``mode``. Not ``cfg.replace``: its training checks refuse TTA
    for a probe (whose end-of-training pass reads cached embeddings), while evaluate and predict run the whole model
    on every view of the images."""
    return dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, tta=mode))


def use_tta(
    run: FinishedRun,
    mode: str | None,
    *,
    level: str = "image",
    device: str = "auto",
    workers: int | None = None,
) -> FinishedRun:
    """``run`` set to predict with test-time augmentation ``mode`` (None: the run's own ``infer.tta``).

    At image level with a mode other than the one the run's thresholds were tuned with, the run's validation part
    (its own data and split) is predicted with ``mode`` and the thresholds are tuned again on those probabilities
    (:attr:`FinishedRun.thresholds_from` says so). Raises :class:`LocbenchError` for an unknown mode, or when the
    validation images needed for that are not readable.
    """
    if mode is None or mode == run.config.infer.tta:
        return run
    if mode not in TTA_PASSES:
        raise LocbenchError(f"--tta {mode!r}: use one of {', '.join(TTA_MODES)}")
    run = dataclasses.replace(run, config=_with_tta(run.config, mode))
    if level == "cell" or mode == own_tta(run):
        return run
    own = load_config(run.folder.config)  # the run's own data (a --data layout override is for the scored data)
    tuning = dataclasses.replace(run, config=_with_tta(own, mode))
    try:
        table = table_from_config(own.data)
        rows = load_split(run.folder.split).indices(table, "val")
    except LocbenchError as e:
        raise LocbenchError(
            f"--tta {mode}: the thresholds of {run.path} were tuned on probabilities without it ({own.infer.tta}); "
            f"re-tuning them needs the run's validation images, which cannot be read ({e}). Make the data of "
            f"{run.folder.config} readable, or use the run's own --tta {own.infer.tta}"
        ) from None
    log.info(
        "test-time augmentation %s: predicting the run's %d validation images with it to tune the thresholds again",
        tta_words(mode),
        len(rows),
    )
    probs = field_probs(tuning, table, rows, device=device, workers=workers)
    targets = table.targets[rows]
    positives = run.summary.get("train_positives")
    if isinstance(positives, dict) and set(positives) == set(run.class_names):
        train_positives = np.asarray([positives[c] for c in run.class_names], dtype=np.int64)
    else:  # an older summary: keep the run's never-predicted classes never predicted
        train_positives = (~never_predicted(run.thresholds)).astype(np.int64)
    thresholds = tune_thresholds(probs, targets, train_positives=train_positives)
    return dataclasses.replace(
        run,
        thresholds=thresholds,
        thresholds_from=f"re-tuned on the run's validation part with test-time augmentation {mode}",
    )
