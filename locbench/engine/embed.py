"""The embedding cache of frozen-backbone probes: every item's pooled features, computed once, memory-mapped.

Layout of one folder (``<cache_dir>/embeddings/<backbone>-<pool>-<key>/``, next to the image caches)::

    meta.json     what was embedded: key inputs, shape, batch size
    features.npy  (N, D) float32, memory-mapped, one row per item (a field, or a cell crop), written batch by batch;
                  with ``spans`` an item (a field) fills several rows (its cells: ``model.pool: cell_mask``)
    done.npy      one byte per item: 1 once its batch is written (flushed every few seconds: a killed pass resumes)
    complete      written last, atomically: only then is the cache used as finished

The key hashes the backbone's weights (their bytes, so a pretrained file, a random init or an HPA checkpoint are
told apart by what they hold), the items (the image or crop cache key: files, ids, size, stains, resize policy),
the channels, the pooling, the input normalisation and the autocast dtype. Items are embedded in fixed batches of
the first pass's size, also when resumed: a resumed pass gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from locbench.data.cache import default_cache_dir
from locbench.engine.data import to_unit
from locbench.store.atomic import atomic_write_json, atomic_write_npy, ensure_writable_dir
from locbench.store.lock import FileLock

log = logging.getLogger(__name__)

EMBED_VERSION = 1
#: Seconds between writes of the progress bitmap: what a killed pass loses at most.
FLUSH_EVERY_S = 2.0


@dataclass
class Embeddings:
    """A finished embedding cache: ``array`` is (N, D) float32, row ``i`` the features of item ``i``."""

    path: Path
    n: int
    dim: int
    _array: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path / "features.npy", mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # each DataLoader worker opens its own map


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, bytes): the identity of a backbone's weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def embedding_key(inputs: dict[str, Any]) -> str:
    """A short hash of everything the embeddings depend on (``inputs``: JSON-serialisable key parts)."""
    return hashlib.sha256(json.dumps([EMBED_VERSION, inputs], sort_keys=True).encode()).hexdigest()[:20]


def embedding_folder(cache_dir: str | os.PathLike | None, backbone: str, pool: str, key: str) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "embeddings" / f"{re.sub(r'[^A-Za-z0-9_.]+', '_', backbone)}-{pool}-{key}"


def build_embeddings(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    folder: Path,
    dim: int,
    meta: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    spans: np.ndarray | None = None,
    collate: Callable[[list], Any] | None = None,
) -> Embeddings:
    """Embed every item of ``dataset`` into ``folder`` once, or reuse the finished cache there.

    Args:
        encoder: [0, 1] float images (B, C, S, S) → (B, ``dim``) features (normalisation and pooling included);
            run in eval mode without gradients.
        dataset: ``(uint8 or float image, target)`` items; row ``i`` of the cache is item ``i``.
        folder: the cache folder (:func:`embedding_folder` of the key).
        meta: what the key was made of, written to ``meta.json`` for people reading the folder.
        dtype: autocast dtype (None: float32).
        batch_size: items per batch of a new pass (a resumed pass keeps its first one's).
        workers: DataLoader processes.
        on_batch: called with the number of items done after each batch (tests use it to interrupt).
        spans: item ``i`` fills rows ``spans[i]:spans[i + 1]`` (None: one row per item); the dataset's items are
            then ``(image, extra)`` and the encoder is called as ``encoder(images, extra)`` (a batch's rows in order).
        collate: the DataLoader's ``collate_fn`` (None: PyTorch's default).
    """
    if (folder / "complete").is_file():  # finished: no lock needed (a read-only shared cache works)
        log.info("reusing embeddings %s", folder)
    else:
        ensure_writable_dir(folder, what="embedding cache folder (data.cache_dir or $LOCBENCH_CACHE)")
        # two sweep runs probing one backbone: the second waits, then finds the cache complete
        with FileLock(folder / ".lock").waiting():
            if not (folder / "complete").is_file():
                bounds = np.arange(len(dataset) + 1) if spans is None else np.asarray(spans, dtype=np.int64)
                batches = _Batches(batch_size, workers, collate, per_item=spans is None)
                _embed(encoder, dataset, folder, dim, meta, device, dtype, batches, bounds, on_batch)
    saved = json.loads((folder / "meta.json").read_text())
    return Embeddings(folder, int(saved["shape"][0]), int(saved["shape"][1]))


@dataclass(frozen=True)
class _Batches:
    """How items are batched: ``size`` items a batch, loader processes, collate function, one row per item."""

    size: int
    workers: int
    collate: Callable[[list], Any] | None
    per_item: bool


def _embed(
    encoder: nn.Module,
    dataset: Dataset,
    folder: Path,
    dim: int,
    meta: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None,
    batches: _Batches,
    bounds: np.ndarray,
    on_batch: Callable[[int], None] | None,
) -> None:
    n, rows = len(dataset), int(bounds[-1])
    features, done_path, meta_path = folder / "features.npy", folder / "done.npy", folder / "meta.json"
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    batch_size = batches.size
    same = old is not None and old.get("shape") == [rows, dim] and old.get("items", rows) == n
    if same and features.is_file() and done_path.is_file() and len(np.load(done_path)) == n:
        done = np.load(done_path)
        batch_size = int(old["batch_size"])  # the same batches as the first pass: the same bytes
        log.info("resuming embeddings %s: %d of %d items already done", folder, int(done.sum()), n)
    else:
        created = np.lib.format.open_memmap(features, mode="w+", dtype=np.float32, shape=(rows, dim))
        del created
        done = np.zeros(n, dtype=np.uint8)
        atomic_write_npy(done_path, done)
        info = {"version": EMBED_VERSION, "shape": [rows, dim], "items": n, "batch_size": batch_size}
        atomic_write_json(meta_path, {**meta, **info})
        log.info("embedding %d items into %s (%d rows of %d features)", n, folder, rows, dim)
    arr = np.load(features, mmap_mode="r+")
    starts = [s for s in range(0, n, batch_size) if not done[s : s + batch_size].all()]
    todo = [r for s in starts for r in range(s, min(n, s + batch_size))]
    # every batch but the last overall is full, so batching ``todo`` gives back the chunks of ``starts``
    loader = DataLoader(
        Subset(dataset, todo),
        batch_size=batch_size,
        shuffle=False,
        num_workers=batches.workers,
        collate_fn=batches.collate,
    )
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    encoder = encoder.to(device).eval()
    t0 = last_flush = last_log = time.monotonic()
    count = 0
    try:
        with torch.no_grad():
            for start, (x, extra) in zip(starts, loader, strict=True):
                x = to_unit(x.to(device, non_blocking=True))
                with autocast:
                    feats = encoder(x) if batches.per_item else encoder(x, extra)
                first, last = int(bounds[start]), int(bounds[start + len(x)])
                if feats.shape[0] != last - first:
                    raise ValueError(f"the encoder gave {feats.shape[0]} rows for items of {last - first}")
                arr[first:last] = feats.float().cpu().numpy()
                done[start : start + len(x)] = 1
                count += len(x)
                now = time.monotonic()
                if now - last_flush > FLUSH_EVERY_S:
                    arr.flush()  # rows reach the file before they are marked done
                    atomic_write_npy(done_path, done)
                    last_flush = now
                if now - last_log > 30:
                    log.info("embedded %d / %d items (%.0f items/s)", count, len(todo), count / (now - t0))
                    last_log = now
                if on_batch is not None:
                    on_batch(int(done.sum()))
    finally:
        arr.flush()  # whatever happened, what is written is recorded: a rerun resumes from here
        atomic_write_npy(done_path, done)
        del arr
    finished = {"items": n, "rows": rows, "finished": time.time(), "seconds": time.monotonic() - t0}
    atomic_write_json(folder / "complete", finished)
    log.info("embeddings complete: %s (%d items in %.1f s)", folder, n, time.monotonic() - t0)
