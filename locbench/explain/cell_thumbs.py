"""Pictures of a cell-level run's fields for the image browser: each cell outlined in the colour of its predicted
class, a thumbnail and a larger numbered view per field.

A cell's colour is that of its most probable class among those it is predicted to carry (probability at or above
the class's tuned threshold); a cell with no class called is outlined in white, and a cell of the mask that the
browsed part holds no prediction for in grey. The numbers on the larger view are the cells' ids in the mask (the
``CELL`` of the ``FIELD/CELL`` ids of the predictions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from locbench.cells.overlay import display_at, draw_outlines, number_cells, shrink_labels
from locbench.cells.segment import mask_path, read_mask
from locbench.data.channels import composite_rgb, display_planes
from locbench.data.images import read_field_stains
from locbench.errors import LocbenchError
from locbench.explain.thumbs import thumb_name, write_jpeg

log = logging.getLogger(__name__)

#: Outline of a cell with no class called, and of a cell the browsed part has no prediction for.
NO_CALL = (255, 255, 255)
NOT_PREDICTED = (128, 128, 128)

#: Side of the larger, numbered view of a field (shown when it is clicked).
DETAIL_SIZE = 640


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct outline colours, one per class: matplotlib's tab20 without its greys (grey and white mean
    "no prediction" and "no call"), then evenly spaced hues for schemes with more classes."""
    tab = [tuple(int(round(255 * v)) for v in colormaps["tab20"](k)[:3]) for k in range(20) if k not in (14, 15)]
    if n > len(tab):
        hsv = colormaps["hsv"]
        tab += [tuple(int(round(255 * v)) for v in hsv(k / (n - len(tab)))[:3]) for k in range(n - len(tab))]
    return tab[:n]  # type: ignore[return-value]


def called_class(probs: np.ndarray, thresholds: np.ndarray) -> int:
    """The class a cell's outline is coloured by: the most probable called class, -1 when none is called."""
    p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=-1.0)
    called = p >= thresholds
    return int(np.argmax(np.where(called, p, -np.inf))) if called.any() else -1


def write_cell_pictures(
    table,
    masks_dir: Path,
    colours: dict[str, dict[int, int]],
    out_dir: Path,
    *,
    size: int,
    detail: int = DETAIL_SIZE,
) -> dict[str, dict[str, str]]:
    """Per field: thumbnail and numbered larger view, composite and green stain alone, outlines coloured.

    Args:
        table: The dataset.
        masks_dir: The masks the run's cells come from.
        colours: Field id -> its predicted cells: cell id -> class index its outline takes (-1: no call).
        out_dir: Folder for the JPEGs.
        size: Thumbnail side.
        detail: Side of the larger view.

    Returns:
        Field id -> ``{"rgb", "green", "rgb_big", "green_big"}`` file names relative to ``out_dir``; a field whose
        images or mask cannot be read is left out with a warning.
    """
    where = {fid: i for i, fid in enumerate(table.ids)}
    stains = list(table.stains)
    palette = np.array(class_colors(len(table.scheme.classes)) + [NO_CALL], dtype=np.uint8)
    done: dict[str, dict[str, str]] = {}
    for fid, cells in colours.items():
        if fid not in where:
            log.warning("no field %s in %s: no thumbnail", fid, table.root)
            continue
        found = mask_path(masks_dir, fid)
        try:
            if found is None:
                raise LocbenchError(f"no mask in {masks_dir}")
            mask = read_mask(found)
            raw = read_field_stains(table.sources(where[fid]), stains)
        except (LocbenchError, OSError, ValueError) as e:
            log.warning("field %s: %s; no thumbnail", fid, e)
            continue
        lut = np.tile(np.array(NOT_PREDICTED, np.uint8), (int(mask.max()) + 1, 1))
        for cell, k in cells.items():
            if cell < len(lut):
                lut[cell] = palette[k]  # -1 picks NO_CALL, the last entry
        name = thumb_name(fid)
        files = {}
        for key, side in (("", detail), ("_thumb", size)):
            pictures = _pictures(raw, mask, lut, stains, side, numbered=not key)
            for view, rgb in pictures.items():
                stem = f"{name}{'' if view == 'rgb' else '_green'}{'_big' if not key else ''}"
                write_jpeg(out_dir / f"{stem}.jpg", _square(rgb) / 255.0)
                files[view + ("_big" if not key else "")] = f"{stem}.jpg"
        done[fid] = files
    return done


def _pictures(
    raw: dict[str, np.ndarray], mask: np.ndarray, lut: np.ndarray, stains: Sequence[str], side: int, *, numbered: bool
) -> dict[str, np.ndarray]:
    planes, hw = display_at(raw, mask.shape, size=side)
    labels = shrink_labels(mask, hw)
    # The green stain alone is stretched per image, as in the image-level browser: it shows where the protein is.
    green = display_planes(raw["green"][None], stretch=True)[0] if "green" in raw else np.zeros(mask.shape, np.float32)
    if green.shape != hw:
        green = display_at({"green": green}, mask.shape, size=side, stretch=False)[0]["green"]
    out = {}
    for view, rgb in (("rgb", composite_rgb(planes)), ("green", composite_rgb({"green": green}))):
        img = draw_outlines((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), labels, lut, width=2)
        out[view] = number_cells(img, labels) if numbered else img
    return out


def _square(rgb: np.ndarray) -> np.ndarray:
    """Pad to a square with black, centred (the browser shows square tiles; the field is not stretched)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), rgb.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = rgb
    return out
