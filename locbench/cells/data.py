"""Cell-level data for the engine: a field-level split, one item per segmented cell, crops cached once.

The split is made over fields (cells of one field never straddle train and val), then every cell of every field
gets one square crop of side ``data.img_size``. Cutting a crop means reading the whole field, so crops are cut
once, a field per task in worker processes, into a memory-mapped array (``<cache_dir>/cells-.../pixels.npy``)
that training then reads row by row; its key covers the images, the masks, the crop size, margin, masking and
stains. A killed build resumes; fields segmented for the run have their crops cut from the same decode.

Targets: with the dataset's own masks and a ``cells.csv`` beside ``train.csv`` (synthetic data) every cell takes
its own labels; otherwise (segmented masks, real data) every cell takes its field's weak image labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from locbench.cells.crops import (
    CellCropDataset,
    CropJob,
    CropShards,
    CropSpec,
    FieldCells,
    cut_fields,
    hash_cells,
    index_cells,
)
from locbench.cells.labels import CELL_LABELS_FILE, load_cell_labels
from locbench.cells.segment import FieldHook, mask_path, segment_dataset
from locbench.data.cache import FLUSH_EVERY_S, MemmapRows, cache_key, default_cache_dir
from locbench.data.channels import resolve_channels, unique_stains
from locbench.data.formats import table_from_config
from locbench.data.pool import MIN_FIELDS_FOR_POOL, Progress, cpu_workers, imap_bounded
from locbench.data.splits import resolve_split
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write_json, atomic_write_npy, atomic_write_text
from locbench.store.lock import FileLock

log = logging.getLogger(__name__)

CROP_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# Masks and targets
# --------------------------------------------------------------------------------------------------------------


def resolve_masks(
    cell_cfg: Any,
    table: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    hook: Callable[[Path], FieldHook] | None = None,
) -> tuple[Path, bool]:
    """The mask folder a cell configuration names for ``table``, segmenting (cached) when needed.

    Args:
        cell_cfg: a :class:`~locbench.config.CellConfig` (``masks``: ``auto``, ``segment`` or a folder;
            ``backend``).
        table: the fields (``root``, ``ids``, ``paths(i)``).
        cache_dir: parent of segmentation output (default ``$LOCBENCH_CACHE`` or ``~/.cache/locbench``).
        workers: segmentation processes.
        hook: given the mask folder, the :class:`~locbench.cells.segment.FieldHook` to run on each field
            segmented (the crop cache's :class:`CropShards`); unused when nothing is segmented.

    Returns:
        ``(folder, own)``: ``own`` is True when the folder is the dataset's own ``masks/`` (the truth of
        synthetic data, whose ``cells.csv`` rows name its cells).
    """
    own = Path(table.root) / "masks"
    if cell_cfg.masks not in ("auto", "segment"):
        folder = Path(cell_cfg.masks).expanduser()
        if not folder.is_dir():
            raise LocbenchError(
                f"cell.masks {folder} is not a folder; give a folder of {{ID}}.png masks, 'auto' or 'segment'"
            )
        return folder, folder.resolve() == own.resolve()
    if cell_cfg.masks == "auto" and own.is_dir():
        return own, True
    out = segment_cached(table, backend=cell_cfg.backend, cache_dir=cache_dir, workers=workers, hook=hook)
    return out, False


def segmented_masks_dir(table: Any, *, backend: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`segment_cached` keeps the masks of ``table`` made by ``backend``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(str(Path(table.root).resolve()).encode()).hexdigest()[:12]
    return root / f"masks-{backend}-{digest}"


def segment_cached(
    table: Any,
    *,
    backend: str,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    hook: Callable[[Path], FieldHook] | None = None,
) -> Path:
    """Segment every field of ``table`` into ``<cache_dir>/masks-<backend>-<dataset hash>/`` (reused when current).

    ``hook(mask folder)`` gives a :class:`~locbench.cells.segment.FieldHook` run on each field segmented."""
    out = segmented_masks_dir(table, backend=backend, cache_dir=cache_dir)
    # two sweep cells segmenting the same data would both write its manifest
    with FileLock(out.parent / f".{out.name}.lock").waiting():
        segment_dataset(table, backend=backend, out_dir=out, workers=max(1, workers), hook=hook(out) if hook else None)
    return out


def index_table_cells(
    table: Any, masks_dir: Path, *, cache_dir: str | os.PathLike | None = None, workers: int = 1, progress: bool = True
):
    """:func:`~locbench.cells.crops.index_cells` of ``table`` with its cached list under the cache folder.

    Keeping the list in the cache folder rather than beside the masks leaves datasets untouched. ``workers``
    processes read the masks.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    h = hashlib.sha256(str(masks_dir.resolve()).encode())
    h.update("\n".join(table.ids).encode())
    path = root / "cell-index" / f"{h.hexdigest()[:20]}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    return index_cells(table, masks_dir, cache_path=path, workers=workers, progress=progress)


