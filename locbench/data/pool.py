"""Passes over many fields in worker processes: a bounded queue of tasks and a progress line with rate and ETA.

Used by the dataset-scale passes of cells (segmentation, the cell crop cache): at most ``ahead`` tasks per worker
are submitted at a time, so memory does not grow with the number of fields, and results stream back as they
finish. Worker processes start with ``forkserver`` (not ``fork``: a forked child inherits OpenCV's thread pool
half-dead and can hang in ``cv2.resize``) and run OpenCV single-threaded (one process per core already).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from typing import Any

import cv2
from tqdm import tqdm

log = logging.getLogger(__name__)


#: Below this many fields, starting worker processes (about a second each) costs more than it saves.
MIN_FIELDS_FOR_POOL = 16


def cpu_workers() -> int:
    """One worker per CPU this process may use (the default of the per-field passes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _init(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    cv2.setNumThreads(1)
    if initializer is not None:
        initializer(*initargs)


def imap_bounded(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    ahead: int = 2,
) -> Iterator[Any]:
    """``fn(item)`` for every item, in worker processes, yielding results as they finish (any order).

    With ``workers <= 1`` everything runs here, in order (``initializer`` is then the caller's business). At most
    ``ahead * workers`` tasks are in flight; the rest of ``items`` is not even drawn from the iterator yet. Closing
    the generator early (an error, a KeyboardInterrupt) cancels the tasks not started.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # The server imports fn's module once and forks every worker from it: workers start without importing
        # locbench (and torch) again, seconds each on a busy machine. Takes effect when the server first starts.
        ctx.set_forkserver_preload([fn.__module__])
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init, initargs=(initializer, initargs)
    ) as pool:
        yield from submit_bounded(pool, fn, items, limit=ahead * workers)


def submit_bounded(
    pool: Executor, fn: Callable[..., Any], items: Iterable[Any], *, limit: int, args: tuple = ()
) -> Iterator[Any]:
    """``fn(item, *args)`` for every item on ``pool``, yielding results as they finish (any order), with at most
    ``limit`` tasks submitted and unfinished; the rest of ``items`` is not drawn yet. Closing the generator early
    cancels the tasks not started."""
    pending: set[Future] = set()
    try:
        for item in items:
            pending.add(pool.submit(fn, item, *args))
            if len(pending) >= limit:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


class Progress:
    """Fields done, fields per second and the time left: a tqdm bar on a terminal, else a log line every 10 s."""

    def __init__(self, total: int, what: str, *, enabled: bool = True, every_s: float = 10.0) -> None:
        self.total, self.what, self.count, self.every_s = total, what, 0, every_s
        self.start = self.last = time.monotonic()
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=what, unit="field")

    def rate(self) -> float:
        """Fields per second so far."""
        elapsed = time.monotonic() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """``"segment: 120 / 2000 fields, 3.10 fields/s, ETA 10 min"``."""
        rate = self.rate()
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        left = "?" if eta == float("inf") else (f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.0f} min")
        return f"{self.what}: {self.count} / {self.total} fields, {rate:.2f} fields/s, ETA {left}"

    def update(self, k: int = 1) -> None:
        self.count += k
        log.debug("done %d of %d (%s)", self.count, self.total, self.what)  # benchmarks time these
        if self.bar is not None:
            self.bar.update(k)
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            log.info(self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.total:
            log.info(
                "%s: %d fields in %.1f s (%.2f fields/s)",
                self.what,
                self.count,
                time.monotonic() - self.start,
                self.rate(),
            )
