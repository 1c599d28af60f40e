"""A torch Dataset of whole fields: (image, multi-hot target) pairs from a cache or straight from the files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from locbench.data import images as imio
from locbench.data.cache import Cache
from locbench.data.channels import resolve_channels
from locbench.data.formats import Table
from locbench.errors import LocbenchError


class FieldDataset(Dataset):
    """Fields ``table[indices]`` as ``(image, target)``.

    ``image`` is a ``torch.uint8`` tensor (C, S, S) for 8-bit data, or float32 in [0, 1] for 16-bit data (so
    that 16-bit precision is kept); ``target`` is a float32 multi-hot vector. The cached and the uncached path
    give the same pixels. No augmentation here: the engine augments batches on the device.

    Args:
        table: the label table.
        indices: rows of ``table`` this dataset serves (e.g. a split part).
        channels: channel mode or stain list (``resolve_channels``).
        size: side length in pixels.
        cache: a :class:`Cache` holding these fields (any stain superset, same size and policy); None reads files.
        resize_policy: ``pad``, ``crop`` or ``stretch`` for non-square fields (``DataConfig.resize``).
    """

    def __init__(
        self,
        table: Table,
        indices: Sequence[int] | np.ndarray,
        *,
        channels: str | Iterable[str],
        size: int,
        cache: Cache | None = None,
        resize_policy: str = "pad",
    ) -> None:
        self.table = table
        self.indices = np.asarray(indices, dtype=np.int64)
        self.channels = resolve_channels(channels)
        self.size = int(size)
        self.resize_policy = resize_policy
        self.cache = cache
        absent = [c for c in dict.fromkeys(self.channels) if c not in table.stains]
        if absent:
            raise LocbenchError(f"{table.image_dir}: the dataset has no {', '.join(absent)} stain images")
        if cache is not None:
            missing = [c for c in self.channels if c not in cache.stains]
            if missing or cache.size != self.size or cache.resize_policy != resize_policy:
                raise LocbenchError(
                    f"cache {cache.path} holds stains {','.join(cache.stains)} at {cache.size}px "
                    f"(resize {cache.resize_policy}); this dataset needs {','.join(self.channels)} at {self.size}px "
                    f"(resize {resize_policy}): build a matching cache"
                )
            self.dtype = cache.dtype
            # Map table rows to cache rows by id, so a cache of the full table serves any subset.
            try:
                self.rows = np.array([cache.row_of(table.ids[i]) for i in self.indices], dtype=np.int64)
            except KeyError as e:
                raise LocbenchError(f"field {e.args[0]!r} is not in cache {cache.path}; rebuild it") from None
            bad = [table.ids[i] for i in self.indices if table.ids[i] in cache.bad_ids]
            if bad:
                raise LocbenchError(
                    f"{len(bad)} fields of this dataset could not be decoded into the cache (e.g. {bad[0]!r}); "
                    "drop them first with cache.drop_bad(table)"
                )
        else:
            self.rows = None
            self.dtype = self._probe_dtype()

    def _probe_dtype(self) -> np.dtype:
        # One field decides the pixel type, so that every item (and so every batch) has the same dtype.
        for i in self.indices[:8]:
            try:
                return imio.read_field_raw(self.table.sources(int(i)), self.channels[:1], 8).dtype
            except imio.ImageReadError:
                continue  # reported when that item is read
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[k])
        if self.cache is not None:
            raw = self.cache.get(int(self.rows[k]), self.channels)
        else:
            raw = imio.read_field_raw(
                self.table.sources(i),
                self.channels,
                self.size,
                dtype=self.dtype,
                resize_policy=self.resize_policy,
                refuse_upscale=True,
            )
        if raw.dtype == np.uint8:
            image = torch.from_numpy(raw)
        else:
            image = torch.from_numpy(imio.scale(raw))
        target = torch.from_numpy(self.table.targets[i].astype(np.float32))
        return image, target