def cell_targets(table: Any, cells: Any, *, own_masks: bool) -> tuple[np.ndarray, str]:
    """(n_cells, C) uint8 targets and where they came from (``cells.csv`` or ``image labels``).

    Per-cell labels are used only with the dataset's own masks: the rows of ``cells.csv`` name cells of those
    masks, and a segmentation's cell ``k`` is an unrelated cell.
    """
    labels_path = Path(table.root) / CELL_LABELS_FILE
    if own_masks and labels_path.is_file():
        labels = load_cell_labels(labels_path, num_classes=len(table.scheme.classes))
        keys = [(table.ids[int(i)], int(c)) for i, c in zip(cells.image_index, cells.cell_id, strict=True)]
        missing = [f"{i} cell {c}" for i, c in keys if (i, c) not in labels]
        if missing:
            raise BadInputError(
                f"cells in {Path(table.root) / 'masks'} have no row in {labels_path}",
                missing,
                "use the masks the labels were written for, or remove cells.csv to train on image labels",
            )
        out = np.stack([labels[k] for k in keys]) if keys else np.zeros((0, len(table.scheme.classes)))
        return out.astype(np.uint8), CELL_LABELS_FILE
    if labels_path.is_file():
        log.info("cells.csv is ignored: its rows name the dataset's own masks, not these; cells take image labels")
    return np.asarray(table.targets, dtype=np.uint8)[cells.image_index], "image labels"


def cell_ids(table: Any, cells: Any) -> list[str]:
    """``"FIELD/CELL"`` of every cell of a :class:`~locbench.cells.crops.CellIndex` over ``table``."""
    return [f"{table.ids[int(i)]}/{int(c)}" for i, c in zip(cells.image_index, cells.cell_id, strict=True)]


def split_cell_id(cell_id: str) -> tuple[str, int]:
    """``"FIELD/CELL"`` → (field id, cell id)."""
    field, _, cell = cell_id.rpartition("/")
    if not field or not cell.isdigit():
        raise LocbenchError(f"{cell_id!r} is not a cell id of the form FIELD/CELL")
    return field, int(cell)


# --------------------------------------------------------------------------------------------------------------
# The crop cache
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CropCache(MemmapRows):
    """A finished crop cache: row ``k`` is cell ``k`` of the index it was built from, (C_unique, S, S) uint8."""

    path: Path
    stains: tuple[str, ...]
    size: int
    n: int
    _array: np.ndarray | None = None


def crop_cache_key(
    table: Any, cells: Any, masks_dir: Path, *, stains: tuple[str, ...], size: int, margin: float, masked: bool
) -> str:
    """Hash of what the crops depend on: images, masks, the cell list, crop size, margin, masking, stains."""
    h = hashlib.sha256()
    h.update(json.dumps([CROP_CACHE_VERSION, cache_key(table, stains, size), float(margin), bool(masked)]).encode())
    hash_cells(h, table, cells, masks_dir)
    return h.hexdigest()[:20]


