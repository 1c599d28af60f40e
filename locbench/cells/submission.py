"""The HPA 2021 competition's submission file: one row per image, one ``label confidence mask`` triple per
(cell, class), each mask a base64/zlib COCO RLE string (see :mod:`locbench.cells.rle`)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locbench.cells.metric import CellInstances
from locbench.cells.rle import decode_binary_mask, encode_binary_mask
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write_text

HEADER = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


@dataclass(frozen=True)
class SubmissionRow:
    """One image of a submission; ``prediction_string`` holds space-separated ``label confidence mask`` triples."""

    image_id: str
    width: int
    height: int
    prediction_string: str


def make_row(
    image_id: str,
    mask: np.ndarray,
    scores: Mapping[int, Mapping[int, float]] | np.ndarray,
    *,
    min_confidence: float | None = None,
) -> SubmissionRow:
    """Build the row of one image from its instance mask and per-cell class confidences.

    Args:
        image_id: the image's ID.
        mask: (H, W) instance mask, cell ``k`` where ``mask == k``.
        scores: ``{cell_id: {class_index: confidence}}``, or an (N, C) array whose row k-1 is cell k
            (``NaN`` = that class is not predicted for that cell).
        min_confidence: leave out triples below this confidence (keeps files small; AP is unchanged by
            dropping the lowest-ranked detections only when they are false positives).

    Returns:
        A :class:`SubmissionRow`; each cell's mask is encoded once and shared by its triples.
    """
    mask = np.asarray(mask)
    if isinstance(scores, np.ndarray):
        per_cell = {k + 1: {c: float(v) for c, v in enumerate(row)} for k, row in enumerate(scores)}
    else:
        per_cell = {int(k): {int(c): float(v) for c, v in row.items()} for k, row in scores.items()}
    triples: list[str] = []
    for cell_id in sorted(per_cell):
        keep = [
            (c, v)
            for c, v in sorted(per_cell[cell_id].items())
            if not math.isnan(v) and (min_confidence is None or v >= min_confidence)
        ]
        if not keep:
            continue
        binary = mask == cell_id
        if not binary.any():
            raise LocbenchError(f"image {image_id}: cell {cell_id} has scores but no pixels in its mask")
        encoded = encode_binary_mask(binary)
        triples.extend(f"{c} {_score(v)} {encoded}" for c, v in keep)
    return SubmissionRow(
        image_id, width=int(mask.shape[1]), height=int(mask.shape[0]), prediction_string=" ".join(triples)
    )


def rows_from_instances(
    instances: Mapping[str, CellInstances], *, min_confidence: float | None = None
) -> list[SubmissionRow]:
    """One row per image from predicted cells (e.g. ``CellCropDataset.instances(probs)``); NaN = not predicted."""
    rows = []
    for image_id, cells in instances.items():
        scores = {int(c): dict(enumerate(map(float, v))) for c, v in zip(cells.cell_ids, cells.values, strict=True)}
        rows.append(make_row(image_id, cells.mask, scores, min_confidence=min_confidence))
    return rows


def _score(v: float) -> str:
    # Short but exact enough: ranking only needs the order, and ties are rare at 6 significant digits.
    return f"{v:.6g}"


def write_submission(path: str | os.PathLike, rows: Iterable[SubmissionRow]) -> Path:
    """Write ``ID,ImageWidth,ImageHeight,PredictionString`` (atomic); returns the path."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    seen: set[str] = set()
    for row in rows:
        if row.image_id in seen:
            raise LocbenchError(f"submission lists image {row.image_id} twice; give one row per image")
        seen.add(row.image_id)
        writer.writerow([row.image_id, row.width, row.height, row.prediction_string])
    return atomic_write_text(path, buf.getvalue())


def read_submission(path: str | os.PathLike) -> list[SubmissionRow]:
    """Read a submission CSV back into rows (the header must be the competition's)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != HEADER:
            raise LocbenchError(f"{path}: header is {','.join(header)!r}; expected {','.join(HEADER)!r}")
        rows = []
        for n, rec in enumerate(reader, start=2):
            if len(rec) != 4:
                raise LocbenchError(f"{path} line {n}: {len(rec)} fields, expected 4")
            try:
                rows.append(SubmissionRow(rec[0], int(rec[1]), int(rec[2]), rec[3]))
            except ValueError:
                raise LocbenchError(f"{path} line {n}: ImageWidth/ImageHeight are not integers") from None
    return rows


def parse_prediction_string(row: SubmissionRow) -> list[tuple[int, float, np.ndarray]]:
    """Decode a row's triples into ``(label, confidence, (H, W) bool mask)``."""
    tokens = row.prediction_string.split()
    if len(tokens) % 3:
        raise LocbenchError(f"image {row.image_id}: PredictionString has {len(tokens)} tokens, not triples")
    out = []
    cache: dict[str, np.ndarray] = {}
    for i in range(0, len(tokens), 3):
        label, conf, encoded = tokens[i : i + 3]
        try:
            parsed = (int(label), float(conf))
        except ValueError:
            raise LocbenchError(f"image {row.image_id}: triple {i // 3} has label {label!r}, conf {conf!r}") from None
        if encoded not in cache:
            cache[encoded] = decode_binary_mask(encoded, row.height, row.width)
        out.append((*parsed, cache[encoded]))
    return out


def validate_submission(path: str | os.PathLike, *, num_classes: int, ids: Sequence[str] | None = None) -> dict:
    """Decode every mask of a submission and check labels, confidences and (optionally) the image ids.

    Returns:
        ``{"images", "triples", "cells"}`` counts (``cells`` = distinct masks).

    Raises:
        LocbenchError / BadInputError naming the offending images.
    """
    rows = read_submission(path)
    bad: list[str] = []
    triples = cells = 0
    for row in rows:
        decoded = parse_prediction_string(row)
        triples += len(decoded)
        cells += len({id(m) for _, _, m in decoded})
        for label, conf, m in decoded:
            if not 0 <= label < num_classes or not math.isfinite(conf) or not m.any():
                bad.append(f"{row.image_id}: label {label}, confidence {conf}, {int(m.sum())} mask pixels")
    if bad:
        raise BadInputError(f"{path}: triples with a bad label, confidence or empty mask", bad)
    if ids is not None:
        missing = sorted(set(ids) - {r.image_id for r in rows})
        if missing:
            raise BadInputError(f"{path}: images without a row", missing, "write one row per image, even if empty")
    return {"images": len(rows), "triples": triples, "cells": cells}
