"""Cell outlines drawn over the composite of a field: what a segmentation found, and a reference to compare it with.

One PNG per field: the stains as HPA composes them (contrast-stretched for 16-bit fields), every cell of the mask
outlined in white, the reference mask's cells (``--compare-to``) in cyan, and a caption band saying which is
which and how many cells each has. Fields larger than ``size`` are drawn smaller (masks by nearest neighbour, so
no outline is invented).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from locbench.cells.segment import mask_path, read_mask
from locbench.data.channels import composite_rgb, display_planes
from locbench.data.images import read_field_stains
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write

log = logging.getLogger(__name__)

#: Outline colours (RGB): the segmentation, the reference.
MASK_COLOR = (255, 255, 255)
REFERENCE_COLOR = (0, 255, 255)


def overlay_rgb(
    stains: dict[str, np.ndarray],
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    size: int = 1024,
    stretch: bool | None = None,
) -> np.ndarray:
    """``(h, w, 3)`` uint8: the composite of ``stains`` with the outlines of ``mask`` (and ``reference``).

    Args:
        stains: Stain name -> 2-D pixels in their own type (all the same shape as ``mask``).
        mask: ``(H, W)`` instance labels (0: background).
        reference: Another instance mask of the same shape, outlined in :data:`REFERENCE_COLOR`.
        size: The longer side of the picture at most (larger fields are scaled down).
        stretch: Per-image contrast stretch (see :func:`~locbench.data.channels.display_planes`).
    """
    if reference is not None and reference.shape != mask.shape:
        raise LocbenchError(f"the reference mask is {reference.shape} but the mask is {mask.shape}")
    planes, out_hw = display_at(stains, mask.shape, size=size, stretch=stretch)
    rgb = _to_uint8(composite_rgb(planes))
    # Reference first, the segmentation over it: where both outline the same edge, the segmentation's shows.
    for labels, color in ((reference, REFERENCE_COLOR), (mask, MASK_COLOR)):
        if labels is not None:
            draw_outlines(rgb, shrink_labels(labels, out_hw), color)
    return rgb


def display_at(
    stains: dict[str, np.ndarray], shape: tuple[int, ...], *, size: int, stretch: bool | None = None
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Each stain as a display plane (float32 in [0, 1]) scaled so the longer side is at most ``size``; and that
    ``(h, w)``. Every stain must have the mask's ``shape``."""
    names = list(stains)
    for name in names:
        if stains[name].shape != tuple(shape):
            raise LocbenchError(f"the {name} stain is {stains[name].shape} but the mask is {tuple(shape)}")
    scale = min(1.0, size / max(shape))
    out_hw = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    planes = display_planes(np.stack([stains[n] for n in names]), stretch=stretch)
    if scale < 1.0:
        planes = resize(planes, (len(names), *out_hw), order=1, anti_aliasing=True, preserve_range=True)
    return dict(zip(names, planes.astype(np.float32, copy=False), strict=True)), out_hw