def build_crop_cache(
    table: Any,
    cells: Any,
    masks_dir: Path,
    *,
    stains: tuple[str, ...],
    size: int,
    margin: float,
    masked: bool,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = 1,
    progress: bool = True,
    shards: Path | None = None,
) -> CropCache:
    """Cut every cell's crop once into ``<cache_dir>/cells-<format>-<size>-<stains>-<key>/``, or reuse it.

    Fields are cut in worker processes, each writing its cells' rows straight into the file (nothing is held but
    the fields in flight). Which fields are done is saved every few seconds (``done.npy``), so a killed build
    resumes, like the field cache (:mod:`locbench.data.cache`).

    Args:
        table: the fields; ``cells`` must index this table's rows.
        cells: a :class:`~locbench.cells.crops.CellIndex` sorted by field (as :func:`index_cells` returns it);
            row ``k`` of the cache is cell ``k``.
        masks_dir: the instance masks the index was made from.
        stains: distinct stains to keep (the channel mode picks and repeats them when reading).
        size, margin, masked: as :class:`~locbench.cells.crops.CellCropDataset`.
        cache_dir: parent folder (default ``$LOCBENCH_CACHE`` or ``~/.cache/locbench``).
        workers: processes (None: one per CPU); 1 cuts in this process.
        progress: a progress bar on a terminal (log lines otherwise) with fields/s and time left.
        shards: a folder of :class:`CropShards` written while segmenting: a field whose shard is current is
            copied from it instead of decoded again. The folder is removed once the cache is complete.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = crop_cache_key(table, cells, masks_dir, stains=stains, size=size, margin=margin, masked=masked)
    folder = root / f"cells-{table.format}-{size}-{''.join(c[0] for c in stains)}-{key}"
    result = CropCache(folder, tuple(stains), int(size), len(cells))
    if (folder / "complete").is_file():
        log.info("reusing cell crop cache %s", folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(folder / ".lock").waiting():  # a second builder waits, then finds the cache complete
            if not (folder / "complete").is_file():
                spec = CropSpec(tuple(stains), int(size), float(margin), bool(masked))
                workers = cpu_workers() if workers is None else max(1, workers)
                _cut_crops(table, cells, masks_dir, folder, spec, workers=workers, progress=progress, shards=shards)
    if shards is not None and shards.is_dir():
        shutil.rmtree(shards, ignore_errors=True)  # served their purpose (or were made for a cache that exists)
    return result


def _cut_crops(
    table: Any,
    cells: Any,
    masks_dir: Path,
    folder: Path,
    spec: CropSpec,
    *,
    workers: int,
    progress: bool,
    shards: Path | None,
) -> None:
    """Write the crop cache's files into ``folder`` (the caller holds its lock), resuming an interrupted build."""
    if np.any(np.diff(cells.image_index) < 0):
        raise LocbenchError("the cell index is not sorted by field; build it with index_cells")
    n_fields = len(table)
    pixels, done_path = folder / "pixels.npy", folder / "done.npy"
    shape = (len(cells), len(spec.stains), spec.size, spec.size)
    meta = {
        "version": CROP_CACHE_VERSION,
        "cells": len(cells),
        "size": spec.size,
        "stains": list(spec.stains),
        "margin": spec.margin,
        "masked": spec.masked,
        "masks": str(masks_dir),
        "table": str(table.root),
    }
    meta_path = folder / "meta.json"
    if meta_path.is_file() and pixels.is_file() and done_path.is_file():
        done = np.load(done_path)
        log.info("resuming cell crop cache %s: %d of %d fields already done", folder, int(done.sum()), n_fields)
    else:
        # created at full length (sparse); workers write each field's rows in place
        del_me = np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=shape)
        del del_me
        done = np.zeros(n_fields, dtype=np.uint8)
        atomic_write_npy(done_path, done)
        atomic_write_json(meta_path, meta)
    offset = _data_offset(pixels)
    # rows of field i: bounds[i]..bounds[i+1] (cells come sorted by field)
    bounds = np.searchsorted(cells.image_index, np.arange(n_fields + 1), side="left")
    empty = [i for i in range(n_fields) if bounds[i] == bounds[i + 1]]
    done[empty] = 1  # a field without cells has nothing to cut
    todo = [i for i in range(n_fields) if not done[i]]
    if len(todo) < MIN_FIELDS_FOR_POOL:
        workers = 1
    # one field a task (0.1-0.3 s of work): the last tasks leave a worker idle for at most one field, and a kill
    # redoes at most the fields in flight
    groups = [[i] for i in todo]
    jobs = (
        CropJob(
            str(pixels),
            offset,
            spec,
            [
                FieldCells(
                    i,
                    table.ids[i],
                    table.sources(i),
                    mask_path(masks_dir, table.ids[i]),
                    int(bounds[i]),
                    cells.take(np.arange(bounds[i], bounds[i + 1])),
                )
                for i in group
            ],
            shards,
        )
        for group in groups
    )
    log.info("cell crops: %d fields to cut (%d workers) into %s", len(todo), workers, folder)
    bar = Progress(len(todo), "cell crops", enabled=progress)
    last = time.monotonic()
    try:
        for finished in imap_bounded(cut_fields, jobs, workers=workers):
            done[finished] = 1
            bar.update(len(finished))
            if time.monotonic() - last > FLUSH_EVERY_S:
                atomic_write_npy(done_path, done)
                last = time.monotonic()
    finally:
        atomic_write_npy(done_path, done)  # what is written is recorded: a rerun resumes from here
        bar.close()
    atomic_write_text(folder / "complete", "ok\n")
    log.info("cached %d cell crops of %d fields in %s", len(cells), n_fields, folder)


