"""Per-cell predictions of a finished run, their score on a split part, and a 2021 competition submission.

A cell-level run scores each cell's crop; an image-level run gives every cell of a field that field's
probabilities (the baseline a cell model has to beat). Blending and the Negative rule are
:mod:`locbench.cells.combine`; scoring against the true cells is :mod:`locbench.cells.scoring`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from locbench.cells.combine import apply_negative_rule, blend_probs
from locbench.cells.crops import CellCropDataset
from locbench.cells.data import cell_ids, index_table_cells, resolve_masks
from locbench.cells.metric import PROTOCOLS
from locbench.cells.scoring import CellPredictions, score_cells, segmentation_agreement, truth_cells
from locbench.cells.segment import mask_path, read_mask
from locbench.cells.submission import SubmissionRow, row_from_instances, validate_submission, write_submission
from locbench.data.formats import table_from_config
from locbench.errors import LocbenchError
from locbench.infer.cell_mask import cell_mask_probs, is_cell_mask_run
from locbench.infer.images import (
    FinishedRun,
    as_run,
    check_compatible,
    field_probs,
    infer_probs,
    prediction_table,
    split_rows,
)
from locbench.metrics import small_sample_note, with_note
from locbench.store.partial import partial_path

log = logging.getLogger(__name__)


def _cell_cfg(run: FinishedRun, masks: str | None):
    cfg = run.config.cell
    return dataclasses.replace(cfg, masks=masks) if masks else cfg


def predict_cells(
    run: FinishedRun | str | os.PathLike,
    table: Any,
    *,
    masks: str | None = None,
    image_run: FinishedRun | str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    partial_for: str | os.PathLike | None = None,
) -> CellPredictions:
    """Per-cell probabilities of ``run`` (a cell-level run, or an image-level run copied to its cells).

    Args:
        run: a :class:`~locbench.infer.images.FinishedRun` or a run folder.
        table: the fields to predict (e.g. ``table.subset(val_rows)``).
        masks: where the cells come from: ``auto`` (the dataset's ``masks/``, else segmentation), ``segment``
            (the run's ``cell.backend``), or a mask folder. Default: the run's ``cell.masks``.
        image_run: an image-level run (or folder) whose field probabilities are blended into a cell run's.
        blend: weight of ``image_run``'s probabilities (default the run's ``cell.blend``).
        negative: Negative rule, ``max`` or ``none`` (default the run's ``cell.negative``).
        device, workers: inference device and DataLoader workers (default the run's ``data.workers``).
        partial_for: the output these predictions become: each batch of probabilities is then kept as it finishes
            in its :func:`~locbench.store.partial.partial_path` (an ``image_run``'s field probabilities in
            ``partial_path(partial_for, part="image-run")``), and the same call after a kill continues after the
            last batch kept.

    The run's untrainable classes (no positive training example) are never predicted: their values are NaN,
    which the submission and the cell metric read as "not predicted".
    """
    run = as_run(run)
    cfg = run.config
    workers = cfg.data.workers if workers is None else workers
    masks_dir, _ = resolve_masks(
        _cell_cfg(run, masks), table, cache_dir=cfg.data.cache_dir, workers=max(1, cfg.data.workers)
    )
    cells = index_table_cells(table, masks_dir, cache_dir=cfg.data.cache_dir, workers=max(1, cfg.data.workers))
    level = cfg.train.level
    if image_run is not None and level != "cell":
        raise LocbenchError(f"{run.path} is an image-level run: blend an image run into a cell-level run instead")
    weight = cfg.cell.blend if blend is None else float(blend)
    if image_run is None and weight > 0:
        if blend is not None:
            raise LocbenchError(f"--blend {weight} needs --image-run (an image-level run folder to blend in)")
        weight = 0.0  # the run's configured weight applies only when an image run is given
    partial = partial_path(partial_for) if partial_for is not None else None
    if level == "cell":
        if is_cell_mask_run(run):  # a model.pool=cell_mask probe pools cells from whole fields
            probs = cell_mask_probs(run, table, cells, masks_dir, device=device, workers=workers, partial=partial)
        else:
            probs = _cell_probs(run, table, cells, masks_dir, device=device, workers=workers, partial=partial)
        if image_run is not None and weight > 0:
            image_run = as_run(image_run)
            if image_run.config.train.level != "image":
                raise LocbenchError(f"--image-run {image_run.path} is not an image-level run")
            if image_run.class_names != run.class_names:
                raise LocbenchError(f"--image-run {image_run.path} has other classes than {run.path}")
            field_partial = partial_path(partial_for, part="image-run") if partial_for is not None else None
            field = field_probs(image_run, table, device=device, workers=workers, partial=field_partial)
            probs = blend_probs(probs, field[cells.image_index], weight=weight)
    else:
        probs = field_probs(run, table, device=device, workers=workers, partial=partial)[cells.image_index]
    probs = apply_negative_rule(probs, run.class_names, rule=negative or cfg.cell.negative)
    never = [run.class_names.index(c) for c in run.untrainable]
    if never:
        probs = probs.astype(np.float32, copy=True)
        probs[:, never] = np.nan
    return CellPredictions(table, cells, probs, masks_dir, list(run.class_names))


def _cell_probs(
    run: FinishedRun,
    table: Any,
    cells: Any,
    masks_dir: Path,
    *,
    device: str,
    workers: int,
    partial: str | os.PathLike | None = None,
) -> np.ndarray:
    cfg = run.config
    if not len(cells):
        return np.zeros((0, len(run.class_names)), np.float32)
    ds = CellCropDataset(
        table,
        masks_dir,
        np.arange(len(table)),
        channels=run.meta.get("channels", cfg.data.channels),
        crop_size=cfg.data.img_size,
        margin=cfg.cell.margin,
        masked=cfg.cell.masked,
        index=cells,
    )
    settings = {
        "images": str(table.image_dir),
        "masks": str(masks_dir),
        "cells": cells.digest(),  # the boxes (a mask redrawn under the same cell ids moves them)
        "channels": list(ds.channels),
        "size": ds.crop_size,
        "margin": ds.margin,
        "masked": ds.masked,
    }
    ids = cell_ids(table, cells)
    return infer_probs(
        run, ds, device=device, workers=workers, what="cells", partial=partial, ids=ids, settings=settings
    )


def _remove_partials(out: str | os.PathLike) -> None:
    """The row logs of the output ``out`` once it is written (its own, and an image run's beside it)."""
    partial_path(out).unlink(missing_ok=True)
    partial_path(out, part="image-run").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------


def evaluate_cells(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str | None = None,
    split: str | None = None,
    masks: str | None = None,
    truth_masks: str | None = None,
    image_run: str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    iou_threshold: float = 0.6,
    protocol: str = "challenge",
    device: str = "auto",
    workers: int | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The HPA 2021 cell metric of a run (cell-level, or image-level copied to cells) on a split part (default the
    test part where the run has one, else ``val``).

    Predicted cells come from ``masks`` (see :func:`predict_cells`); the truth is ``truth_masks`` (default
    ``DATA/masks``) with ``DATA/cells.csv``. Writes ``RUN_DIR/eval/cell_<split>.json`` (or ``out``) and the
    per-cell probabilities beside it (``.npz``: ids ``FIELD/CELL``, probs). ``protocol``: ``challenge`` (the
    competition's: a class no true cell of a field carries is not scored in that field) or ``strict`` (such a
    prediction is a false positive); see :mod:`locbench.cells.metric`.

    Returns:
        The written result: ``map``, ``per_class``, ``absent_classes``, ``protocol``, ``n_fields``, ``n_pred_cells``,
        ``n_truth_cells``, the settings used and, when the predicted cells are not the truth's, ``segmentation``
        (pooled agreement at IoU 0.5); plus ``path``.
    """
    if protocol not in PROTOCOLS:  # before any cell is predicted
        raise LocbenchError(f"unknown cell-metric protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    run = as_run(path)
    table = table_from_config(run.config.data, path=data)
    check_compatible(run, table)
    rows, name = split_rows(run, table, split, other_data=data is not None)
    sub = table.subset(rows)
    truth = truth_cells(sub, masks_dir=truth_masks)
    out_path = run.folder.eval_path(f"cell_{name}", out=out)
    preds = predict_cells(
        run,
        sub,
        masks=masks,
        image_run=image_run,
        blend=blend,
        negative=negative,
        device=device,
        workers=workers,
        partial_for=out_path,
    )
    scored = score_cells(preds, truth, iou_threshold=iou_threshold, protocol=protocol)
    n_truth = sum(int(v["num_gt"]) for v in scored["per_class"].values())
    result = {
        "run": str(run.path),
        "level": run.config.train.level,
        "data": str(data or run.config.data.path),
        "split": name,
        "n_fields": len(sub),
        "n_pred_cells": len(preds.cells),
        "n_truth_labels": n_truth,
        "masks": str(preds.masks_dir),
        "truth_masks": str(truth.masks_dir),
        "image_run": str(image_run) if image_run is not None else None,
        "blend": (run.config.cell.blend if blend is None else blend) if image_run is not None else 0.0,
        "negative": negative or run.config.cell.negative,
        "tta": run.config.infer.tta,
        **scored,
        "untrainable_classes": run.untrainable,
    }
    positives = [int(v["num_gt"]) for v in scored["per_class"].values()]
    result["sample_note"] = small_sample_note(len(sub), np.asarray(positives))
    if preds.masks_dir.resolve() != truth.masks_dir.resolve():
        result["segmentation"] = segmentation_agreement(preds, truth)
    arrays = {"ids": np.array(preds.ids()), "probs": preds.probs}
    run.folder.write_eval(f"cell_{name}", result, out=out, arrays=arrays)
    _remove_partials(out_path)
    result["path"] = str(out_path)
    mean = with_note(f"cell mAP {result['map'] or math.nan:.4f} ({protocol} protocol)", result["sample_note"])
    log.info("%s on %d fields (%s) -> %s", mean, len(sub), name, out_path)
    return result


# --------------------------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------------------------


def write_cell_submission(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str,
    out: str | os.PathLike,
    masks: str | None = None,
    image_run: str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    min_confidence: float | None = None,
    device: str = "auto",
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the 2021 competition submission (``ID,ImageWidth,ImageHeight,PredictionString``) and validate it.

    Every field of ``data`` gets one row (empty when it has no cells); each cell gets one triple per class.

    Returns:
        ``{"path", "images", "triples", "cells"}`` from :func:`~locbench.cells.submission.validate_submission`.
    """
    run = as_run(path)
    table = prediction_table(run, data)
    preds = predict_cells(
        run,
        table,
        masks=masks,
        image_run=image_run,
        blend=blend,
        negative=negative,
        device=device,
        workers=workers,
        partial_for=out,
    )
    instances = preds.instances()
    with_cells = set(instances)  # the ids only: each field's mask is read when its row is made

    def rows() -> Iterator[SubmissionRow]:  # one field's row in memory at a time
        for fid in table.ids:
            if fid in with_cells:
                yield row_from_instances(fid, instances[fid], min_confidence=min_confidence)
            else:  # a field without cells still needs its row
                h, w = read_mask(mask_path(preds.masks_dir, fid)).shape
                yield SubmissionRow(fid, w, h, "")

    written = write_submission(out, rows())
    _remove_partials(out)
    counts = validate_submission(written, num_classes=len(run.class_names), ids=table.ids)
    log.info("wrote %d cells of %d fields to %s", counts["cells"], counts["images"], written)
    return {"path": str(written), **counts}
