"""Does the CAM point at the right cells? A check on synthetic data, where each pattern's cells are known.

Synthetic datasets (``locbench synth``) write ``masks/{ID}.png`` (cell instance masks, 0 = background) and
``cells.csv`` (``ID,cell,Label``: the classes each cell shows). For an image and a class, the share of CAM
mass inside the cells that carry the class is compared with the share of the field those cells cover: a map
that ignores the image scores the area share on average (the chance level), a map that finds the pattern more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from skimage.transform import resize

from locbench.cells.segment import read_mask as read_instance_mask
from locbench.errors import LocbenchError
from locbench.tables import markdown_table

log = logging.getLogger(__name__)


def cam_mass_inside(cam: np.ndarray, mask: np.ndarray, cells_with_class: Sequence[int]) -> float:
    """Share of the CAM's total mass that lies inside the given cells.

    Args:
        cam: ``(H, W)`` non-negative map.
        mask: ``(H, W)`` integer instance mask (0 = background, 1..N = cells), the same size as ``cam``
            (see :func:`resize_mask`).
        cells_with_class: Cell ids that carry the class.

    Returns:
        ``sum(cam inside those cells) / sum(cam)`` in [0, 1]; NaN when the map is all zero (no evidence).

    Raises:
        LocbenchError: when the shapes differ or the map has negative values.
    """
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask)
    if cam.shape != mask.shape:
        raise LocbenchError(f"CAM shape {cam.shape} differs from mask shape {mask.shape}; resize the mask first")
    if cam.size and cam.min() < 0:
        raise LocbenchError("CAM has negative values; CAM mass is only defined for non-negative maps")
    total = cam.sum()
    if total <= 0:
        return float("nan")
    inside = np.isin(mask, np.asarray(list(cells_with_class), dtype=mask.dtype))
    return float(cam[inside].sum() / total)


def area_share(mask: np.ndarray, cells_with_class: Sequence[int]) -> float:
    """Share of the field's pixels covered by the given cells: the chance level of :func:`cam_mass_inside`."""
    mask = np.asarray(mask)
    return float(np.isin(mask, np.asarray(list(cells_with_class), dtype=mask.dtype)).mean())


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an instance mask (no blending of cell ids)."""
    mask = np.asarray(mask)
    if mask.shape == tuple(hw):
        return mask

    out = resize(mask, hw, order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    return out.astype(mask.dtype)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read an instance mask PNG (8- or 16-bit) as an integer array (the cells module's reader, with a message
    that says where synthetic masks live)."""
    path = Path(path)
    if not path.exists():
        raise LocbenchError(f"{path}: cell mask not found; synthetic datasets keep one masks/{{ID}}.png per image")
    return read_instance_mask(path)


