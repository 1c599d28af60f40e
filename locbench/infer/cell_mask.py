"""Per-cell probabilities of a ``model.pool: cell_mask`` probe run: its frozen backbone sees each whole field once,
each cell's vector is the mean of the feature map under its mask, and the run's head scores it (as in training:
:mod:`locbench.engine.probe`, :mod:`locbench.models.cell_pool`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from locbench.cells.field_cells import collate_fields
from locbench.engine.data import make_loader, to_unit
from locbench.engine.device import Accel, pick_device
from locbench.engine.probe import cell_mask_items
from locbench.errors import LocbenchError
from locbench.infer.images import FinishedRun, load_run
from locbench.models import quirks
from locbench.models.cell_pool import CellMaskEncoder
from locbench.models.pooling import CELL_MASK

log = logging.getLogger(__name__)


def is_cell_mask_run(run: FinishedRun) -> bool:
    """Whether ``run`` pools cells from whole fields (``model.pool: cell_mask``) instead of scoring crops."""
    return run.config.model.pool == CELL_MASK


def cell_mask_probs(
    run: FinishedRun, table: Any, cells: Any, masks_dir: Path, *, device: str = "auto", workers: int | None = None
) -> np.ndarray:
    """(n_cells, C) float32 probabilities of every cell of ``cells`` (an index over ``table``, from ``masks_dir``),
    in index order; an ensemble folder of such runs gives its members' mean."""
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
    encoder = accel.place(CellMaskEncoder(model.backbone, normalize).eval())
    head = accel.place(model.head.eval())
    workers = cfg.data.workers if workers is None else workers
    loader = make_loader(
        items, batch_size=2 * cfg.train.batch_size, workers=workers, pin=accel.pin, collate_fn=collate_fields
    )
    out = np.zeros((len(cells), len(run.class_names)), np.float32)
    log.info("cell_mask probe: %d cells of %d fields at %d px", len(cells), len(items), cfg.data.img_size)
    start = 0
    with torch.no_grad():
        for x, masks in loader:
            x = to_unit(x.to(dev, non_blocking=True))
            with accel.autocast():  # as in training: float32 embeddings (the cache's), the head under autocast
                feats = encoder(x, masks).float()
                logits = head(feats)
            out[spans.bounds[start] : spans.bounds[start] + len(feats)] = torch.sigmoid(logits.float()).cpu().numpy()
            start += len(x)
    return out
