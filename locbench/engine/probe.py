"""Frozen-backbone probes (``model.mode: probe``): embeddings computed once, only the head trains on them.

The run folder is a normal one: the checkpoints hold the whole model (the frozen backbone and the trained head),
so ``evaluate``, ``predict``, ``explain`` and the report use a probe run as any other and get the probabilities of
the training pass (up to float rounding: the same network, on batches of another size).

What makes probes cheap is sharing: every run that probes the same backbone (weights, pooling) on the same items
(image or crop cache, channels, size, resize policy) with the same input normalisation reads one embedding cache
(:mod:`locbench.engine.embed`). So that the runs of a sweep's seeds share it:

- a backbone without pretrained weights starts from one fixed seed (:data:`BACKBONE_SEED`), not the run's: the
  seed varies the head (its initialisation and the data order), as for a pretrained backbone;
- the normalisation statistics are drawn with seed 0 (all training images up to 256, then a fixed sample).

A cell-level probe with ``model.pool: cell_mask`` embeds no crops: the backbone sees every field that holds cells
once, whole, at ``data.img_size`` (read from the image cache an image-level run of that size uses), and each cell's
row is the mean of the feature map under its mask (:mod:`locbench.models.cell_pool`). The cache's rows are still
the cells of the cell index, in order; its resume unit is a field. Its normalisation statistics come from the
training part's whole fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from locbench.cells.data import crop_cache_key
from locbench.cells.field_cells import FieldCellDataset, FieldsWithCells, collate_fields, masks_signature
from locbench.data.cache import cache_from_config, cache_key
from locbench.data.channels import unique_stains
from locbench.data.dataset import FieldDataset
from locbench.engine.data import PreparedData
from locbench.engine.embed import Embeddings, build_embeddings, embedding_folder, embedding_key, weights_digest
from locbench.engine.inputs import Normalize
from locbench.engine.seed import derive_seed
from locbench.models import LocModel, build_model
from locbench.models.cell_pool import CellMaskEncoder, grid_size
from locbench.models.pooling import CELL_MASK

log = logging.getLogger(__name__)

#: The seed a probe's backbone is initialised from when it has no pretrained weights (every run the same).
BACKBONE_SEED = derive_seed("probe", "backbone")
#: Seed of the normalisation statistics' sample of a probe (every run the same).
STATS_SEED = 0


def build_probe_model(cfg: Any, *, num_classes: int, in_chans: int) -> LocModel:
    """The model of a probe run: the backbone frozen (eval mode, no gradients), the head initialised from the run's
    seed (``derive_seed(train.seed, "init")``)."""
    torch.manual_seed(BACKBONE_SEED)
    model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans, img_size=cfg.data.img_size)
    model.backbone.requires_grad_(False)
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    for m in model.head.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def item_rows(data: Any, part: str) -> np.ndarray:
    """Rows of the embedding cache (fields of the table, or cells of the cell index) of split part ``part``."""
    return data.cell_parts[part] if hasattr(data, "cell_parts") else data.parts[part]


def all_items(data: Any) -> Dataset:
    """Every item of ``data`` (all fields, or all cells), in row order: what the embedding cache holds."""
    if hasattr(data, "cell_parts"):
        return replace(data, cell_parts={"all": np.arange(len(data.cells))}).dataset("all")
    return replace(data, parts={"all": np.arange(len(data.table))}).dataset("all")


def items_key(data: Any) -> str:
    """The identity of the items: the key of the image cache (or the crop cache) they are read from."""
    stains = unique_stains(data.channels)
    if data.cache is not None:  # its folder is named by its key (built or checked moments ago)
        return data.cache.path.name
    if hasattr(data, "cell_parts"):
        return crop_cache_key(
            data.table,
            data.cells,
            data.masks_dir,
            stains=stains,
            size=data.img_size,
            margin=data.margin,
            masked=data.masked,
        )
    return cache_key(data.table, stains, data.img_size, data.resize_policy)


def _embedding_inputs(
    cfg: Any, data: Any, model: LocModel, *, mean: list[float], std: list[float], dtype: torch.dtype | None, items: str
) -> dict[str, Any]:
    """What every probe's embeddings depend on (their cache key's parts), ``items`` naming the images read."""
    return {
        "backbone": cfg.model.timm_name,
        "weights": weights_digest(model.backbone),
        "items": items,
        "level": cfg.train.level,
        "channels": list(data.channels),
        "img_size": cfg.data.img_size,
        "resize": cfg.data.resize,
        "pool": cfg.model.pool,
        "norm_mean": [float(v) for v in mean],
        "norm_std": [float(v) for v in std],
        "dtype": str(dtype) if dtype is not None else "float32",
    }


def probe_embeddings(
    cfg: Any,
    data: Any,
    model: LocModel,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device,
    dtype: torch.dtype | None,
    workers: int,
) -> Embeddings:
    """The embedding cache of ``data``'s items under ``model``'s frozen backbone, built now or reused."""
    if cfg.model.pool == CELL_MASK:
        return _cell_mask_embeddings(cfg, data, model, mean=mean, std=std, device=device, dtype=dtype, workers=workers)
    inputs = _embedding_inputs(cfg, data, model, mean=mean, std=std, dtype=dtype, items=items_key(data))
    key = embedding_key(inputs)
    folder = embedding_folder(cfg.data.cache_dir, cfg.model.timm_name, cfg.model.pool, key)
    encoder = torch.nn.Sequential(Normalize(mean, std), model.backbone)
    return build_embeddings(
        encoder,
        all_items(data),
        folder=folder,
        dim=model.backbone.num_features,
        meta={**inputs, "key": key, "data": cfg.data.path},
        device=device,
        dtype=dtype,
        batch_size=2 * cfg.train.batch_size,
        workers=workers,
    )


def field_images(cfg: Any, table: Any, rows: np.ndarray, channels: tuple[str, ...], *, cached: bool) -> FieldDataset:
    """Whole fields ``rows`` of ``table`` at ``data.img_size``: from the image cache (built or reused) with
    ``cached`` and ``data.cache``, else decoded from the files."""
    dcfg = cfg.data
    cache = cache_from_config(table, dcfg) if cached and dcfg.cache else None
    return FieldDataset(table, rows, channels=channels, size=dcfg.img_size, cache=cache, resize_policy=dcfg.resize)


def stats_items(cfg: Any, data: Any, train_ds: Dataset) -> Dataset:
    """What a probe's normalisation statistics are drawn from: the training items, or under ``cell_mask`` the
    training part's whole fields (what the backbone sees)."""
    if cfg.model.pool != CELL_MASK:
        return train_ds
    return field_images(cfg, data.table, data.parts["train"], data.channels, cached=True)


