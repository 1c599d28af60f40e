"""Per-cell probabilities of a ``model.pool: cell_mask`` probe run: its frozen backbone sees each whole field once,
each cell's vector is the mean of the feature map under its mask, and the run's head scores it (as in training:
:mod:`locbench.engine.probe`, :mod:`locbench.models.cell_pool`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locbench.cells.data import cell_ids
from locbench.cells.field_cells import collate_fields
from locbench.engine.device import Accel, pick_device
from locbench.engine.probe import cell_mask_items
from locbench.errors import LocbenchError
from locbench.infer.images import FinishedRun, load_run
from locbench.infer.stream import rows_key, stream_probs
from locbench.models import quirks
from locbench.models.cell_pool import CellMaskEncoder
from locbench.models.pooling import CELL_MASK
from locbench.store.partial import RowLog

log = logging.getLogger(__name__)


def is_cell_mask_run(run: FinishedRun) -> bool:
    """Whether ``run`` pools cells from whole fields (``model.pool: cell_mask``) instead of scoring crops."""
    return run.config.model.pool == CELL_MASK


def cell_mask_probs(
    run: FinishedRun,
    table: Any,
    cells: Any,
    masks_dir: Path,
    *,
    device: str = "auto",
    workers: int | None = None,
    partial: str | os.PathLike | None = None,
) -> np.ndarray:
    """(n_cells, C) float32 probabilities of every cell of ``cells`` (an index over ``table``, from ``masks_dir``),
    in index order; an ensemble folder of such runs gives its members' mean.

    With ``partial`` (a file, :func:`~locbench.store.partial.partial_path` of the output), the cells of each batch of
    fields are kept there as the batch finishes, and the same call after a kill continues with the first field
    not kept (an ensemble's members are not kept: each is a pass of its own).
    """
    if run.config.infer.tta != "none":
        raise LocbenchError(
            f"--tta {run.config.infer.tta} does not apply to {run.path}: a model.pool=cell_mask probe pools each "
            "cell from the whole field's feature map, which test-time augmentation does not transform; use --tta none"
        )
    if not len(cells):
        return np.zeros((0, len(run.class_names)), np.float32)
    members = run.folder.ensemble_members()
    if members:
        probs = [cell_mask_probs(load_run(m), table, cells, masks_dir, device=device, workers=workers) for m in members]
        return np.mean(probs, axis=0).astype(np.float32)
    cfg = run.config
    dev = pick_device(device)
    accel = Accel(dev, Accel.for_config(cfg.train, dev, quirks(cfg.model.backbone)).dtype)  # a probe: no layout
    normalize, model = run.bare_model()
    channels = tuple(run.meta.get("channels", cfg.data.channels))
    items, spans = cell_mask_items(cfg, table, cells, masks_dir, model.backbone, channels, cached=False)
    probe = accel.place(CellMaskProbe(CellMaskEncoder(model.backbone, normalize), model.head).eval())
    batch_size = 2 * cfg.train.batch_size
    rows = None
    if partial is not None:
        settings = {
            "images": str(table.image_dir),
            "masks": str(masks_dir),
            "cells": cells.digest(),
            "channels": list(channels),
            "size": cfg.data.img_size,
            "resize": cfg.data.resize,
            "grid": list(items.grid),
            "batch_size": batch_size,
            "device": dev.type,
            "dtype": str(accel.dtype),
        }
        key = rows_key(
            checkpoint=str(run.meta.get("sha256", run.path)), model=probe, ids=cell_ids(table, cells), settings=settings
        )
        rows = RowLog(partial, key=key, columns=len(run.class_names))
    log.info("cell_mask probe: %d cells of %d fields at %d px", len(cells), len(items), cfg.data.img_size)
    return stream_probs(
        probe,
        items,
        accel=accel,
        columns=len(run.class_names),
        batch_size=batch_size,
        workers=cfg.data.workers if workers is None else workers,
        rows=rows,
        progress=cfg.log.progress,
        what="cells",
        bounds=spans.bounds,
        collate=collate_fields,
    )


class CellMaskProbe(torch.nn.Module):
    """A ``cell_mask`` probe's whole model: ``forward(fields, cell weights)`` → one row of logits per cell. The cells'
    vectors are float32 (as in the embedding cache training read); the head runs under the caller's autocast."""

    def __init__(self, encoder: CellMaskEncoder, head: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor, masks: Any) -> torch.Tensor:
        return self.head(self.encoder(x, masks).float())
