"""Using finished runs: evaluation and prediction, at image level (:mod:`.images`) or cell level (:mod:`.cells`).

The level is decided here, once (:func:`resolve_level`): the caller's choice, else the run's ``train.level``.
An image-level run can be scored per cell (every cell takes its field's probabilities); a cell-level run is
always scored per cell.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from locbench.errors import LocbenchError
from locbench.infer import images
from locbench.infer.cells import evaluate_cells, predict_cells, write_cell_submission
from locbench.infer.images import (
    FinishedRun,
    as_run,
    check_compatible,
    default_split,
    field_probs,
    infer_probs,
    load_run,
    prediction_table,
    run_level,
    split_rows,
)
from locbench.infer.tta import own_tta, tta_words, use_tta

LEVELS = ("image", "cell")

__all__ = [
    "LEVELS",
    "FinishedRun",
    "as_run",
    "check_compatible",
    "default_split",
    "evaluate",
    "evaluate_cells",
    "field_probs",
    "infer_probs",
    "load_run",
    "predict",
    "predict_cells",
    "prediction_table",
    "resolve_level",
    "run_level",
    "split_rows",
    "own_tta",
    "tta_words",
    "use_tta",
    "write_cell_submission",
]


def resolve_level(run: FinishedRun, level: str | None = None) -> str:
    """The level to score or predict ``run`` at: ``level`` when given, else the run's ``train.level``."""
    level = level or run.config.train.level
    if level not in LEVELS:
        raise LocbenchError(f"level {level!r}: use one of {', '.join(LEVELS)}")
    return level


def evaluate(
    run: FinishedRun | str | os.PathLike,
    *,
    level: str | None = None,
    data: str | None = None,
    split: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    out: str | os.PathLike | None = None,
    masks: str | None = None,
    truth_masks: str | None = None,
    image_run: FinishedRun | str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    protocol: str = "challenge",
    tta: str | None = None,
) -> dict[str, Any]:
    """Score a finished run on a split part of its data (``val``, ``test``, ``all``; default the test part where the
    run has one, else ``val``) or on another dataset.

    Image level: :func:`~locbench.infer.images.evaluate` (``RUN_DIR/eval/<split>.json``). Cell level:
    :func:`~locbench.infer.cells.evaluate_cells`, the HPA 2021 metric (``RUN_DIR/eval/cell_<split>.json``), which
    alone reads ``masks``, ``truth_masks``, ``image_run``, ``blend``, ``negative`` and ``protocol`` (``challenge``,
    the competition's, or ``strict``; see :mod:`locbench.cells.metric`).

    ``tta``: test-time augmentation (:data:`~locbench.models.TTA_MODES`; None: the run's ``infer.tta``); at image
    level another mode than the run's re-tunes the thresholds on its validation part (:func:`use_tta`).

    Returns:
        The written result, with ``path``.
    """
    run = as_run(run)
    level = resolve_level(run, level)
    run = use_tta(run, tta, level=level, device=device, workers=workers)
    if level == "cell":
        return evaluate_cells(
            run,
            data=data,
            split=split,
            masks=masks,
            truth_masks=truth_masks,
            image_run=image_run,
            blend=blend,
            negative=negative,
            protocol=protocol,
            device=device,
            workers=workers,
            out=out,
        )
    return images.evaluate(run, data=data, split=split, device=device, workers=workers, out=out)


def predict(
    run: FinishedRun | str | os.PathLike,
    *,
    data: str,
    out: str | os.PathLike,
    level: str | None = None,
    output_format: str = "csv",
    device: str = "auto",
    workers: int | None = None,
    masks: str | None = None,
    image_run: FinishedRun | str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    min_confidence: float | None = None,
    tta: str | None = None,
) -> Path | dict[str, Any]:
    """Predict the images of ``data`` with a finished run.

    Image level: per-image probabilities and labels (:func:`~locbench.infer.images.predict`, ``output_format`` csv or
    kaggle2018); returns the written path. Cell level: the 2021 competition submission
    (:func:`~locbench.infer.cells.write_cell_submission`, which alone reads ``masks``, ``image_run``, ``blend``,
    ``negative`` and ``min_confidence``); returns its counts and path. ``tta``: as for :func:`evaluate`.
    """
    run = as_run(run)
    level = resolve_level(run, level)
    run = use_tta(run, tta, level=level, device=device, workers=workers)
    if level == "cell":
        return write_cell_submission(
            run,
            data=data,
            out=out,
            masks=masks,
            image_run=image_run,
            blend=blend,
            negative=negative,
            min_confidence=min_confidence,
            device=device,
            workers=workers,
        )
    return images.predict(run, data=data, out=out, output_format=output_format, device=device, workers=workers)
