"""FieldDataset: cached and uncached paths give the same pixels; dtypes; targets; DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from fixtures.data_factory import write_dataset
from torch.utils.data import DataLoader

from locbench.data.cache import build_cache
from locbench.data.dataset import FieldDataset
from locbench.data.formats import load_table
from locbench.data.images import read_field
from locbench.errors import LocbenchError


@pytest.fixture
def table(tmp_path):
    write_dataset(tmp_path / "d", ["1", "2 3", "0", "4", "5"], size=24)
    return load_table(tmp_path / "d")


@pytest.mark.parametrize("mode", ["green", "rgb", "rgby", "blue,green"])
def test_cached_and_uncached_items_are_identical(table, tmp_path, mode):
    cache = build_cache(table, channels="rgby", size=12, cache_dir=tmp_path / "c", workers=0)
    idx = [4, 1, 2]
    cached = FieldDataset(table, idx, channels=mode, size=12, cache=cache)
    direct = FieldDataset(table, idx, channels=mode, size=12)
    assert len(cached) == 3
    for k, i in enumerate(idx):
        (a, ta), (b, tb) = cached[k], direct[k]
        assert a.dtype == torch.uint8 and a.shape == (len(cached.channels), 12, 12)
        assert torch.equal(a, b) and torch.equal(ta, tb)
        assert ta.dtype == torch.float32 and ta.tolist() == table.targets[i].astype(float).tolist()
        # and both are read_field's [0, 1] values, back in 8 bits
        ref = np.rint(read_field(table.paths(i), cached.channels, 12) * 255).astype(np.uint8)
        assert np.array_equal(a.numpy(), ref)


def test_sixteen_bit_items_are_float_in_unit_range(tmp_path):
    write_dataset(tmp_path / "d", ["1", "2"], size=16, dtype=np.uint16, ext=".tif")
    table = load_table(tmp_path / "d")
    cache = build_cache(table, channels="rgb", size=8, cache_dir=tmp_path / "c", workers=0)
    for ds in (
        FieldDataset(table, [0, 1], channels="rgb", size=8, cache=cache),
        FieldDataset(table, [0, 1], channels="rgb", size=8),
    ):
        image, _ = ds[1]
        assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        np.testing.assert_allclose(image.numpy(), read_field(table.paths(1), ds.channels, 8), rtol=1e-6)


def test_cache_of_the_full_table_serves_a_subset_table(table, tmp_path):
    cache = build_cache(table, channels="rgb", size=8, cache_dir=tmp_path / "c", workers=0)
    sub = table.subset([3, 0])
    a, _ = FieldDataset(sub, [0], channels="rgb", size=8, cache=cache)[0]
    b, _ = FieldDataset(table, [3], channels="rgb", size=8)[0]
    assert torch.equal(a, b)


def test_mismatched_cache_is_refused(table, tmp_path):
    cache = build_cache(table, channels="green", size=8, cache_dir=tmp_path / "c", workers=0)
    with pytest.raises(LocbenchError, match="build a matching cache"):
        FieldDataset(table, [0], channels="rgb", size=8, cache=cache)
    with pytest.raises(LocbenchError, match="build a matching cache"):
        FieldDataset(table, [0], channels="green", size=16, cache=cache)


def test_works_in_dataloader_workers(table, tmp_path):
    cache = build_cache(table, channels="rgby", size=8, cache_dir=tmp_path / "c", workers=0)
    ds = FieldDataset(table, range(len(table)), channels="rgby", size=8, cache=cache)
    _ = ds[0]  # the parent has opened its memory map; the pickled copy must not carry it
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.cache._array is None
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    images = torch.cat([b[0] for b in batches])
    assert images.shape == (5, 4, 8, 8) and torch.equal(images[3], ds[3][0])
