"""Whole fields with their cells' soft masks on a backbone's feature grid (``model.pool: cell_mask``).

A field is resized to ``size`` x ``size`` as every image is (:func:`locbench.data.images.resize`: ``pad``, ``crop``
or ``stretch``); a backbone turns that into an ``h`` x ``w`` feature grid. A cell's weight on grid square (r, c) is
the share of that square its mask covers in the resized image: the cell's mask pixels are binned by where their
centres land (the area downsampling of its mask to the grid). A cell outside what the backbone sees (cut away by
``crop``) has no weight; it takes the grid square of its centroid, clipped to the grid. The binning is written by
hand (one ``bincount`` per grid row): resizing a one-hot mask per cell would cost a full-size pass per cell.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from locbench.cells.crops import hash_cells
from locbench.cells.segment import mask_path, read_mask
from locbench.data.dataset import FieldDataset
from locbench.errors import LocbenchError


def resized_geometry(h: int, w: int, size: int, policy: str) -> tuple[float, float, int, int]:
    """Where an ``h`` x ``w`` image lands in its ``size`` x ``size`` resize: (y scale, x scale, top, left); a
    negative offset is a crop (as :func:`locbench.data.images.resize` computes it)."""
    if (h, w) == (size, size):
        return 1.0, 1.0, 0, 0
    if h == w or policy == "stretch":
        return size / h, size / w, 0, 0
    scale = size / (min(h, w) if policy == "crop" else max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if policy == "crop":
        return nh / h, nw / w, -((nh - size) // 2), -((nw - size) // 2)
    return nh / h, nw / w, (size - nh) // 2, (size - nw) // 2


def cell_weights(
    mask: np.ndarray, cell_ids: np.ndarray, *, size: int, grid: tuple[int, int], policy: str = "pad"
) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks of cells ``cell_ids`` of instance mask ``mask`` on a ``grid`` over its ``size`` px resize.

    Returns:
        ``(weights, centres)``: (k, h, w) float32 shares in [0, 1] of each grid square covered by each cell (of the
        mask pixels whose centres fall in it), and (k, 2) int64 grid square (row, column) of each cell: the one it
        covers most, or for a cell with no weight (outside the resize) its centroid's, clipped to the grid.
    """
    gh, gw = grid
    h, w = mask.shape
    sy, sx, top, left = resized_geometry(h, w, size, policy)
    k = len(cell_ids)
    # grid row of every mask row and grid column of every mask column (pixel centres); gw: outside the resize
    ry = np.floor(((np.arange(h) + 0.5) * sy + top) * gh / size).astype(np.int64)
    cx = np.floor(((np.arange(w) + 0.5) * sx + left) * gw / size).astype(np.int64)
    cx = np.where((cx >= 0) & (cx < gw), cx, gw)
    slot = np.full(int(mask.max(initial=0)) + 1, k, dtype=np.int64)  # k: not one of the cells
    slot[np.asarray(cell_ids, dtype=np.int64)] = np.arange(k)
    code = slot[mask] * (gw + 1) + cx[None, :]  # (cell, grid column) of every pixel
    counts = np.zeros((k + 1, gh, gw + 1), np.int64)
    for r in range(gh):  # the mask rows of grid row r are contiguous: one bincount per grid row
        rows = np.flatnonzero(ry == r)
        if len(rows):
            block = code[rows[0] : rows[-1] + 1].ravel()
            counts[:, r] = np.bincount(block, minlength=(k + 1) * (gw + 1)).reshape(k + 1, gw + 1)
    counts = counts[:k, :, :gw]
    # the mask pixels each square holds, padding counted as if the image went on: a share is in [0, 1] exactly
    per_square = np.outer(_pixels_per_bin(sy, top, gh, size), _pixels_per_bin(sx, left, gw, size))
    weights = (counts / per_square).astype(np.float32)
    flat = weights.reshape(k, -1).argmax(1)
    centres = np.stack([flat // gw, flat % gw], 1).astype(np.int64)
    for j in np.flatnonzero(weights.reshape(k, -1).sum(1) == 0):  # rare: cut away by the crop policy
        ys, xs = np.nonzero(mask == cell_ids[j])
        if len(ys):
            cy = ((ys.mean() + 0.5) * sy + top) * gh / size
            cc = ((xs.mean() + 0.5) * sx + left) * gw / size
            centres[j] = [min(max(int(np.floor(cy)), 0), gh - 1), min(max(int(np.floor(cc)), 0), gw - 1)]
    return weights, centres


def _pixels_per_bin(scale: float, offset: int, bins: int, size: int) -> np.ndarray:
    """How many mask rows (or columns) have their centre in each of ``bins`` grid rows, the mask extended past its
    edges (into the padding) as if it went on."""
    lo, hi = int(np.floor(-offset / scale)) - 1, int(np.ceil((size - offset) / scale)) + 1
    r = np.floor(((np.arange(lo, hi) + 0.5) * scale + offset) * bins / size).astype(np.int64)
    return np.maximum(np.bincount(r[(r >= 0) & (r < bins)], minlength=bins), 1)


def masks_signature(table: Any, cells: Any, masks_dir: Path) -> str:
    """A hash of the cells: every field's mask file (size, modification time) and the cell index."""
    h = hashlib.sha256()
    hash_cells(h, table, cells, masks_dir)
    return h.hexdigest()[:20]


@dataclass
class FieldsWithCells:
    """The fields of ``cells`` (a cell index over ``table``, sorted by field) that hold cells: ``fields`` (table rows)
    and ``bounds`` (field ``j``'s cells are rows ``bounds[j]:bounds[j + 1]`` of the index)."""

    fields: np.ndarray
    bounds: np.ndarray

    @classmethod
    def of(cls, cells: Any, n_fields: int) -> FieldsWithCells:
        if np.any(np.diff(cells.image_index) < 0):
            raise LocbenchError("the cell index is not sorted by field; build it with index_cells")
        edges = np.searchsorted(cells.image_index, np.arange(n_fields + 1), side="left")
        fields = np.flatnonzero(np.diff(edges) > 0)
        return cls(fields, np.append(edges[fields], len(cells)).astype(np.int64))


class FieldCellDataset(Dataset):
    """Items ``(image (C, S, S), (weights (k, h, w), centres (k, 2)))``: the fields holding cells, in index order,
    each with its cells' soft masks on the feature grid ``grid`` (:func:`cell_weights`); batch with
    :func:`collate_fields`."""

    def __init__(
        self, fields: FieldDataset, cells: Any, masks_dir: Path, *, grid: tuple[int, int], spans: FieldsWithCells
    ) -> None:
        self.images, self.cells, self.masks_dir, self.grid, self.spans = fields, cells, masks_dir, grid, spans
        if not np.array_equal(fields.indices, spans.fields):
            raise ValueError("the field dataset must hold exactly the fields with cells")

    def __len__(self) -> int:
        return len(self.spans.fields)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        image, _ = self.images[j]
        fid = self.images.table.ids[int(self.spans.fields[j])]
        ids = self.cells.cell_id[self.spans.bounds[j] : self.spans.bounds[j + 1]]
        mask = read_mask(mask_path(self.masks_dir, fid))
        weights, centres = cell_weights(
            mask, ids, size=self.images.size, grid=self.grid, policy=self.images.resize_policy
        )
        return image, (torch.from_numpy(weights), torch.from_numpy(centres))


def collate_fields(batch: list) -> tuple[torch.Tensor, tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Stack the images; keep each field's cell weights and centres (their counts differ) as lists."""
    return torch.stack([x for x, _ in batch]), ([w for _, (w, _) in batch], [c for _, (_, c) in batch])
