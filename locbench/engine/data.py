"""From a run configuration to data loaders: table, split, cache, datasets, normalisation statistics."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from locbench.cells.data import CellData, prepare_cell_data
from locbench.data.cache import Cache, cache_from_config
from locbench.data.channels import resolve_channels
from locbench.data.dataset import FieldDataset
from locbench.data.formats import Table, table_from_config
from locbench.data.splits import resolve_split
from locbench.engine.seed import derive_seed
from locbench.errors import LocbenchError
from locbench.models.pooling import CELL_MASK

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything the engine needs about the data of one run."""

    table: Table
    parts: dict[str, np.ndarray]  # split part → table indices
    channels: tuple[str, ...]
    cache: Cache | None
    class_names: list[str]

    img_size: int = 256
    resize_policy: str = "pad"

    def dataset(self, part: str):
        """The dataset of split part ``part``: (uint8 image, float multi-hot target) items."""
        return FieldDataset(
            self.table,
            self.parts[part],
            channels=self.channels,
            size=self.img_size,
            cache=self.cache,
            resize_policy=self.resize_policy,
        )

    def ids(self, part: str) -> list[str]:
        """One id per item of :meth:`dataset` (field ids here; cell-level data uses "FIELD/CELL")."""
        return [self.table.ids[i] for i in self.parts[part]]

    def targets(self, part: str) -> np.ndarray:
        """(N, C) multi-hot targets of the items of :meth:`dataset`."""
        return self.table.targets[self.parts[part]]


def prepare_data(
    cfg, split_file: Path, *, build_cache: bool = True, table: Table | None = None
) -> PreparedData | CellData:
    """Load the table (unless ``table`` is it already), make or reuse the split (saved to ``split_file``) and open
    or build the cache.

    A cell-level run (``train.level: cell``) gets :class:`~locbench.cells.data.CellData`: one item per cell crop
    (no crops are cut for ``model.pool: cell_mask``: its backbone sees whole fields, :mod:`locbench.engine.probe`).
    """
    if cfg.train.level == "cell":
        return prepare_cell_data(cfg, split_file, build_cache=build_cache and cfg.model.pool != CELL_MASK)
    dcfg = cfg.data
    table = table if table is not None else table_from_config(dcfg)
    cache = prepare_cache(cfg, table) if build_cache else None
    if cache is not None:
        table = cache.drop_bad(table)  # with skip_bad, fields that could not be decoded are left out
    parts = resolve_split(dcfg, table, split_file)
    prepared = PreparedData(table, parts, resolve_channels(dcfg.channels), cache, list(table.scheme.classes))
    prepared.img_size = dcfg.img_size
    prepared.resize_policy = dcfg.resize
    for name, idx in parts.items():
        log.info("split %s: %d images", name, len(idx))
    return prepared


#: The smallest parts a new split may leave: training needs two images (BatchNorm), validation and test one.
MIN_PART = {"train": 2, "val": 1, "test": 1}