def localization_report(
    ids: Sequence[str],
    cams: np.ndarray,
    class_indices: Sequence[Sequence[int]],
    masks: Mapping[str, np.ndarray],
    cells: Mapping[str, Mapping[int, set[int]]],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Per-class and overall share of CAM mass inside the cells that carry the class, against chance.

    Two views. Field level: the share of all CAM mass inside the carrying cells, against the share of the field
    they cover; a map that merely prefers cells to background already beats this chance level. Cell level, for
    images where only some cells carry the class (the weak-label case): the share of the mass *inside cells*
    that falls in the carrying ones, against their share of the cell area; this asks whether the map picks the
    right cells.

    Each (image, class) pair whose class is carried by at least one cell of the image is scored; pairs whose
    class no cell carries (a CAM of a false positive, say) or whose map is all zero are skipped and counted.

    Args:
        ids: ``B`` image ids.
        cams: ``(B, K, h, w)`` maps from ``compute_cams``.
        class_indices: ``B`` lists of the ``K`` classes explained.
        masks: Image id -> instance mask (any size: resized to the map with nearest neighbour).
        cells: Image id -> {cell id: class indices}, from :func:`read_cells_csv`.
        class_names: All class names of the scheme.

    Returns:
        ``{"per_class": {name: summary}, "overall": summary, "items": [...], "skipped": int}``. A summary has
        ``n``, ``mean_share``, ``mean_chance``, ``lift`` (share minus chance; 0 = no better than a map blind
        to the image) and ``n_mixed``, ``mean_cell_share``, ``mean_cell_chance``, ``cell_lift`` over the pairs
        where only some cells carry the class (``None`` when there are none). An item has ``id``, ``class``,
        ``share``, ``chance``, ``cell_share`` and ``cell_chance`` (the last two ``None`` unless mixed).
        Classes with no scored pair are omitted.

    Raises:
        LocbenchError: when an image has no mask.
    """
    cams = np.asarray(cams)
    items: list[dict[str, Any]] = []
    skipped = 0
    for i, image_id in enumerate(ids):
        if image_id not in masks:
            raise LocbenchError(f"no cell mask for image {image_id!r}; localization needs masks/{image_id}.png")
        mask = resize_mask(masks[image_id], cams.shape[-2:])
        per_cell = cells.get(image_id, {})
        present = set(np.unique(mask[mask > 0]).tolist())  # cells still visible at the map's resolution
        for j, c in enumerate(class_indices[i]):
            carrying = [cell for cell, classes in per_cell.items() if c in classes and cell in present]
            share = cam_mass_inside(cams[i, j], mask, carrying) if carrying else float("nan")
            if not carrying or np.isnan(share):
                skipped += 1
                continue
            item = {"id": str(image_id), "class": class_names[c], "share": share, "chance": area_share(mask, carrying)}
            item["cell_share"] = item["cell_chance"] = None
            if len(carrying) < len(present):
                in_cells = cam_mass_inside(cams[i, j], mask, sorted(present))
                if in_cells > 0:
                    item["cell_share"] = share / in_cells
                    item["cell_chance"] = item["chance"] / area_share(mask, sorted(present))
            items.append(item)
    if skipped:
        log.info("localization: skipped %d (image, class) pair(s) with no carrying cell or an all-zero map", skipped)

    per_class = {}
    for name in class_names:
        sel = [x for x in items if x["class"] == name]
        if sel:
            per_class[name] = _summary(sel)
    return {"per_class": per_class, "overall": _summary(items), "items": items, "skipped": skipped}


def _summary(sel: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str, rows: list[dict[str, Any]]) -> float | None:
        return float(np.mean([x[key] for x in rows])) if rows else None

    mixed = [x for x in sel if x["cell_share"] is not None]
    out: dict[str, Any] = {"n": len(sel), "mean_share": mean("share", sel), "mean_chance": mean("chance", sel)}
    out["lift"] = None if not sel else out["mean_share"] - out["mean_chance"]
    out.update(
        n_mixed=len(mixed), mean_cell_share=mean("cell_share", mixed), mean_cell_chance=mean("cell_chance", mixed)
    )
    out["cell_lift"] = None if not mixed else out["mean_cell_share"] - out["mean_cell_chance"]
    return out


def localization_markdown(report: dict[str, Any]) -> str:
    """Render :func:`localization_report` output as a Markdown table (one row per class, then overall)."""

    def f(x: float | None, sign: str = "") -> str:
        return "–" if x is None else f"{x:{sign}.3f}"

    lines = [
        "## CAM localization (synthetic data)",
        "",
        "Field: share of CAM mass inside the cells that carry the class; chance = share of the field they cover.",
        "Cells: in images where only some cells carry the class, share of the in-cell CAM mass on those cells;",
        "chance = their share of the cell area.",
        "",
    ]
    headers = ["class", "n", "field share", "chance", "lift", "n mixed", "cell share", "chance", "lift"]
    rows = [
        [name, s["n"], f(s["mean_share"]), f(s["mean_chance"]), f(s["lift"], "+")]
        + [s["n_mixed"], f(s["mean_cell_share"]), f(s["mean_cell_chance"]), f(s["cell_lift"], "+")]
        for name, s in [*report["per_class"].items(), ("overall", report["overall"])]
        if s["n"]
    ]
    return "\n".join([*lines, markdown_table(headers, rows, left=None)]) + "\n"
