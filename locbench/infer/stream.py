"""A model's probabilities over a dataset of any size, streamed.

Loader processes decode and resize the next batches while the model runs on the current one; only the (N, C)
probabilities are kept, never the images, so memory does not grow with the number of fields. With a row log
(:class:`~locbench.store.partial.RowLog`) each batch's probabilities are appended and fsynced as it finishes: a
killed pass loses at most the batch in flight, and the same command run again starts after the last batch it kept
(batches are cut at the same places as in an uninterrupted pass, so the numbers are bit for bit the same). Progress,
with fields per second and the time left, goes to stderr: a bar on a terminal, else a log line every
:data:`~locbench.engine.callbacks.LINE_EVERY_S` seconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate
from tqdm.auto import tqdm

from locbench.engine.callbacks import LINE_EVERY_S, duration
from locbench.engine.data import make_loader, to_unit
from locbench.engine.device import Accel
from locbench.errors import LocbenchError
from locbench.store.partial import RowLog

log = logging.getLogger(__name__)


def forward_probs(model: torch.nn.Module, x: torch.Tensor, *more: Any, accel: Accel) -> torch.Tensor:
    """Sigmoid probabilities (float32, on the CPU) of one batch of [0, 255] uint8 or [0, 1] float images (and the
    model's further inputs ``more``, as they are), run as ``accel`` says (device, autocast dtype, memory layout)."""
    x = accel.layout(to_unit(x.to(accel.device, non_blocking=True)))
    with accel.autocast():
        logits = model(x, *more)
    return torch.sigmoid(logits.float()).cpu()


def rows_key(*, checkpoint: str, model: torch.nn.Module, ids: Sequence[str], settings: dict[str, Any]) -> str:
    """What a row log holds, as a hex digest: the checkpoint's digest, the model as built (a wrapper changes it), the
    item ids in order and the settings that change the numbers or where batches are cut (size, stains, batch...)."""
    h = hashlib.sha256()
    h.update(json.dumps({"checkpoint": checkpoint, "settings": settings}, sort_keys=True, default=str).encode())
    h.update(hashlib.sha256(repr(model).encode()).digest())
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\0")
    return h.hexdigest()


class _Failed:
    """An item that could not be read, by its error's message (an error raised in a loader process reaches the
    main process as the text of a traceback; this one arrives as the message locbench gives the user)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Guarded(Dataset):
    """The items of ``dataset``; one that raises a :class:`~locbench.errors.LocbenchError` (an unreadable image)
    becomes a :class:`_Failed`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, k: int):
        try:
            return self.dataset[k]
        except LocbenchError as e:
            return _Failed(str(e))


def _collate(items: list, collate: Callable[[list], Any] = default_collate):
    """The batch ``collate`` makes, or the first :class:`_Failed` item of it."""
    failed = next((it for it in items if isinstance(it, _Failed)), None)
    return failed if failed is not None else collate(items)


class Progress:
    """Items done, items per second and the time left; ``mode``: ``auto`` (a bar on a terminal, else lines),
    ``bar``, ``lines``."""

    def __init__(self, total: int, done: int, *, what: str, mode: str = "auto") -> None:
        self.total, self.done, self.what = total, done, what
        self.start_done = done
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        self.first = True
        if mode != "lines" and (mode != "auto" or sys.stderr.isatty()):
            self.bar = tqdm(total=total, initial=done, unit=what.rstrip("s"), dynamic_ncols=True, leave=False)

    @property
    def rate(self) -> float:
        """Items per second since this pass started (items of an earlier, killed pass are not counted)."""
        return (self.done - self.start_done) / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.first or now - self.last >= LINE_EVERY_S or self.done == self.total:
            self.first, self.last = False, now
            rate = self.rate
            left = duration((self.total - self.done) / rate) if rate > 0 else "?"
            log.info("%d/%d %s  %.1f %s/s  ETA %s", self.done, self.total, self.what, rate, self.what, left)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        n = self.done - self.start_done
        secs = time.perf_counter() - self.t0
        log.info("%d %s in %s (%.1f %s/s)", n, self.what, duration(secs), n / max(secs, 1e-9), self.what)


def stream_probs(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    accel: Accel,
    columns: int,
    batch_size: int,
    workers: int,
    rows: RowLog | None = None,
    progress: str = "auto",
    what: str = "fields",
    bounds: np.ndarray | None = None,
    collate: Callable[[list], Any] = default_collate,
) -> np.ndarray:
    """(N, C) float32 probabilities of ``model`` for every item of ``dataset``, batch by batch.

    Args:
        model: in eval mode, placed by ``accel`` (:meth:`~locbench.engine.device.Accel.place`), taking [0, 1] images.
        dataset: (image, target) items.
        accel: where and how the model runs (device, autocast dtype, memory layout).
        columns: values per item (the model's classes).
        batch_size, workers: DataLoader batch and loader processes (0: decode in this process).
        rows: a row log to append each batch to and resume from (None: keep the rows in memory only).
        progress: ``auto``, ``bar`` or ``lines`` (see :class:`Progress`).
        what: the rows' name in progress lines.
        bounds: for items that each give several rows (a whole field and its cells,
            :class:`~locbench.cells.field_cells.FieldCellDataset`): item ``k``'s rows are ``bounds[k]:bounds[k + 1]``,
            and its second element (the cells' weights) is the model's second input, not a target. Default: one row
            per item.
        collate: how a batch's items are put together (e.g. :func:`~locbench.cells.field_cells.collate_fields`).
    """
    n = len(dataset)
    total = n if bounds is None else int(bounds[-1])
    if rows is None:
        done = 0
    elif bounds is None:
        done = rows.open(multiple=batch_size, total=total)
    else:  # whole batches of items, so that batches are cut where an uninterrupted pass cuts them
        done = rows.open(total=total, stops=np.append(bounds[:-1:batch_size], total))
    if done:
        log.info(
            "%s: %d of %d %s already done by an earlier run of this command; continuing", rows.path, done, total, what
        )
    first = done if bounds is None else int(np.searchsorted(bounds, done))  # the first item not kept
    kept: list[np.ndarray] = []
    if first < n:
        todo = dataset if first == 0 else Subset(dataset, range(first, n))
        loader = make_loader(
            _Guarded(todo),
            batch_size=batch_size,
            workers=workers,
            pin=accel.pin,
            collate_fn=functools.partial(_collate, collate=collate),
        )
        bar = Progress(total, done, what=what, mode=progress)
        try:
            with torch.no_grad():
                for batch in loader:
                    if isinstance(batch, _Failed):
                        raise LocbenchError(batch.message)
                    inputs = batch[:1] if bounds is None else batch[:2]
                    p = forward_probs(model, *inputs, accel=accel).numpy()
                    if rows is not None:
                        rows.append(p)
                    else:
                        kept.append(p)
                    bar.update(len(p))
        finally:
            bar.close()
    if rows is not None:
        probs = rows.read()
        if len(probs) != total:  # the file was changed under us (another process on the same output)
            raise LocbenchError(
                f"{rows.path} holds {len(probs)} rows where {total} were written: another process writes the same "
                "output; run one at a time"
            )
        return probs
    return np.concatenate(kept).astype(np.float32) if kept else np.zeros((0, columns), np.float32)
