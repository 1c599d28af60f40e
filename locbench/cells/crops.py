"""Single cells as a dataset: one square crop per cell instance, with a per-cell or per-image target.

:func:`index_cells` lists every (image, cell, bounding box) once and caches the list in a small ``.npz``;
:class:`CellCropDataset` cuts crops from the full-resolution field on demand. Fields are read whole, so the
dataset keeps the last few in memory: cells of one image taken one after another cost one read.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from locbench.cells.metric import CellInstances
from locbench.cells.segment import mask_path, read_mask, read_stains, upscale_nearest
from locbench.data.channels import resolve_channels
from locbench.data.pool import MIN_FIELDS_FOR_POOL, Progress, imap_bounded
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write_npz

log = logging.getLogger(__name__)

#: Name of the cached cell index written beside the masks (when that folder is writable).
INDEX_FILE = "cells_index.npz"
_INDEX_VERSION = 1


@dataclass(frozen=True)
class CellIndex:
    """Every cell of a dataset: which table row, which id in its mask, and its box in mask pixels.

    Attributes:
        image_index: (n,) int32 row of the table the cell belongs to.
        cell_id: (n,) int32 label of the cell in its mask.
        bbox: (n, 4) int32 ``y0, x0, y1, x1`` (end exclusive) in mask pixels.
        mask_shape: (n, 2) int32 height, width of the cell's mask.
        area: (n,) int32 pixel count of the cell.
    """

    image_index: np.ndarray
    cell_id: np.ndarray
    bbox: np.ndarray
    mask_shape: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return len(self.cell_id)

    def take(self, rows: np.ndarray) -> CellIndex:
        """The cells at ``rows``."""
        rows = np.asarray(rows, dtype=np.intp)
        return CellIndex(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[CellIndex]) -> CellIndex:
        """The cells of ``parts`` one after another (an empty index when there are none)."""
        if not parts:
            return cells_of_mask(np.zeros((0, 0), np.int32), 0)
        return CellIndex(*(np.concatenate([getattr(p, f) for p in parts]) for f in CellIndex.__dataclass_fields__))

    def digest(self) -> str:
        """A hex digest of every cell's row, id, box, mask shape and area: a mask redrawn under the same cell ids
        moves the boxes, so the digest tells two indexes apart where the ids alone do not."""
        h = hashlib.sha256()
        for name in self.__dataclass_fields__:
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return h.hexdigest()

    def of_images(self, image_indices: Sequence[int] | np.ndarray) -> CellIndex:
        """The cells of the given table rows, in the order the rows are given."""
        order = {int(i): k for k, i in enumerate(image_indices)}
        rows = np.flatnonzero(np.isin(self.image_index, list(order)))
        rows = rows[np.argsort([order[int(i)] for i in self.image_index[rows]], kind="stable")]
        return self.take(rows)


def hash_cells(h: Any, table: Any, cells: CellIndex, masks_dir: Path) -> None:
    """Feed ``h`` (a hashlib object) every field's mask file (size, modification time) and the cells' rows, ids and
    boxes: what the crops and the cell embeddings of ``table`` depend on besides the images."""
    for fid in table.ids:
        p = mask_path(masks_dir, fid)
        st = p.stat() if p is not None else None
        h.update(f"{fid}:{st.st_size}:{st.st_mtime_ns}\0".encode() if st else f"{fid}:none\0".encode())
    for name in ("image_index", "cell_id", "bbox"):
        h.update(np.ascontiguousarray(getattr(cells, name)).tobytes())


def cells_of_mask(mask: np.ndarray, image_index: int, *, min_area: int = 1) -> CellIndex:
    """The cells of one instance mask, in label order, as rows of table row ``image_index``."""
    rows = []
    # find_objects gives one bounding slice per label value in a single pass over the mask; each cell's area is
    # then counted inside its own box (half the time of a bincount over the whole mask).
    for label, sl in enumerate(ndi.find_objects(mask) if mask.size else [], start=1):
        if sl is None:
            continue
        area = int(np.count_nonzero(mask[sl] == label))
        if area < min_area:
            continue
        rows.append((label, sl[0].start, sl[1].start, sl[0].stop, sl[1].stop, area))
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 6)
    n = len(table)
    return CellIndex(
        image_index=np.full(n, image_index, dtype=np.int32),
        cell_id=table[:, 0].astype(np.int32),
        bbox=table[:, 1:5].astype(np.int32),
        mask_shape=np.tile(np.asarray(mask.shape, dtype=np.int32), (n, 1)).reshape(-1, 2),
        area=table[:, 5].astype(np.int32),
    )


def index_signature(paths: Sequence[Path], *, min_area: int = 1) -> str:
    """What a cached cell index depends on: each mask file's name, size and modification time, and ``min_area``."""
    return hashlib.sha1(
        "\n".join([f"v{_INDEX_VERSION}", f"min_area={min_area}", *(_mask_sig(p) for p in paths)]).encode()
    ).hexdigest()


