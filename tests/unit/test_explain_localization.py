"""CAM mass inside the cells that carry a class, checked by hand, and the per-class report against chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from locbench.cells.labels import read_cells_csv
from locbench.errors import BadInputError, LocbenchError
from locbench.explain import (
    area_share,
    cam_mass_inside,
    localization_report,
    read_mask,
    resize_mask,
)
from locbench.explain.localization import localization_markdown

# 4x4 field: cell 1 top-left 2x2, cell 2 top-right 2x2, cell 3 bottom row; the rest background.
MASK = np.array(
    [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [0, 0, 0, 0],
        [3, 3, 3, 3],
    ]
)


def test_cam_mass_inside_by_hand() -> None:
    cam = np.array(
        [
            [1.0, 1.0, 0.5, 0.5],
            [1.0, 1.0, 0.5, 0.5],
            [0.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )  # total 7: cell 1 holds 4, cell 2 holds 2, cell 3 holds 1
    assert cam_mass_inside(cam, MASK, [1]) == pytest.approx(4 / 7)
    assert cam_mass_inside(cam, MASK, [2, 3]) == pytest.approx(3 / 7)
    assert cam_mass_inside(cam, MASK, []) == 0.0
    assert math.isnan(cam_mass_inside(np.zeros((4, 4)), MASK, [1]))
    assert area_share(MASK, [1]) == pytest.approx(4 / 16)
    assert area_share(MASK, [1, 3]) == pytest.approx(8 / 16)
    with pytest.raises(LocbenchError, match="resize"):
        cam_mass_inside(np.ones((2, 2)), MASK, [1])
    with pytest.raises(LocbenchError, match="negative"):
        cam_mass_inside(-np.ones((4, 4)), MASK, [1])


def test_resize_mask_keeps_cell_ids() -> None:
    big = np.kron(MASK, np.ones((4, 4), dtype=MASK.dtype))  # 16x16, each pixel a 4x4 block
    np.testing.assert_array_equal(resize_mask(big, (4, 4)), MASK)
    assert set(np.unique(resize_mask(big, (6, 6)))) <= {0, 1, 2, 3}


def test_localization_report_against_chance() -> None:
    # Image "a": class 0 in cell 1, class 1 in cells 2 and 3, class 2 in no cell. Image "b": class 0 in every
    # cell. Masks at 4x the CAM size (resized to the map).
    big = np.kron(MASK, np.ones((4, 4), dtype=MASK.dtype))
    masks = {"a": big, "b": big}
    cells = {"a": {1: {0}, 2: {1}, 3: {1}}, "b": {1: {0}, 2: {0}, 3: {0}}}
    cams = np.zeros((2, 3, 4, 4))
    cams[0, 0] = MASK == 1  # a/c0: all mass in cell 1; field share 1, chance 4/16; cells: 1 vs 4/12
    cams[0, 1] = 1.0  # a/c1 uniform: field 8/16 vs 8/16; cells: (8/16)/(12/16) = 2/3 vs 8/12
    cams[0, 2] = 1.0  # a/c2: carried by no cell, skipped
    cams[1, 0] = 1.0  # b/c0 uniform: field 12/16 vs 12/16; all cells carry it, so no cell-level figure
    report = localization_report(["a", "b"], cams, [[0, 1, 2]] * 2, masks, cells, ["c0", "c1", "c2"])

    assert report["skipped"] == 3  # a/c2, b/c1, b/c2
    assert set(report["per_class"]) == {"c0", "c1"}
    c0, c1 = report["per_class"]["c0"], report["per_class"]["c1"]
    assert (c0["n"], c0["n_mixed"]) == (2, 1)
    assert c0["mean_share"] == pytest.approx((1 + 0.75) / 2) and c0["mean_chance"] == pytest.approx((0.25 + 0.75) / 2)
    assert c0["mean_cell_share"] == pytest.approx(1.0) and c0["mean_cell_chance"] == pytest.approx(1 / 3)
    assert c1["lift"] == pytest.approx(0.0) and c1["cell_lift"] == pytest.approx(0.0)
    assert c1["mean_cell_share"] == pytest.approx(2 / 3)
    overall = report["overall"]
    assert (overall["n"], overall["n_mixed"]) == (3, 2)
    assert overall["mean_share"] == pytest.approx(0.75) and overall["mean_chance"] == pytest.approx(0.5)
    assert overall["mean_cell_share"] == pytest.approx(5 / 6) and overall["cell_lift"] == pytest.approx(1 / 3)
    b_item = next(x for x in report["items"] if x["id"] == "b")
    assert b_item["cell_share"] is None and b_item["cell_chance"] is None
    md = localization_markdown(report)
    assert "| c0 | 2 | 0.875 | 0.500 | +0.375 | 1 | 1.000 | 0.333 | +0.667 |" in md
    assert "| overall | 3 |" in md

    with pytest.raises(LocbenchError, match="no cell mask"):
        localization_report(["zz"], cams[:1], [[0, 1, 2]], masks, cells, ["c0", "c1", "c2"])


def test_read_cells_csv_and_mask(tmp_path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text("ID,cell,Label\na,1,0|2\na,2,\nb,1,1\n")
    assert read_cells_csv(path, num_classes=3) == {"a": {1: {0, 2}, 2: set()}, "b": {1: {1}}}
    path.write_text("ID,cell,Label\na,1,0|7\na,x,1\na,2,1\n")
    with pytest.raises(BadInputError) as err:
        read_cells_csv(path, num_classes=3)
    assert err.value.items == ["row 2: cell='1' Label='0|7'", "row 3: cell='x' Label='1'"]
    with pytest.raises(LocbenchError, match="missing column"):
        (tmp_path / "bad.csv").write_text("ID,Label\na,1\n")
        read_cells_csv(tmp_path / "bad.csv", num_classes=3)

    mask = np.zeros((8, 8), dtype=np.uint16)
    mask[:4, :4] = 300  # more than 255 cells need a 16-bit PNG
    Image.fromarray(mask).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask.astype(np.int32))
    with pytest.raises(LocbenchError, match="not found"):
        read_mask(tmp_path / "missing.png")