def _data_offset(npy: Path) -> int:
    """Where the array's bytes start in an ``.npy`` file."""
    arr = np.load(npy, mmap_mode="r")
    try:
        return int(arr.offset)
    finally:
        del arr


def crop_shards(table: Any, masks_dir: Path, *, stains, size: int, margin: float, masked: bool, cache_dir=None):
    """The :class:`CropShards` for crops of ``table`` from the masks to be written in ``masks_dir``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    h = hashlib.sha256(json.dumps([str(masks_dir.resolve()), list(stains), size, margin, masked]).encode())
    return CropShards(root / f"cell-shards-{h.hexdigest()[:16]}", masks_dir, tuple(stains), size, margin, masked)


# --------------------------------------------------------------------------------------------------------------
# Datasets and the prepared data
# --------------------------------------------------------------------------------------------------------------


class CellDataset(Dataset):
    """Items ``(uint8 tensor (C, S, S), float32 multi-hot target)`` for a list of cell rows.

    Reads the crop cache when given, else cuts crops on demand through a ``CellCropDataset`` over all fields
    (one field read per cell in shuffled order: slow on 2048 px fields, fine for small data).
    """

    def __init__(self, rows: np.ndarray, targets: np.ndarray, *, channels: tuple[str, ...], cache=None, crops=None):
        if (cache is None) == (crops is None):
            raise ValueError("give exactly one of cache and crops")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.channels = tuple(channels)
        self.cache, self.crops = cache, crops

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = int(self.rows[i])
        if self.cache is not None:
            x = self.cache.get(k, self.channels)
        else:
            x = self.crops.crop(k)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(self.targets[k].copy())


@dataclass
class CellData:
    """Cell-level counterpart of :class:`~locbench.engine.data.PreparedData`.

    Attributes:
        table: the field table.
        parts: split part → field (table) indices, as for image-level data.
        channels: the channel mode's stains.
        cache: the crop cache, or None (crops cut on demand).
        class_names: the class scheme's names.
        img_size: crop side in pixels.
        cells: every cell of the table (a ``CellIndex``, sorted by field).
        cell_targets: (n_cells, C) uint8 targets of ``cells``.
        cell_parts: split part → rows of ``cells``.
        masks_dir: the masks the cells come from.
        target_source: ``cells.csv`` or ``image labels``.
    """

    table: Any
    parts: dict[str, np.ndarray]
    channels: tuple[str, ...]
    cache: CropCache | None
    class_names: list[str]
    img_size: int
    cells: Any
    cell_targets: np.ndarray
    cell_parts: dict[str, np.ndarray]
    masks_dir: Path
    target_source: str
    margin: float = 0.1
    masked: bool = False

    def dataset(self, part: str) -> CellDataset:
        """The cells of split part ``part`` as a dataset."""
        crops = None
        if self.cache is None:
            crops = CellCropDataset(
                self.table,
                self.masks_dir,
                np.arange(len(self.table)),
                channels=self.channels,
                crop_size=self.img_size,
                margin=self.margin,
                masked=self.masked,
                index=self.cells,
            )
        return CellDataset(
            self.cell_parts[part], self.cell_targets, channels=self.channels, cache=self.cache, crops=crops
        )

    def ids(self, part: str) -> list[str]:
        """``"FIELD/CELL"`` of every item of :meth:`dataset`."""
        return cell_ids(self.table, self.cells.take(self.cell_parts[part]))

    def targets(self, part: str) -> np.ndarray:
        """(N, C) uint8 targets of the items of :meth:`dataset`."""
        return self.cell_targets[self.cell_parts[part]]


def prepare_cell_data(cfg: Any, split_file: Path, *, build_cache: bool = True) -> CellData:
    """Field table, field-level split (saved to ``split_file``), cell index, per-cell targets and crop cache.

    Args:
        cfg: a :class:`~locbench.config.RunConfig` with ``train.level == "cell"``.
        split_file: where the split is saved (and reused from, for a resumed run).
        build_cache: cut crops into the crop cache (with ``data.cache``); False cuts them on demand.
    """
    dcfg = cfg.data
    table = table_from_config(dcfg)
    channels = resolve_channels(dcfg.channels)
    parts = resolve_split(dcfg, table, split_file)

    workers = max(1, dcfg.workers)
    crop_args = {
        "stains": unique_stains(channels),
        "size": dcfg.img_size,
        "margin": cfg.cell.margin,
        "masked": cfg.cell.masked,
    }
    want_cache = dcfg.cache and build_cache
    shards: list[CropShards] = []

    def cut_while_segmenting(masks: Path) -> CropShards:
        # fields that must be segmented are decoded once: their crops are cut in the same worker
        shards.append(crop_shards(table, masks, **crop_args, cache_dir=dcfg.cache_dir))
        return shards[-1]

    masks_dir, own = resolve_masks(
        cfg.cell, table, cache_dir=dcfg.cache_dir, workers=workers, hook=cut_while_segmenting if want_cache else None
    )
    cells = index_table_cells(table, masks_dir, cache_dir=dcfg.cache_dir, workers=workers)
    targets, source = cell_targets(table, cells, own_masks=own)
    cell_parts = {part: np.flatnonzero(np.isin(cells.image_index, idx)) for part, idx in parts.items()}
    cache = None
    if want_cache:
        cache = build_crop_cache(
            table,
            cells,
            masks_dir,
            **crop_args,
            cache_dir=dcfg.cache_dir,
            workers=workers,
            shards=shards[0].folder if shards else None,
        )
    for name, rows in cell_parts.items():
        log.info("split %s: %d cells of %d fields", name, len(rows), len(parts[name]))
    log.info("cells from %s, targets from %s", masks_dir, source)
    return CellData(
        table=table,
        parts=parts,
        channels=channels,
        cache=cache,
        class_names=list(table.scheme.classes),
        img_size=dcfg.img_size,
        cells=cells,
        cell_targets=targets,
        cell_parts=cell_parts,
        masks_dir=masks_dir,
        target_source=source,
        margin=cfg.cell.margin,
        masked=cfg.cell.masked,
    )
