"""The HPA 2021 competition's submission file: one row per image, one ``label confidence mask`` triple per
(cell, class), each mask a base64/zlib COCO RLE string (see :mod:`locbench.cells.rle`).

A row of a real field is large (a 2048 px field with 19 cells and all 19 classes per cell is ~185 kB in one CSV
field), so files are written and read one row at a time, and read without the ``csv`` module's default field-size
limit (128 kiB).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locbench.cells.metric import CellInstances
from locbench.cells.rle import decode_binary_mask, encode_binary_mask
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write

HEADER = ("ID", "ImageWidth", "ImageHeight", "PredictionString")
#: The largest CSV field read back: 2 GiB - 1, the most ``csv.field_size_limit`` takes on every platform (a C long).
MAX_FIELD = 2**31 - 1


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


def row_from_instances(image_id: str, cells: CellInstances, *, min_confidence: float | None = None) -> SubmissionRow:
    """The row of one image from its predicted cells (``CellInstances``: mask, cell ids, (N, C) values; NaN = not
    predicted)."""
    scores = {int(c): dict(enumerate(map(float, v))) for c, v in zip(cells.cell_ids, cells.values, strict=True)}
    return make_row(image_id, cells.mask, scores, min_confidence=min_confidence)


def rows_from_instances(
    instances: Mapping[str, CellInstances], *, min_confidence: float | None = None
) -> list[SubmissionRow]:
    """One row per image from predicted cells (e.g. ``CellCropDataset.instances(probs)``); NaN = not predicted."""
    return [row_from_instances(i, cells, min_confidence=min_confidence) for i, cells in instances.items()]


def _score(v: float) -> str:
    # Short but exact enough: ranking only needs the order, and ties are rare at 6 significant digits.
    return f"{v:.6g}"


def write_submission(path: str | os.PathLike, rows: Iterable[SubmissionRow]) -> Path:
    """Write ``ID,ImageWidth,ImageHeight,PredictionString`` (atomic, one row at a time: ``rows`` may be a
    generator, so only one row is held in memory); returns the path."""

    def write(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(HEADER)
        seen: set[str] = set()
        for row in rows:
            if row.image_id in seen:
                raise LocbenchError(f"submission lists image {row.image_id} twice; give one row per image")
            seen.add(row.image_id)
            writer.writerow([row.image_id, row.width, row.height, row.prediction_string])
        text.flush()
        text.detach()  # leave the binary file open for atomic_write's fsync

    return atomic_write(path, write)


@contextlib.contextmanager
def _unlimited_csv_fields() -> Iterator[None]:
    # csv's field-size limit is process-wide state: raised only while a submission is read, then put back
    old = csv.field_size_limit(MAX_FIELD)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def iter_submission(path: str | os.PathLike) -> Iterator[SubmissionRow]:
    """Read a submission CSV one row at a time (the header must be the competition's); fields of any size."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f, _unlimited_csv_fields():
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != HEADER:
            raise LocbenchError(f"{path}: header is {','.join(header)!r}; expected {','.join(HEADER)!r}")
        for rec in reader:
            n = reader.line_num
            if len(rec) != 4:
                raise LocbenchError(f"{path} line {n}: {len(rec)} fields, expected 4")
            try:
                width, height = int(rec[1]), int(rec[2])
            except ValueError:
                raise LocbenchError(f"{path} line {n}: ImageWidth/ImageHeight are not integers") from None
            yield SubmissionRow(rec[0], width, height, rec[3])


def read_submission(path: str | os.PathLike) -> list[SubmissionRow]:
    """Read a whole submission CSV back into rows (see :func:`iter_submission` to hold one row at a time)."""
    return list(iter_submission(path))


def _triples(row: SubmissionRow) -> Iterator[tuple[int, float, str]]:
    """``(label, confidence, encoded mask)`` of each triple of a row."""
    tokens = row.prediction_string.split()
    if len(tokens) % 3:
        raise LocbenchError(f"image {row.image_id}: PredictionString has {len(tokens)} tokens, not triples")
    for i in range(0, len(tokens), 3):
        label, conf, encoded = tokens[i : i + 3]
        try:
            parsed = int(label), float(conf)
        except ValueError:
            raise LocbenchError(f"image {row.image_id}: triple {i // 3} has label {label!r}, conf {conf!r}") from None
        yield *parsed, encoded


def parse_prediction_string(row: SubmissionRow) -> list[tuple[int, float, np.ndarray]]:
    """Decode a row's triples into ``(label, confidence, (H, W) bool mask)`` (triples of one cell share a mask)."""
    out = []
    cache: dict[str, np.ndarray] = {}
    for label, conf, encoded in _triples(row):
        if encoded not in cache:
            cache[encoded] = decode_binary_mask(encoded, row.height, row.width)
        out.append((label, conf, cache[encoded]))
    return out


def validate_submission(path: str | os.PathLike, *, num_classes: int, ids: Sequence[str] | None = None) -> dict:
    """Decode every mask of a submission and check labels, confidences and (optionally) the image ids.

    Streams: one row, and one decoded mask, in memory at a time (each distinct mask is decoded once).

    Returns:
        ``{"images", "triples", "cells"}`` counts (``cells`` = distinct masks).

    Raises:
        LocbenchError / BadInputError naming the offending images.
    """
    bad: list[str] = []
    seen: set[str] = set()
    images = triples = cells = 0
    for row in iter_submission(path):
        images += 1
        seen.add(row.image_id)
        pixels: dict[str, int] = {}  # encoded mask -> its pixel count
        for label, conf, encoded in _triples(row):
            triples += 1
            if encoded not in pixels:
                pixels[encoded] = int(decode_binary_mask(encoded, row.height, row.width).sum())
            if not 0 <= label < num_classes or not math.isfinite(conf) or not pixels[encoded]:
                bad.append(f"{row.image_id}: label {label}, confidence {conf}, {pixels[encoded]} mask pixels")
        cells += len(pixels)
    if bad:
        raise BadInputError(f"{path}: triples with a bad label, confidence or empty mask", bad)
    if ids is not None:
        missing = sorted(set(ids) - seen)
        if missing:
            raise BadInputError(f"{path}: images without a row", missing, "write one row per image, even if empty")
    return {"images": images, "triples": triples, "cells": cells}