def part_sizes(n: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """How many of ``n`` units (fields, or groups) a new split gives each part: the stratifier's nominal sizes
    (test ``ceil(test_frac * n)`` first, then val ``ceil`` of its share of the rest), from which it strays by a few."""
    test = math.ceil(test_frac * n) if test_frac > 0 else 0
    val = math.ceil(val_frac / (1.0 - test_frac) * (n - test))
    return {"train": n - test - val, "val": val, **({"test": test} if test_frac > 0 else {})}


def check_part_sizes(dcfg, table: Table) -> None:
    """Refuse fractions (``data.val_frac``, ``data.test_frac``) that leave a part of a new split of ``table`` too
    small, naming the keys and how many images each part would get; called before any run folder is made."""
    groups = dcfg.group_col and table.groups is not None
    n = len(set(table.groups.tolist())) if groups else len(table)
    sizes = part_sizes(n, dcfg.val_frac, dcfg.test_frac)
    short = [part for part, k in sizes.items() if k < MIN_PART[part]]
    if not short:
        return
    unit = "groups" if groups else "images"
    keys = [f"data.val_frac={dcfg.val_frac:g}"] + ([f"data.test_frac={dcfg.test_frac:g}"] if dcfg.test_frac else [])
    if short == ["test"]:
        keys = keys[1:]
    shares = ", ".join(f"{k} {part}" for part, k in sizes.items())
    needs = ", ".join(f"{part} at least {MIN_PART[part]}" for part in short)
    raise LocbenchError(
        f"{' and '.join(keys)} leave{'s' if len(keys) == 1 else ''} too few {unit} in the "
        f"{' and '.join(short)} part{'s' if len(short) > 1 else ''}: of the {n} {unit} of {table.csv_path}, a "
        f"split would give {shares} (needed: {needs}); change the fraction (the defaults are val_frac 0.2, "
        "test_frac 0) or use more data"
    )


def train_val_datasets(data: PreparedData | CellData) -> tuple[Dataset, Dataset]:
    """The training and validation datasets of ``data``; refuses parts too small to train on and names the
    classes the validation part lacks."""
    train_ds, val_ds = data.dataset("train"), data.dataset("val")
    if len(train_ds) < 2 or len(val_ds) < 1:
        raise LocbenchError(
            f"too few images to train: {len(train_ds)} for training, {len(val_ds)} for validation; "
            "use more data or change data.val_frac"
        )
    absent = [c for c, k in zip(data.class_names, data.targets("val").sum(0), strict=True) if k == 0]
    if absent:
        log.info(
            "%d of %d classes have no positive in the validation part; they are left out of its averages "
            "and listed in summary.json: %s",
            len(absent),
            len(data.class_names),
            ", ".join(absent),
        )
    return train_ds, val_ds


def prepare_cache(cfg, table: Table | None = None) -> Cache | None:
    """The image cache a run of ``cfg`` reads, opened or built (``table``: the run's table, loaded when not given).

    None when the run reads no image cache: ``data.cache`` is off, or the run is cell-level (it cuts its own crop
    cache in :func:`~locbench.cells.data.prepare_cell_data`) and not a ``model.pool: cell_mask`` probe (whose
    backbone sees whole fields). A sweep calls this before its runs start so that runs sharing a cache do not all
    build it.
    """
    dcfg = cfg.data
    if not dcfg.cache or (cfg.train.level != "image" and cfg.model.pool != CELL_MASK):
        return None
    return cache_from_config(table if table is not None else table_from_config(dcfg), dcfg)


class EpochSampler(Sampler[int]):
    """A permutation of the training part drawn from (seed, epoch), this rank's share of it under DDP.

    Drawing the order from the epoch number means a resumed run sees the same order as an uninterrupted one.
    A last batch of one image is dropped (BatchNorm cannot train on it).
    """

    def __init__(self, n: int, *, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.batch_size, self.rank, self.world = n, seed, batch_size, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = len(perm) // self.world
        mine = perm[self.rank * per_rank : (self.rank + 1) * per_rank]
        if len(mine) % self.batch_size == 1 and len(mine) > 1:
            mine = mine[:-1]
        return mine

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def make_loader(
    dataset, *, batch_size: int, workers: int, sampler=None, pin: bool = False, collate_fn=None
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        collate_fn=collate_fn,
    )


def loader_workers(cfg, device: torch.device, data: PreparedData) -> int:
    """Loader processes: none when a CPU device trains from the cache.

    A cached batch is a memory-map row copy (about 0.3 ms for 32 images in this process); shipped from worker
    processes it costs 4-8x that in CPU time, taken from the cores the model trains on (benchmarks/
    bench_pipeline.py, docs/PERFORMANCE.md). Decoding files (no cache), feeding an accelerator or
    ``train.gpu_paths_on_cpu`` (a testing aid: the loader a GPU run uses) keeps workers.
    """
    cached = getattr(data, "cache", None) is not None
    if device.type == "cpu" and cached and cfg.data.workers > 0 and not cfg.train.gpu_paths_on_cpu:
        log.info("reading the cache in the training process (data.workers=%d unused on a CPU device)", cfg.data.workers)
        return 0
    return cfg.data.workers


def channel_stats(dataset, *, max_images: int = 256, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) over up to ``max_images`` training images.

    Fluorescence images are mostly dark background; normalising by the data's own statistics (rather than
    ImageNet's) puts every stain on the same footing, and the values are stored with the run for predict.
    """
    n = len(dataset)
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=min(n, max_images), replace=False)
    s = s2 = None
    count = 0
    for i in idx:
        x = to_unit(dataset[int(i)][0]).double()
        flat = x.reshape(x.shape[0], -1)
        s = flat.sum(1) if s is None else s + flat.sum(1)
        s2 = (flat**2).sum(1) if s2 is None else s2 + (flat**2).sum(1)
        count += flat.shape[1]
    mean = s / count
    std = (s2 / count - mean**2).clamp(min=1e-12).sqrt().clamp(min=1e-3)
    return mean.tolist(), std.tolist()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [0, 1]; float input (16-bit data) is already in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()