def save_index(path: str | os.PathLike, index: CellIndex, signature: str) -> None:
    """Write ``index`` as a cached cell index (atomic) that :func:`index_cells` reuses while ``signature`` holds."""
    atomic_write_npz(
        path, signature=np.array(signature), **{f: getattr(index, f) for f in CellIndex.__dataclass_fields__}
    )


def _mask_sig(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{int(st.st_mtime_ns)}"


def index_cells(
    table: Any,
    masks_dir: str | os.PathLike,
    *,
    cache_path: str | os.PathLike | None = None,
    min_area: int = 1,
    workers: int = 1,
    progress: bool = True,
) -> CellIndex:
    """List every cell of every image of ``table`` from its instance mask, reading a cached list when current.

    Args:
        table: a locbench ``Table`` (``ids``; the order of ``ids`` is the image index).
        masks_dir: folder of ``{ID}.png`` or ``{ID}_predictedmask.png`` instance masks.
        cache_path: where to keep the list; default ``masks_dir/cells_index.npz`` when that folder is writable.
            The cache is rebuilt when any mask file's name, size or modification time changes.
        min_area: cells with fewer pixels are left out (tiny fragments make meaningless crops).
        workers: processes reading the masks (a mask a field: about 20 ms for 2048 px); 1 reads them here.
        progress: a progress bar on a terminal (log lines otherwise) while masks are read.

    Raises:
        BadInputError: images of the table have no mask in ``masks_dir``.
    """
    masks_dir = Path(masks_dir)
    ids = list(table.ids)
    paths = [mask_path(masks_dir, i) for i in ids]
    missing = [i for i, p in zip(ids, paths, strict=True) if p is None]
    if missing:
        raise BadInputError(
            f"images have no cell mask in {masks_dir}",
            missing,
            f"run `locbench segment --data DATA --out {masks_dir}` or point to the folder holding the masks",
        )
    sig = index_signature(paths, min_area=min_area)
    if cache_path is None and os.access(masks_dir, os.W_OK):
        cache_path = masks_dir / INDEX_FILE
    if cache_path is not None and Path(cache_path).is_file():
        try:
            with np.load(cache_path) as z:
                if str(z["signature"]) == sig:
                    return CellIndex(*(z[f] for f in CellIndex.__dataclass_fields__))
        except (OSError, KeyError, ValueError):
            log.warning("cell index %s is unreadable; rebuilding it", cache_path)

    items = list(enumerate(paths))
    if len(items) < MIN_FIELDS_FOR_POOL:
        workers = 1
    per_task = max(1, min(8, len(items) // (4 * max(1, workers))))  # 8 masks: ~0.2 s of work
    jobs = ((items[k : k + per_task], min_area) for k in range(0, len(items), per_task))
    parts: list[CellIndex] = []
    bar = Progress(len(items), "cell index", enabled=progress)
    try:
        for part, n in imap_bounded(_index_fields, jobs, workers=workers):
            parts.append(part)
            bar.update(n)
    finally:
        bar.close()
    # tasks finish in any order; each holds consecutive fields, so its first row puts it back in place
    parts.sort(key=lambda p: int(p.image_index[0]) if len(p) else -1)
    index = CellIndex.concat(parts)
    if cache_path is not None:
        save_index(cache_path, index, sig)
    log.info("indexed %d cells in %d images from %s", len(index), len(ids), masks_dir)
    return index


def _index_fields(job: tuple[list[tuple[int, Path]], int]) -> tuple[CellIndex, int]:
    """The cells of a few fields (``(table row, mask)`` pairs) and how many fields that was: a worker's task."""
    items, min_area = job
    return CellIndex.concat([cells_of_mask(read_mask(path), i, min_area=min_area) for i, path in items]), len(items)


class CellCropDataset:
    """One item per cell: ``(uint8 tensor (C, crop, crop), float32 multi-hot target)``.

    Args:
        table: a locbench ``Table`` (``ids``, ``targets`` (N, C) uint8, ``paths(i)``).
        masks_dir: folder of instance masks (``{ID}.png`` or ``{ID}_predictedmask.png``).
        indices: table rows whose cells the dataset holds (e.g. a split's train indices).
        channels: a channel mode (``"rgby"``, ``"green"``, ...) or an explicit tuple of stain names.
        crop_size: side of the square crops, in pixels.
        margin: context kept around the cell's box, as a fraction of the box's longer side on each side.
        masked: zero every pixel outside the cell (neighbours' signal would otherwise leak into the label).
        cell_labels: ``{(ID, cell): multi-hot}`` (see :func:`load_cell_labels`); without it each cell takes its
            image's (weak) labels.
        index: a prebuilt :class:`CellIndex` of the whole table (default: :func:`index_cells`).
        field_cache: how many full fields to keep in memory.
    """

    def __init__(
        self,
        table: Any,
        masks_dir: str | os.PathLike,
        indices: Sequence[int] | np.ndarray,
        *,
        channels: str | Sequence[str] = "rgby",
        crop_size: int = 128,
        margin: float = 0.1,
        masked: bool = False,
        cell_labels: Mapping[tuple[str, int], np.ndarray] | None = None,
        index: CellIndex | None = None,
        field_cache: int = 2,
    ) -> None:
        if crop_size < 1 or margin < 0:
            raise LocbenchError(f"crop_size must be >= 1 and margin >= 0 (got {crop_size}, {margin})")
        self.table = table
        self.masks_dir = Path(masks_dir)
        self.channels = resolve_channels(channels)
        self.crop_size = int(crop_size)
        self.margin = float(margin)
        self.masked = bool(masked)
        self.cells = (index if index is not None else index_cells(table, masks_dir)).of_images(indices)
        self._ids = list(table.ids)
        self._targets = np.asarray(table.targets, dtype=np.float32)
        self._cell_labels = None
        if cell_labels is not None:
            keys = [self.meta(k) for k in range(len(self))]
            missing = [f"{i} cell {c}" for i, c in keys if (i, c) not in cell_labels]
            if missing:
                raise BadInputError(
                    "cells in the masks have no row in the cell labels", missing, "use the masks the labels belong to"
                )
            self._cell_labels = np.stack([np.asarray(cell_labels[key], dtype=np.float32) for key in keys])
        self._cache: OrderedDict[int, tuple[np.ndarray, _FieldMask]] = OrderedDict()
        self._cache_size = max(1, int(field_cache))

    def __len__(self) -> int:
        return len(self.cells)

    def meta(self, k: int) -> tuple[str, int]:
        """(image ID, cell id) of item ``k``: to group cell predictions back into images."""
        return self._ids[int(self.cells.image_index[k])], int(self.cells.cell_id[k])

    def target(self, k: int) -> np.ndarray:
        """The float32 multi-hot target of item ``k`` (cell labels when given, else the image's labels)."""
        if self._cell_labels is not None:
            return self._cell_labels[k]
        return self._targets[int(self.cells.image_index[k])]

    def targets(self) -> np.ndarray:
        """(n, C) targets of every item, without reading images (for samplers and metrics)."""
        if self._cell_labels is not None:
            return self._cell_labels
        return self._targets[self.cells.image_index]

    def instances(self, values: np.ndarray) -> Mapping[str, CellInstances]:
        """Group per-cell rows (predicted probabilities, or :meth:`targets`) into images for :func:`cell_map`.

        Args:
            values: (len(self), C), row ``k`` for item ``k``.

        Returns:
            A read-only mapping image ID → :class:`~locbench.cells.metric.CellInstances`; each image's mask is
            read when the image is looked up, so scoring a large split holds one mask at a time.
        """
        values = np.asarray(values)
        if values.ndim != 2 or len(values) != len(self):
            raise LocbenchError(f"instances() needs one row per cell: shape ({len(self)}, C), got {values.shape}")
        rows: dict[int, list[int]] = {}
        for k, i in enumerate(self.cells.image_index.tolist()):
            rows.setdefault(i, []).append(k)
        return _LazyInstances(self, values, rows)

    def _field(self, i: int) -> tuple[np.ndarray, _FieldMask]:
        """(stack (H, W, C) uint8, its mask, read when first needed) of table row ``i``."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        unique = tuple(dict.fromkeys(self.channels))
        stains = read_stains(self.table.sources(i), unique)
        item = (field_stack(stains, self.channels), _FieldMask(mask_path(self.masks_dir, self._ids[i])))
        self._cache[i] = item
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return item

    def crop(self, k: int) -> np.ndarray:
        """The (C, crop, crop) uint8 crop of item ``k`` as a numpy array."""
        stack, mask = self._field(int(self.cells.image_index[k]))
        return crop_cell(
            stack,
            mask.at(stack.shape[:2]) if self.masked else None,
            self.cells.bbox[k],
            self.cells.mask_shape[k],
            int(self.cells.cell_id[k]),
            size=self.crop_size,
            margin=self.margin,
        )

    def __getitem__(self, k: int) -> tuple[Any, Any]:
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k = k % len(self)
        import torch  # slow to import: the crop cache's worker processes import this module and never need it

        return torch.from_numpy(np.ascontiguousarray(self.crop(k))), torch.from_numpy(self.target(k).copy())


class _LazyInstances(Mapping):
    """image ID → CellInstances, reading the mask on access (see :meth:`CellCropDataset.instances`)."""

    def __init__(self, ds: CellCropDataset, values: np.ndarray, rows: dict[int, list[int]]) -> None:
        self._ds = ds
        self._values = values
        self._rows = {ds._ids[i]: (i, r) for i, r in rows.items()}

    def __getitem__(self, image_id: str) -> CellInstances:
        i, rows = self._rows[image_id]
        mask = read_mask(mask_path(self._ds.masks_dir, image_id))
        return CellInstances(
            mask=mask, cell_ids=self._ds.cells.cell_id[rows].astype(np.int64), values=self._values[rows]
        )

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class _FieldMask:
    """A field's mask, read (and scaled to the image) on first use: unmasked crops never read it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mask: np.ndarray | None = None

    def at(self, shape: tuple[int, int]) -> np.ndarray:
        if self._mask is None:
            mask = read_mask(self.path)
            self._mask = mask if mask.shape == tuple(shape) else upscale_nearest(mask, shape)
        return self._mask


def field_stack(stains: Mapping[str, np.ndarray], channels: Sequence[str]) -> np.ndarray:
    """The (H, W, C) uint8 stack of a field's ``stains`` (16-bit ones keep their high byte), one plane per channel.

    Channels last: every crop window is then a contiguous (h, w, C) block that OpenCV resizes in one call.
    """
    return np.stack([_to_uint8(stains[c]) for c in channels], axis=-1)


def crop_cell(
    stack: np.ndarray,
    mask: np.ndarray | None,
    bbox: Sequence[int] | np.ndarray,
    mask_shape: Sequence[int] | np.ndarray,
    cell: int,
    *,
    size: int,
    margin: float,
) -> np.ndarray:
    """The (C, size, size) uint8 crop of one cell from a field's (H, W, C) :func:`field_stack`.

    Args:
        stack: the field, channels last.
        mask: the field's instance mask at the stack's resolution to zero everything outside the cell, or None.
        bbox: the cell's ``y0, x0, y1, x1`` in mask pixels (a :class:`CellIndex` row).
        mask_shape: the mask's height and width (boxes are scaled when the image's resolution differs).
        cell: the cell's label in the mask.
        size: side of the crop.
        margin: context around the box, as a fraction of its longer side on each side.
    """
    y0, x0, y1, x1 = (int(v) for v in bbox)
    mh, mw = (int(v) for v in mask_shape)
    h, w = stack.shape[:2]
    if (mh, mw) != (h, w):
        # Boxes were found on the mask; scale them to the image when the two differ in resolution.
        y0, y1 = y0 * h // mh, -(-y1 * h // mh)
        x0, x1 = x0 * w // mw, -(-x1 * w // mw)
    side = max(y1 - y0, x1 - x0)
    side = max(1, round(side * (1 + 2 * margin)))
    top = (y0 + y1 - side) // 2
    left = (x0 + x1 - side) // 2
    window = _window(stack, top, left, side)
    if mask is not None:
        inside = _window((mask == cell)[..., None], top, left, side)
        window = window * inside.astype(np.uint8)
    return _resize_hwc(window, size)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    return np.clip(np.asarray(img, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _window(stack: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The (side, side, C) window at (top, left) of an (H, W, C) stack, zero where it leaves the image."""
    h, w, c = stack.shape
    out = np.zeros((side, side, c), dtype=stack.dtype)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, h), min(left + side, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = stack[sy0:sy1, sx0:sx1]
    return out


def _resize_hwc(window: np.ndarray, size: int) -> np.ndarray:
    """An (side, side, C) window resized to (C, size, size)."""
    side = window.shape[0]
    if side == size:
        return window.transpose(2, 0, 1)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    # cv2 resizes (H, W, C) with up to 512 channels in one call.
    return cv2.resize(window, (size, size), interpolation=interp).reshape(size, size, -1).transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------------------------
# Cutting the crops of whole fields (the work of the crop cache's worker processes)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropSpec:
    """How crops are cut: the stains kept, the side, the margin and the masking."""

    stains: tuple[str, ...]
    size: int
    margin: float
    masked: bool


@dataclass(frozen=True)
class FieldCells:
    """One field's share of a crop job: its table row, id, stain sources, mask, first cache row and cells."""

    index: int
    image_id: str
    sources: Any
    mask: Path | None
    first_row: int
    cells: Any


@dataclass(frozen=True)
class CropJob:
    pixels: str
    offset: int
    spec: CropSpec
    fields: list[FieldCells]
    shards: Path | None


def cut_fields(job: CropJob) -> list[int]:
    """Cut the crops of the fields of ``job`` into their rows of the cache file; return their table rows."""
    row_bytes = len(job.spec.stains) * job.spec.size * job.spec.size
    with open(job.pixels, "r+b") as f:
        for fc in job.fields:
            crops = _shard_crops(job.shards, fc, job.spec) if job.shards is not None else None
            if crops is None:
                stains = read_stains(fc.sources, job.spec.stains)
                crops = _field_crops(field_stack(stains, job.spec.stains), fc.mask, fc.cells, job.spec)
            # pwrite, not a memory map: the written pages stay out of the worker's memory
            os.pwrite(f.fileno(), np.ascontiguousarray(crops).data, job.offset + fc.first_row * row_bytes)
    return [fc.index for fc in job.fields]


def _field_crops(stack: np.ndarray, mask: Path | np.ndarray | None, cells: Any, spec: CropSpec) -> np.ndarray:
    """(n, C, S, S) crops of the ``cells`` of one field from its (H, W, C) stack (mask: array, file or None)."""
    inside = None
    if spec.masked:
        inside = mask if isinstance(mask, np.ndarray) else read_mask(mask)
        if inside.shape != stack.shape[:2]:
            inside = upscale_nearest(inside, stack.shape[:2])
    out = np.empty((len(cells), len(spec.stains), spec.size, spec.size), dtype=np.uint8)
    for k in range(len(cells)):
        out[k] = crop_cell(
            stack,
            inside,
            cells.bbox[k],
            cells.mask_shape[k],
            int(cells.cell_id[k]),
            size=spec.size,
            margin=spec.margin,
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Crops cut while segmenting (one decode a field)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropShards:
    """A :class:`~locbench.cells.segment.FieldHook` that cuts a field's crops right after segmenting it.

    Each field's crops go to ``folder/{ID}.npz`` with what they were cut from (the mask file's size and
    modification time, the stain files', the cells); :func:`build_crop_cache` then copies current shards instead
    of decoding those fields a second time, and removes the folder when the cache is complete.
    """

    folder: Path
    masks_dir: Path
    stains: tuple[str, ...]
    size: int
    margin: float
    masked: bool

    def __call__(self, image_id: str, stains: dict, mask: np.ndarray, sources: Any) -> None:
        spec = CropSpec(self.stains, self.size, self.margin, self.masked)
        cells = cells_of_mask(mask, 0)
        crops = _field_crops(field_stack(stains, self.stains), mask, cells, spec)
        atomic_write_npz(
            self.folder / f"{image_id}.npz",
            crops=crops,
            cell_id=cells.cell_id,
            bbox=cells.bbox,
            signature=np.array(_shard_signature(self.masks_dir / f"{image_id}.png", sources, self.stains)),
        )


def _shard_signature(mask: Path, sources: Any, stains: tuple[str, ...]) -> str:
    parts = []
    for p in (mask, *(Path(sources[c]) for c in stains)):
        st = p.stat()
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _shard_crops(folder: Path, fc: FieldCells, spec: CropSpec) -> np.ndarray | None:
    """The field's crops from its shard when the shard is current and holds exactly its cells; else None."""
    path = folder / f"{fc.image_id}.npz"
    if fc.mask is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if (
                str(z["signature"]) != _shard_signature(fc.mask, fc.sources, spec.stains)
                or not np.array_equal(z["cell_id"], fc.cells.cell_id)
                or not np.array_equal(z["bbox"], fc.cells.bbox)
                or z["crops"].shape != (len(fc.cells), len(spec.stains), spec.size, spec.size)
            ):
                return None
            return z["crops"]
    except (OSError, KeyError, ValueError):
        return None