def cell_mask_items(
    cfg: Any,
    table: Any,
    cells: Any,
    masks_dir: Any,
    backbone: torch.nn.Module,
    channels: tuple[str, ...],
    *,
    cached: bool,
) -> tuple[FieldCellDataset, FieldsWithCells]:
    """The fields of ``table`` holding cells, each with its cells' soft masks on ``backbone``'s feature grid at
    ``data.img_size`` (what :class:`~locbench.models.cell_pool.CellMaskEncoder` takes), and the cell rows of each."""
    spans = FieldsWithCells.of(cells, len(table))
    fields = field_images(cfg, table, spans.fields, channels, cached=cached)
    grid = grid_size(backbone, in_chans=len(fields.channels), size=cfg.data.img_size)
    return FieldCellDataset(fields, cells, masks_dir, grid=grid, spans=spans), spans


def _fields_key(fields: FieldDataset, data: Any) -> str:
    """The identity of the whole fields a ``cell_mask`` probe reads: the key of their image cache (its folder is
    named by it: the files were checked when it was opened), else of the files."""
    if fields.cache is not None:
        return fields.cache.path.name
    return cache_key(data.table, unique_stains(data.channels), fields.size, fields.resize_policy)


def _cell_mask_embeddings(
    cfg: Any,
    data: Any,
    model: LocModel,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device,
    dtype: torch.dtype | None,
    workers: int,
) -> Embeddings:
    """:func:`probe_embeddings` under ``model.pool: cell_mask``: one row per cell, one backbone pass per field."""
    items, spans = cell_mask_items(
        cfg, data.table, data.cells, data.masks_dir, model.backbone, data.channels, cached=True
    )
    inputs = {
        **_embedding_inputs(
            cfg,
            data,
            model,
            mean=mean,
            std=std,
            dtype=dtype,
            items=_fields_key(items.images, data),
        ),
        "cells": masks_signature(data.table, data.cells, data.masks_dir),
        "grid": list(items.grid),
    }
    key = embedding_key(inputs)
    folder = embedding_folder(cfg.data.cache_dir, cfg.model.timm_name, cfg.model.pool, key)
    log.info(
        "cell_mask pooling: %d fields of %d cells at %d px, a %d x %d feature grid",
        len(items),
        len(data.cells),
        cfg.data.img_size,
        *items.grid,
    )
    return build_embeddings(
        CellMaskEncoder(model.backbone, Normalize(mean, std)),
        items,
        folder=folder,
        dim=model.backbone.num_features,
        meta={**inputs, "key": key, "data": cfg.data.path, "masks": str(data.masks_dir)},
        device=device,
        dtype=dtype,
        batch_size=2 * cfg.train.batch_size,
        workers=workers,
        spans=spans.bounds,
        collate=collate_fields,
    )


#: A part's embeddings up to this size are read into memory once (a head's epoch is then a few tensor copies);
#: larger ones are read from the memory map item by item.
IN_MEMORY_BYTES = 2 * 1024**3


class FeatureDataset(Dataset):
    """Items ``(float32 features (D,), float32 multi-hot target)`` of some rows of an embedding cache."""

    def __init__(self, features: Embeddings, rows: np.ndarray, targets: np.ndarray) -> None:
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        self.loaded: torch.Tensor | None = None
        if len(self.rows) * features.dim * 4 <= IN_MEMORY_BYTES:
            self.loaded = torch.from_numpy(np.asarray(features.array[self.rows], dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loaded is not None:
            return self.loaded[i], self.targets[i]
        return torch.from_numpy(np.array(self.features.array[self.rows[i]], dtype=np.float32)), self.targets[i]


@dataclass
class ProbeData:
    """The prepared data of a probe run: the run's data (split, ids, targets) with embeddings for items."""

    data: PreparedData | Any
    features: Embeddings

    @property
    def parts(self) -> dict[str, np.ndarray]:
        return self.data.parts

    @property
    def channels(self) -> tuple[str, ...]:
        return self.data.channels

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def cache(self) -> Embeddings:
        return self.features

    def dataset(self, part: str) -> FeatureDataset:
        return FeatureDataset(self.features, item_rows(self.data, part), self.data.targets(part))

    def ids(self, part: str) -> list[str]:
        return self.data.ids(part)

    def targets(self, part: str) -> np.ndarray:
        return self.data.targets(part)


class FeatureInputs:
    """A probe's training batch to the head's input: features on the device (nothing to augment or normalise)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
