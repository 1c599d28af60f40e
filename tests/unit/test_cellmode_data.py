"""Cell-level data for the engine: field-level split, per-cell targets from cells.csv, the crop cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from locbench.cells import crops as crops_mod
from locbench.cells import data as cellmod
from locbench.cells.crops import CellCropDataset
from locbench.cells.data import prepare_cell_data, split_cell_id
from locbench.cells.labels import load_cell_labels
from locbench.config import load_config
from locbench.data.synth import synthesize
from locbench.engine.data import prepare_data
from locbench.errors import LocbenchError


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("cm") / "data", images=10, size=64, cells_per_field=(2, 3), seed=5)


def _cfg(data: Path, cache: Path, **extra):
    sets = {
        "data.path": str(data),
        "data.img_size": 32,
        "data.channels": "rgby",
        "data.cache_dir": str(cache),
        "data.val_frac": 0.3,
        "data.test_frac": 0,  # 10 fields: too few for a test part (and these tests are about train/val)
        "train.level": "cell",
        **extra,
    }
    return load_config(overrides=sets)


def test_field_split_and_cell_targets(synth, tmp_path):
    cfg = _cfg(synth, tmp_path / "cache")
    data = prepare_data(cfg, tmp_path / "split.json")  # the engine's hook dispatches on train.level
    assert isinstance(data, cellmod.CellData) and (tmp_path / "split.json").is_file()
    assert data.target_source == "cells.csv"
    train_fields = {split_cell_id(i)[0] for i in data.ids("train")}
    val_fields = {split_cell_id(i)[0] for i in data.ids("val")}
    assert train_fields and val_fields and not train_fields & val_fields  # no field straddles the split
    assert val_fields == {data.table.ids[i] for i in data.parts["val"]}
    labels = load_cell_labels(synth / "cells.csv", num_classes=19)
    assert len(data.ids("train")) + len(data.ids("val")) == len(labels)
    for part in ("train", "val"):
        expected = np.stack([labels[split_cell_id(i)] for i in data.ids(part)])
        np.testing.assert_array_equal(data.targets(part), expected)
        ds = data.dataset(part)
        assert len(ds) == len(data.ids(part))
        x, y = ds[0]
        assert x.dtype == torch.uint8 and tuple(x.shape) == (4, 32, 32)
        np.testing.assert_array_equal(y.numpy(), expected[0])
    # Cell targets differ from image labels somewhere (synth spreads an image's labels over its cells).
    weak = data.table.targets[data.cells.image_index]
    assert (data.cell_targets != weak).any()


def test_cached_crops_equal_crops_cut_on_demand(synth, tmp_path):
    cfg = _cfg(synth, tmp_path / "cache", **{"data.channels": "green"})
    cached = prepare_cell_data(cfg, tmp_path / "s.json")
    live = prepare_cell_data(cfg, tmp_path / "s.json", build_cache=False)
    assert cached.cache is not None and live.cache is None
    ref = CellCropDataset(cached.table, synth / "masks", np.arange(len(cached.table)), channels="green", crop_size=32)
    for part in ("train", "val"):
        a, b = cached.dataset(part), live.dataset(part)
        for k in range(len(a)):
            xa, xb = a[k][0].numpy(), b[k][0].numpy()
            assert xa.shape == (3, 32, 32)  # green repeated three times
            np.testing.assert_array_equal(xa, xb)
        row = int(cached.cell_parts[part][0])
        np.testing.assert_array_equal(a[0][0].numpy(), ref.crop(row))
    assert cached.ids("val") == live.ids("val")


def test_crop_cache_is_reused(synth, tmp_path, monkeypatch):
    cfg = _cfg(synth, tmp_path / "cache")
    first = prepare_cell_data(cfg, tmp_path / "s.json")

    def fail(*a, **k):
        raise AssertionError("the crop cache was rebuilt")

    monkeypatch.setattr(crops_mod, "crop_cell", fail)  # 10 fields: cut in this process
    again = prepare_cell_data(cfg, tmp_path / "s.json")
    assert again.cache.path == first.cache.path
    other = _cfg(synth, tmp_path / "cache", **{"cell.margin": 0.3})
    with pytest.raises(AssertionError, match="rebuilt"):  # another margin is another cache
        prepare_cell_data(other, tmp_path / "s.json")


def test_other_masks_take_image_labels(synth, tmp_path):
    masks = tmp_path / "mymasks"
    shutil.copytree(synth / "masks", masks)
    data = prepare_cell_data(_cfg(synth, tmp_path / "cache", **{"cell.masks": str(masks)}), tmp_path / "s.json")
    assert data.target_source == "image labels" and data.masks_dir == masks
    np.testing.assert_array_equal(data.cell_targets, data.table.targets[data.cells.image_index])
    with pytest.raises(LocbenchError, match="not a folder"):
        prepare_cell_data(
            _cfg(synth, tmp_path / "cache", **{"cell.masks": str(tmp_path / "nope")}), tmp_path / "s.json"
        )


def test_config_checks():
    with pytest.raises(LocbenchError, match="cell.blend"):
        load_config(overrides={"cell.blend": 2.0})
    with pytest.raises(LocbenchError, match="cell.negative"):
        load_config(overrides={"cell.negative": "min"})
    with pytest.raises(LocbenchError, match="segmenters"):
        load_config(overrides={"train.level": "cell", "cell.backend": "nope"})
    with pytest.raises(LocbenchError, match="FIELD/CELL"):
        split_cell_id("abc")
