"""Cell crops: the cached cell index, crop geometry, masking, channel order and per-cell targets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from locbench.cells import crops as crops_mod
from locbench.cells.crops import CellCropDataset, index_cells
from locbench.cells.labels import load_cell_labels
from locbench.data.formats import load_table
from locbench.errors import BadInputError, LocbenchError

STAIN_VALUES = {"red": 10, "green": 20, "blue": 30, "yellow": 40}


def make_data(root: Path, *, dtype=np.uint8) -> Path:
    """Two 64 x 64 fields of constant stains; image a: cells 1 (rows 10:20, cols 10:30) and 2 (corner); b: one."""
    (root / "train").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "train.csv").write_text("ID,Label\na,0|2\nb,5\n")
    scale = 257 if dtype == np.uint16 else 1
    for image_id in ("a", "b"):
        for c, v in STAIN_VALUES.items():
            cv2.imwrite(str(root / "train" / f"{image_id}_{c}.png"), np.full((64, 64), v * scale, dtype))
    a = np.zeros((64, 64), np.uint16)
    a[10:20, 10:30] = 1
    a[54:64, 0:6] = 2
    b = np.zeros((64, 64), np.uint16)
    b[30:40, 30:40] = 7
    cv2.imwrite(str(root / "masks" / "a.png"), a)
    cv2.imwrite(str(root / "masks" / "b_predictedmask.png"), b)  # the HPA release's naming is found too
    (root / "cells.csv").write_text("ID,cell,Label\na,1,0\na,2,2|3\nb,7,5\n")
    return root


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path / "d")


def test_index_lists_every_cell_with_its_box_and_is_cached(data, monkeypatch):
    table = load_table(data)
    index = index_cells(table, data / "masks")
    assert index.image_index.tolist() == [0, 0, 1]
    assert index.cell_id.tolist() == [1, 2, 7]
    assert index.bbox.tolist() == [[10, 10, 20, 30], [54, 0, 64, 6], [30, 30, 40, 40]]
    assert index.area.tolist() == [200, 60, 100]
    assert (data / "masks" / "cells_index.npz").is_file()

    def no_reads(path):
        raise AssertionError(f"cached index should not read {path}")

    monkeypatch.setattr(crops_mod, "read_mask", no_reads)
    again = index_cells(table, data / "masks")
    np.testing.assert_array_equal(again.bbox, index.bbox)
    monkeypatch.undo()
    # A changed mask invalidates the cache.
    cv2.imwrite(str(data / "masks" / "a.png"), np.zeros((64, 64), np.uint16))
    assert index_cells(table, data / "masks").cell_id.tolist() == [7]


def test_index_names_images_without_masks(data):
    (data / "masks" / "b_predictedmask.png").unlink()
    with pytest.raises(BadInputError, match="no cell mask") as e:
        index_cells(load_table(data), data / "masks")
    assert e.value.items == ["b"]


def test_items_are_uint8_crops_with_the_image_labels(data):
    table = load_table(data)
    ds = CellCropDataset(table, data / "masks", [1, 0], channels="rgby", crop_size=32)
    assert len(ds) == 3
    assert [ds.meta(k) for k in range(3)] == [("b", 7), ("a", 1), ("a", 2)]  # in the order of the indices
    image, target = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (4, 32, 32)
    assert target.dtype == torch.float32 and target.shape == (19,)
    assert torch.nonzero(target).flatten().tolist() == [0, 2]  # image a's labels: weak labels
    # Channel order follows the mode: red, green, blue, yellow.
    assert image.float().mean(dim=(1, 2)).tolist() == [10.0, 20.0, 30.0, 40.0]
    np.testing.assert_array_equal(ds.targets()[0], table.targets[1])


def test_crop_is_square_around_the_box_and_masking_zeroes_the_rest(data):
    table = load_table(data)
    # Cell 1 is 10 x 20: a 20 px square window (rows 5:25, cols 10:30), kept at 20 px (no resize).
    ds = CellCropDataset(table, data / "masks", [0], channels=("green",), crop_size=20, margin=0.0, masked=True)
    crop = ds.crop(0)[0]
    assert crop.shape == (20, 20)
    assert (crop[5:15] == 20).all()
    assert (crop[:5] == 0).all() and (crop[15:] == 0).all()
    plain = CellCropDataset(table, data / "masks", [0], channels=("green",), crop_size=20, margin=0.0)
    assert (plain.crop(0) == 20).all()


def test_crop_leaving_the_image_is_zero_padded(data):
    # Cell 2 (10 x 6 at the bottom-left corner) with 50% margin: a 20 px window, half outside the image.
    ds = CellCropDataset(load_table(data), data / "masks", [0], channels=("red",), crop_size=20, margin=0.5)
    crop = ds.crop(1)[0]
    assert crop[:15, 7:].min() == 10  # inside the image
    assert (crop[15:] == 0).all() and (crop[:, :7] == 0).all()  # below and left of it


def test_cell_labels_replace_the_image_labels(data):
    labels = load_cell_labels(data / "cells.csv", num_classes=19)
    assert labels[("a", 2)].nonzero()[0].tolist() == [2, 3]
    ds = CellCropDataset(load_table(data), data / "masks", [0, 1], cell_labels=labels)
    assert [t.nonzero()[0].tolist() for t in ds.targets()] == [[0], [2, 3], [5]]
    assert ds[1][1].nonzero().flatten().tolist() == [2, 3]
    del labels[("b", 7)]
    with pytest.raises(BadInputError, match="no row in the cell labels") as e:
        CellCropDataset(load_table(data), data / "masks", [0, 1], cell_labels=labels)
    assert e.value.items == ["b cell 7"]


def test_sixteen_bit_fields_become_uint8(tmp_path):
    root = make_data(tmp_path / "d16", dtype=np.uint16)
    image, _ = CellCropDataset(load_table(root), root / "masks", [0], channels="rgb", crop_size=8)[0]
    assert image.dtype == torch.uint8
    assert image.float().mean(dim=(1, 2)).tolist() == [10.0, 20.0, 30.0]


def test_fields_are_read_once_for_consecutive_cells(data, monkeypatch):
    ds = CellCropDataset(load_table(data), data / "masks", [0, 1], channels=("red",), field_cache=1)
    calls = []
    real = crops_mod.read_stains
    monkeypatch.setattr(crops_mod, "read_stains", lambda *a: calls.append(a) or real(*a))
    for k in range(len(ds)):
        ds[k]
    assert len(calls) == 2  # image a (two cells), then image b


def test_cell_rows_group_back_into_images_for_the_metric_and_the_submission(data, tmp_path):
    from locbench.cells.metric import cell_map
    from locbench.cells.submission import parse_prediction_string, rows_from_instances

    labels = load_cell_labels(data / "cells.csv", num_classes=19)
    ds = CellCropDataset(load_table(data), data / "masks", [0, 1], cell_labels=labels)
    truth = ds.instances(ds.targets())
    assert sorted(truth) == ["a", "b"]
    assert truth["a"].cell_ids.tolist() == [1, 2] and truth["a"].mask.shape == (64, 64)
    probs = np.where(ds.targets() > 0, 0.8, np.nan)
    assert cell_map(ds.instances(probs), truth, num_classes=19)["map"] == 1.0
    probs[1, 3] = np.nan  # cell a/2 loses class 3, its only cell of that class
    r = cell_map(ds.instances(probs), truth, num_classes=19)
    assert r["per_class"]["3"]["ap"] == 0.0 and r["per_class"]["2"]["ap"] == 1.0
    rows = rows_from_instances(ds.instances(probs))
    assert [(lab, conf) for lab, conf, _ in parse_prediction_string(rows[0])] == [(0, 0.8), (2, 0.8)]
    with pytest.raises(LocbenchError, match="one row per cell"):
        ds.instances(probs[:2])
