"""An on-disk cache of decoded, resized fields: decode every PNG/TIFF once, then read rows from a memory map.

Layout of one cache folder (``<cache_dir>/<format>-<size>-<stains>-<key>/``)::

    meta.json    what was cached: key inputs, shape, dtype, stains
    ids.txt      field id of each row
    pixels.npy   (N, C_unique, S, S) uint8 or uint16, memory-mapped, rows written as they are decoded
    done.npy     one byte per row: 1 when the row is written (flushed every few seconds: a killed build resumes)
    bad.json     id → reason for fields that could not be decoded
    complete     written last, atomically: only then is the cache used as finished

The key hashes the image files' names, sizes and modification times, the row order, the size, the stain set
and the resize method: any change makes a new folder, the same inputs reuse the finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from locbench.data import images as imio
from locbench.data.channels import resolve_channels, unique_stains
from locbench.data.formats import Table
from locbench.data.pool import submit_bounded
from locbench.errors import BadInputError, LocbenchError
from locbench.store.atomic import atomic_write_json, atomic_write_npy, atomic_write_text, ensure_writable_dir
from locbench.store.lock import FileLock

log = logging.getLogger(__name__)

CACHE_VERSION = 1
#: Seconds between writes of the progress bitmap: what a killed build loses at most.
FLUSH_EVERY_S = 2.0
#: Below this many fields to decode, starting worker processes (about a second) costs more than it saves.
MIN_FIELDS_FOR_POOL = 128


def default_cache_dir() -> Path:
    """``$LOCBENCH_CACHE`` or ``~/.cache/locbench``."""
    env = os.environ.get("LOCBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "locbench"


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class MemmapRows:
    """Rows of a cache folder's memory-mapped ``pixels.npy``: row ``i`` is (len(stains), S, S), one plane a stain.

    The base of the field cache (:class:`Cache`) and the cell crop cache. Subclasses are dataclasses with ``path``,
    ``stains`` and an ``_array`` field defaulting to None. Picklable for DataLoader workers: the memory map is
    opened lazily in each process.
    """

    path: Path
    stains: tuple[str, ...]
    _array: np.ndarray | None
    #: Attributes not sent to worker processes (each rebuilds its own).
    _transient: tuple[str, ...] = ("_array",)

    @property
    def array(self) -> np.ndarray:
        """The whole (N, C, S, S) memory map (read-only; nothing is loaded until indexed)."""
        if self._array is None:
            self._array = np.load(self.path / "pixels.npy", mmap_mode="r")
        return self._array

    def get(self, i: int, channels: Iterable[str] | None = None) -> np.ndarray:
        """Row ``i`` as an in-memory array; ``channels`` names the stain of each tensor channel (picks and repeats
        planes), default every cached stain once."""
        row = self.array[i]
        if channels is None:
            return np.array(row)
        return np.array(row[[self.stains.index(c) for c in channels]])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._transient:
            state[name] = None  # a memory map is not sent to workers; each opens its own
        return state


@dataclass
class Cache(MemmapRows):
    """A finished field cache: ``get(i)`` is row ``i`` (the field ``ids[i]``), shape (C_unique, S, S), integer dtype."""

    path: Path
    ids: list[str]
    stains: tuple[str, ...]
    size: int
    dtype: np.dtype
    bad_ids: dict[str, str] = field(default_factory=dict)
    resize_policy: str = "pad"
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)
    _rows: dict[str, int] | None = field(default=None, repr=False, compare=False)
    _transient = ("_array", "_rows")

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, field_id: str) -> int:
        """The row holding ``field_id`` (KeyError if not cached)."""
        if self._rows is None:
            self._rows = {fid: r for r, fid in enumerate(self.ids)}
        return self._rows[field_id]

    def drop_bad(self, table: Table) -> Table:
        """``table`` without the fields this cache could not decode (built with ``skip_bad``)."""
        if not self.bad_ids:
            return table
        return table.subset([i for i, fid in enumerate(table.ids) if fid not in self.bad_ids])


def cache_key(table: Table, channels: tuple[str, ...], size: int, resize_policy: str = "pad") -> str:
    """Hash of everything the cached pixels depend on (files, row order, size, stains, resize method and policy).

    The stain mapping (``data.stains``) enters through each stain's file name and, in a multi-channel file, its
    channel: naming DAPI as blue instead of green makes another cache.
    """
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, imio.RESIZE_METHOD, resize_policy, int(size), list(channels)]).encode())
    for i, fid in enumerate(table.ids):
        h.update(fid.encode() + b"\0")
        sources = table.sources(i)
        for stain in channels:
            source = sources[stain]
            path = source.path
            try:
                st = path.stat()
                stamp = f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = f"{path.name}:missing"
            if source.channel is not None:
                stamp += f":channel={source.channel!r}"
            h.update(stamp.encode() + b"\0")
    return h.hexdigest()[:20]


def open_cache(path: str | os.PathLike) -> Cache:
    """Open a finished cache folder (raises if it is not complete)."""
    path = Path(path)
    if not (path / "complete").is_file():
        raise LocbenchError(f"{path}: not a finished cache (no 'complete' marker); run `locbench cache` to build it")
    meta = json.loads((path / "meta.json").read_text())
    ids = (path / "ids.txt").read_text(encoding="utf-8").splitlines()
    bad = json.loads((path / "bad.json").read_text()) if (path / "bad.json").is_file() else {}
    stains, dtype = tuple(meta["channels"]), np.dtype(meta["dtype"])
    # caches from before the policy existed stretched non-square fields
    return Cache(path, ids, stains, int(meta["size"]), dtype, bad, meta.get("resize_policy", "stretch"))


def build_cache(
    table: Table,
    *,
    channels: str | Iterable[str],
    size: int,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    resize_policy: str = "pad",
    chunk_size: int = 16,
    on_chunk: Callable[[int], None] | None = None,
) -> Cache:
    """Decode and resize every field of ``table`` once into a memory-mapped array, or reuse a finished one.

    Args:
        table: the fields to cache; row ``i`` of the cache is ``table.ids[i]``.
        channels: a channel mode or stain list; the cache holds each distinct stain once.
        size: side length in pixels.
        cache_dir: parent folder (default ``$LOCBENCH_CACHE`` or ``~/.cache/locbench``).
        workers: decoding processes (default ``min(cpu count, 8)``; 0 or 1 decodes in this process).
        progress: show a progress bar when stderr is a terminal (log lines otherwise).
        skip_bad: keep going past undecodable fields and record them in ``Cache.bad_ids`` instead of raising.
        resize_policy: ``pad``, ``crop`` or ``stretch`` for non-square fields (see :mod:`locbench.data.images`).
        chunk_size: fields per worker task.
        on_chunk: called with the number of rows done after each finished chunk (tests use it to interrupt).

    Returns:
        The finished cache.

    Raises:
        BadInputError: some fields could not be decoded (all listed); the decoded rows are kept for a rerun.
        LocbenchError: not enough free disk space.
    """
    stains = unique_stains(resolve_channels(channels))
    absent = [c for c in stains if c not in table.stains]
    if absent:
        raise LocbenchError(
            f"{table.image_dir}: the dataset has no {', '.join(absent)} stain images; pick a channel mode "
            f"within {', '.join(table.stains)}"
        )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = cache_key(table, stains, size, resize_policy)
    folder = root / f"{table.format}-{size}-{''.join(c[0] for c in stains)}-{key}"
    if (folder / "complete").is_file():  # finished: no lock needed, so a read-only shared cache works too
        log.info("reusing cache %s", folder)
    else:
        # a file in the way or a read-only folder: say so before decoding anything (a finished cache needs neither)
        ensure_writable_dir(folder, what="cache folder (--cache-dir or $LOCBENCH_CACHE)")
        with FileLock(folder / ".lock").waiting():  # a second builder waits, then finds it complete
            if not (folder / "complete").is_file():  # another process may have finished it while we waited
                _build(table, folder, key, stains, size, resize_policy, workers, progress, chunk_size, on_chunk)
    cache = open_cache(folder)
    if cache.bad_ids:
        items = [f"{fid}: {reason}" for fid, reason in cache.bad_ids.items()]
        if not skip_bad:
            raise BadInputError(
                f"{len(items)} of {len(table)} fields cannot be decoded",
                items,
                fix="replace or remove these images, or pass --skip-bad (skip_bad=True) to leave them out",
            )
        log.warning("skipping %d of %d fields that cannot be decoded", len(items), len(table))
    return cache


def cache_from_config(table: Table, dcfg: Any) -> Cache:
    """:func:`build_cache` of ``table`` with the settings of a :class:`~locbench.config.DataConfig` (``channels``,
    ``img_size``, ``cache_dir``, ``workers``, ``skip_bad``, ``resize``)."""
    return build_cache(
        table,
        channels=resolve_channels(dcfg.channels),
        size=dcfg.img_size,
        cache_dir=dcfg.cache_dir,
        workers=max(1, dcfg.workers),
        skip_bad=dcfg.skip_bad,
        resize_policy=dcfg.resize,
    )


def _build(
    table: Table,
    folder: Path,
    key: str,
    stains: tuple[str, ...],
    size: int,
    resize_policy: str,
    workers: int | None,
    progress: bool,
    chunk_size: int,
    on_chunk: Callable[[int], None] | None,
) -> None:
    n = len(table)
    pixels = folder / "pixels.npy"
    meta_path = folder / "meta.json"
    bad: dict[str, str] = {}
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is not None and pixels.is_file() and (folder / "done.npy").is_file():
        done = np.load(folder / "done.npy")
        if (folder / "bad.json").is_file():
            bad = json.loads((folder / "bad.json").read_text())
        log.info("resuming cache %s: %d of %d fields already done", folder, int(done.sum()), n)
    else:
        dtype = _probe_dtype(table, stains, size)
        shape = (n, len(stains), size, size)
        _check_disk(folder, int(np.prod(shape)) * dtype.itemsize)
        meta = {
            "version": CACHE_VERSION,
            "key": key,
            "format": table.format,
            "root": str(table.root),
            "num_fields": n,
            "channels": list(stains),
            "size": size,
            "dtype": dtype.name,
            "shape": list(shape),
            "resize": imio.RESIZE_METHOD,
            "resize_policy": resize_policy,
        }
        atomic_write_text(folder / "ids.txt", "\n".join(table.ids) + "\n")
        # open_memmap creates the file at full length (sparse): rows are written in place as they come.
        created = np.lib.format.open_memmap(pixels, mode="w+", dtype=dtype, shape=shape)
        del created  # closes the map; workers reopen the file themselves
        done = np.zeros(n, dtype=np.uint8)
        _save_progress(folder, done, bad)
        atomic_write_json(meta_path, meta)
        log.info("building cache %s: %d fields, %s, %.2f GB", folder, n, shape, np.prod(shape) * dtype.itemsize / 1e9)
    dtype = np.dtype(meta["dtype"])
    row_of = {fid: r for r, fid in enumerate(table.ids)}
    todo = [r for r in range(n) if not done[r] and table.ids[r] not in bad]
    chunks = [[(r, table.sources(r)) for r in todo[k : k + chunk_size]] for k in range(0, len(todo), chunk_size)]
    bar = _Progress(len(todo), progress)
    last_flush = time.monotonic()
    try:
        for results in _run_chunks(chunks, str(pixels), dtype, stains, size, resize_policy, workers):
            for r, reason in results:
                if reason is None:
                    done[r] = 1
                else:
                    bad[table.ids[r]] = reason
            bar.update(len(results))
            if time.monotonic() - last_flush > FLUSH_EVERY_S:
                _save_progress(folder, done, bad)
                last_flush = time.monotonic()
            if on_chunk is not None:
                on_chunk(int(done.sum()))
    finally:
        # Whatever happened, what is written is recorded: a rerun resumes from here.
        _save_progress(folder, done, bad)
        bar.close()
    bad = {fid: bad[fid] for fid in sorted(bad, key=row_of.__getitem__)}
    _save_progress(folder, done, bad)
    atomic_write_json(folder / "complete", {"num_fields": n, "num_bad": len(bad), "finished": time.time()})
    log.info("cache complete: %s (%d fields, %d undecodable)", folder, n, len(bad))


def _run_chunks(
    chunks, pixels: str, dtype: np.dtype, stains, size: int, resize_policy: str, workers: int | None
) -> Iterator[list]:
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(chunks) <= 1 or sum(len(c) for c in chunks) < MIN_FIELDS_FOR_POOL:
        for chunk in chunks:
            yield _fill_chunk(chunk, pixels, dtype.name, stains, size, resize_policy)
        return
    # forkserver, not fork: a forked child inherits OpenCV's thread pool half-dead and can hang in cv2.resize.
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        # a bounded queue (2 per worker): results stream back while the rest waits unsubmitted
        yield from submit_bounded(
            pool, _fill_chunk, chunks, limit=2 * workers, args=(pixels, dtype.name, stains, size, resize_policy)
        )


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


_WORKER_MAPS: dict[str, np.ndarray] = {}


def _fill_chunk(chunk, pixels: str, dtype: str, stains, size: int, resize_policy: str) -> list[tuple[int, str | None]]:
    """Decode the fields of ``chunk`` into their rows of the memory map; return (row, error or None) each."""
    arr = _WORKER_MAPS.get(pixels)
    if arr is None:
        arr = _WORKER_MAPS[pixels] = np.load(pixels, mmap_mode="r+")
    out = []
    for r, paths in chunk:
        try:
            arr[r] = imio.read_field_raw(
                paths, stains, size, dtype=np.dtype(dtype), resize_policy=resize_policy, refuse_upscale=True
            )
            out.append((r, None))
        except imio.ImageReadError as e:
            out.append((r, f"{e.path.name}: {e.reason}"))
        except cv2.error as e:  # OpenCV refusing a malformed image is a bad field, not a crash of the build
            out.append((r, f"OpenCV cannot process it ({str(e).strip().splitlines()[-1]})"))
    arr.flush()  # rows reach the file before the parent marks them done
    return out


def _probe_dtype(table: Table, stains, size: int) -> np.dtype:
    """8-bit or 16-bit, from the first fields that decode (their errors reappear, listed, in the build)."""
    for i in range(min(len(table), 8)):
        try:
            return imio.read_field_raw(table.sources(i), stains, size).dtype
        except imio.ImageReadError:
            continue
    return np.dtype(np.uint8)


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise LocbenchError(
            f"{folder}: the cache needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free there; "
            "free space, use a smaller --img-size, or put the cache elsewhere (--cache-dir or $LOCBENCH_CACHE)"
        )


def _save_progress(folder: Path, done: np.ndarray, bad: dict[str, str]) -> None:
    atomic_write_npy(folder / "done.npy", done)
    atomic_write_json(folder / "bad.json", bad)


class _Progress:
    """tqdm on a terminal, a log line every 10% otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.count, self.next_log = total, 0, 0.1
        self.bar = None
        if enabled and sys.stderr.isatty() and total:
            self.bar = tqdm(total=total, desc="caching", unit="field")

    def update(self, k: int) -> None:
        self.count += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.total and self.count / self.total >= self.next_log:
            log.info("cached %d / %d fields", self.count, self.total)
            self.next_log = min(1.0, self.next_log + 0.1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