def shrink_labels(labels: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Instance labels scaled to ``out_hw`` by nearest neighbour (no label is invented or blended)."""
    if labels.shape == tuple(out_hw):
        return labels.astype(np.int32, copy=False)
    small = resize(labels, out_hw, order=0, anti_aliasing=False, preserve_range=True)
    return small.astype(np.int32)


def draw_outlines(
    rgb: np.ndarray,
    labels: np.ndarray,
    color: tuple[int, int, int] | np.ndarray,
    *,
    width: int = 1,
) -> np.ndarray:
    """Paint each cell's inner boundary, ``width`` pixels thick, into ``rgb`` (uint8, in place): one ``color`` for
    all cells, or a lookup table ``(max label + 1, 3)`` of one colour per cell id."""
    for _ in range(width):  # each ring inside the last, so an outline never spills onto a neighbour
        edge = find_boundaries(labels, mode="inner")
        if isinstance(color, np.ndarray) and color.ndim == 2:
            rgb[edge] = color[labels[edge]]
        else:
            rgb[edge] = color
        labels = np.where(edge, 0, labels)
    return rgb


def cell_centres(labels: np.ndarray) -> dict[int, tuple[float, float]]:
    """Cell id -> (row, column) of its centre of mass in ``labels``."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 1
    count = np.bincount(flat, minlength=n)
    rows, cols = np.indices(labels.shape)
    r = np.bincount(flat, weights=rows.ravel(), minlength=n)
    c = np.bincount(flat, weights=cols.ravel(), minlength=n)
    return {k: (r[k] / count[k], c[k] / count[k]) for k in np.flatnonzero(count) if k}


def number_cells(rgb: np.ndarray, labels: np.ndarray, *, size: int = 14) -> np.ndarray:
    """``rgb`` with each cell's id written at its centre, white on a dark box (PIL's own font, ``size`` pixels)."""
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=size)
    for k, (r, c) in cell_centres(labels).items():
        text = str(k)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = c - (right - left) / 2, r - (bottom - top) / 2
        draw.rectangle((x + left - 2, y + top - 2, x + right + 2, y + bottom + 2), fill=(0, 0, 0))
        draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_overlays(
    table,
    masks_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    ids: Sequence[str] | None = None,
    reference_dir: str | os.PathLike | None = None,
    size: int = 1024,
    stretch: bool | None = None,
) -> list[Path]:
    """Write ``out_dir/{ID}.png``: each field's composite with its cells outlined (see :func:`overlay_rgb`).

    Args:
        table: The dataset (``ids``, ``stains``, ``sources(i)``).
        masks_dir: The masks to outline (``{ID}.png`` or ``{ID}_predictedmask.png``).
        out_dir: Where the pictures go (created).
        ids: These fields (default: every field of ``table``).
        reference_dir: Reference masks, outlined in cyan.
        size: The longer side of each picture at most.
        stretch: Per-image contrast stretch (default: for 16-bit fields).

    Raises:
        BadInputError: a field has no mask (or no reference mask).
    """
    wanted = list(ids) if ids is not None else list(table.ids)
    row = {fid: i for i, fid in enumerate(table.ids)}
    missing = [f"{i} (in {d})" for i in wanted for d in (masks_dir, reference_dir) if d and mask_path(d, i) is None]
    missing += [f"{i} (not in the dataset)" for i in wanted if i not in row]
    if missing:
        raise BadInputError("cannot outline these fields", missing, "segment them first, or pick other fields")
    written = []
    for fid in wanted:
        stains = read_field_stains(table.sources(row[fid]), list(table.stains))
        mask = read_mask(mask_path(masks_dir, fid))
        ref = read_mask(mask_path(reference_dir, fid)) if reference_dir else None
        rgb = overlay_rgb(stains, mask, ref, size=size, stretch=stretch)
        caption = [f"{fid}", f"white: {masks_dir} ({_count(mask)} cells)"]
        if ref is not None:
            caption.append(f"cyan: {reference_dir} ({_count(ref)} cells)")
        written.append(_write(Path(out_dir) / f"{fid}.png", _with_caption(rgb, caption)))
    log.info("wrote %d overlays to %s", len(written), out_dir)
    return written


def _count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def _with_caption(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``rgb`` over a black band holding ``lines`` (PIL's built-in font: no font file needed); the picture is
    widened with black when a line is wider than it, so no text is cut."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(rgb.shape[1], *(int(probe.textlength(t)) + 12 for t in lines))
    canvas = Image.new("RGB", (width, rgb.shape[0] + 14 * len(lines) + 8), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, t in enumerate(lines):
        draw.text((6, rgb.shape[0] + 4 + 14 * k), t, fill=(235, 235, 235))
    return np.asarray(canvas)


def _write(path: Path, rgb: np.ndarray) -> Path:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def mask_summary(table, masks_dir: str | os.PathLike, *, read: int = 8) -> dict:
    """What a folder of instance masks holds for ``table``: how many fields have a mask, and the cells of the
    first ``read`` of them (masks are read one by one, so a dataset of thousands of fields stays quick).

    Returns:
        ``{"masks": folder, "fields": n, "with_mask": n, "missing": [first ids without one], "cells": {id: n},
        "min", "median", "max"}`` (the last three over the fields read; absent when none was).
    """
    with_mask = [fid for fid in table.ids if mask_path(masks_dir, fid) is not None]
    have = set(with_mask)
    cells = {fid: _count(read_mask(mask_path(masks_dir, fid))) for fid in with_mask[: max(0, read)]}
    out: dict = {
        "masks": str(masks_dir),
        "fields": len(table.ids),
        "with_mask": len(with_mask),
        "missing": [fid for fid in table.ids if fid not in have][:10],
        "cells": cells,
    }
    if cells:
        counts = np.array(list(cells.values()))
        out.update(min=int(counts.min()), median=float(np.median(counts)), max=int(counts.max()))
    return out
