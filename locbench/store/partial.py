"""A file of float32 rows appended batch by batch and fsynced, so that a killed pass keeps every finished batch.

Used for the probabilities of a long ``predict`` or ``evaluate`` (:mod:`locbench.infer.stream`). The file starts
with a fixed-size header naming what it holds (a key: a hash of the model, the items and the settings); a file of
another key is started over, never mixed in. A torn last row (a kill during a write) is cut off when it is opened.
The file sits beside the output it will become (``.NAME.partial``) and is removed once that output is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from locbench.store.atomic import atomic_write_bytes, write_error

log = logging.getLogger(__name__)

MAGIC = b"locbench-rows 1 "
HEADER_BYTES = 256


def partial_path(out: str | os.PathLike, *, part: str | None = None) -> Path:
    """Where the rows of the output ``out`` are kept while it is computed: ``.NAME.partial`` beside it, or
    ``.NAME.PART.partial`` for a second pass that output needs (a cell submission blending in an image run's
    field probabilities keeps those as ``part="image-run"``)."""
    out = Path(out)
    return out.parent / (f".{out.name}.partial" if part is None else f".{out.name}.{part}.partial")


class RowLog:
    """float32 rows of ``columns`` values, appended to ``path`` under ``key``.

    Args:
        path: the file (see :func:`partial_path`).
        key: what the rows are of; at most 200 ASCII characters (e.g. a hex digest).
        columns: values per row.
    """

    def __init__(self, path: str | os.PathLike, *, key: str, columns: int) -> None:
        self.path = Path(path)
        self.key = key
        self.columns = int(columns)
        self.header = self._header()

    def _header(self) -> bytes:
        head = MAGIC + json.dumps({"key": self.key, "columns": self.columns}).encode("ascii")
        if len(head) > HEADER_BYTES - 1:
            raise ValueError(f"key too long for a row log header: {self.key!r}")
        return head.ljust(HEADER_BYTES - 1, b" ") + b"\n"

    @property
    def row_bytes(self) -> int:
        return 4 * self.columns

    def open(self, *, multiple: int = 1, total: int | None = None, stops: np.ndarray | None = None) -> int:
        """Make the file ready to append to and return how many rows it already holds, rounded down to a multiple
        of ``multiple`` (or to the largest of the ascending row counts ``stops`` not above it, for batches of
        uneven rows) unless they are all ``total`` rows of the pass (rows past it are cut off, as is a torn row):
        the rows a re-run need not compute again.

        A missing file, or one of another key, is (re)created empty.
        """
        try:
            with open(self.path, "rb") as f:
                same = f.read(HEADER_BYTES) == self.header
        except FileNotFoundError:
            same = None
        except OSError as e:
            raise write_error(self.path, e) from None
        if not same:
            if same is False:
                log.info("%s holds rows of another command (other model, data or settings): starting over", self.path)
            atomic_write_bytes(self.path, self.header)
            return 0
        size = self.path.stat().st_size
        rows = (size - HEADER_BYTES) // self.row_bytes
        if rows != total and stops is not None:
            rows = int(stops[np.searchsorted(stops, rows, side="right") - 1]) if rows >= stops[0] else 0
        elif rows != total:  # a finished pass ends with a short batch: kept whole
            rows -= rows % max(1, multiple)
        keep = HEADER_BYTES + rows * self.row_bytes
        if keep != size:
            try:
                os.truncate(self.path, keep)
            except OSError as e:
                raise write_error(self.path, e) from None
        return rows

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` ((n, columns), cast to float32) and fsync: once this returns they survive a kill."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.columns:
            raise ValueError(f"rows of shape {rows.shape}; expected (n, {self.columns})")
        try:
            with open(self.path, "ab") as f:
                f.write(rows.tobytes())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(self.path, e) from None

    def read(self) -> np.ndarray:
        """Every whole row of the file, (n, columns) float32."""
        data = np.fromfile(self.path, dtype=np.uint8, offset=HEADER_BYTES)
        n = len(data) // self.row_bytes
        return data[: n * self.row_bytes].view(np.float32).reshape(n, self.columns).copy()
