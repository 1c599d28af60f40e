"""Per-cell labels: ``cells.csv`` (``ID,cell,Label``), written by ``locbench synth`` beside ``train.csv``.

The one reader of that file; the cell-level data, the cell metric's truth and the CAM localization check all read
it here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from locbench.errors import BadInputError, LocbenchError

#: The per-cell label file's name, beside the dataset's train.csv.
CELL_LABELS_FILE = "cells.csv"


def read_cells_csv(path: str | os.PathLike, *, num_classes: int) -> dict[str, dict[int, set[int]]]:
    """Parse ``cells.csv`` (``ID,cell,Label``) into ``{image id: {cell id: set of class indices}}``.

    ``Label`` uses the ``train.csv`` syntax: class indices separated by ``|`` (or spaces); an empty label is a
    cell with no class.

    Args:
        path: The CSV file.
        num_classes: Number of classes of the scheme (indices must be below it).

    Returns:
        The per-image, per-cell class sets.

    Raises:
        LocbenchError: when the file or a column is missing.
        BadInputError: listing rows with a bad cell id or label.
    """
    path = Path(path)
    if not path.exists():
        raise LocbenchError(f"{path}: not found; per-cell labels come from a synthetic dataset's cells.csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("ID", "cell", "Label") if c not in frame.columns]
    if missing:
        raise LocbenchError(f"{path}: missing column(s) {missing}; expected the header ID,cell,Label")
    out: dict[str, dict[int, set[int]]] = {}
    bad = []
    for row, (image_id, cell, label) in enumerate(zip(frame["ID"], frame["cell"], frame["Label"], strict=True)):
        try:
            cell_id = int(cell)
            parts = label.replace("|", " ").split()
            classes = {int(p) for p in parts}
        except ValueError:
            bad.append(f"row {row + 2}: cell={cell!r} Label={label!r}")
            continue
        if cell_id < 1 or any(not 0 <= c < num_classes for c in classes):
            bad.append(f"row {row + 2}: cell={cell!r} Label={label!r}")
            continue
        out.setdefault(image_id, {})[cell_id] = classes
    if bad:
        raise BadInputError(
            f"{path}: {len(bad)} row(s) with a bad cell id or label",
            bad,
            f"cell ids are integers >= 1 and labels are class indices below {num_classes} separated by '|'",
        )
    return out


def load_cell_labels(path: str | os.PathLike, *, num_classes: int) -> dict[tuple[str, int], np.ndarray]:
    """:func:`read_cells_csv` as ``{(ID, cell): multi-hot float32 vector of length num_classes}``."""
    out = {}
    for image_id, cells in read_cells_csv(path, num_classes=num_classes).items():
        for cell_id, classes in cells.items():
            target = np.zeros(num_classes, dtype=np.float32)
            target[sorted(classes)] = 1.0
            out[(image_id, cell_id)] = target
    return out
