"""CAM mass inside the cells that carry a class, checked by hand, and the per-class report against chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from locbench.errors import BadInputError, LocbenchError
from locbench.explain import (
    area_share,
    cam_mass_inside,
    localization_report,
    read_cells_csv,
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
    # Image "a": class 0 in cell 1, class 1 in cells 2 and 3, class 2 in no cell. Masks at 4x the CAM size.
    masks = {"a": np.kron(MASK, np.ones((4, 4), dtype=MASK.dtype))}
    cells = {"a": {1: {0}, 2: {1}, 3: {1}}}
    cams = np.zeros((1, 3, 4, 4))
    cams[0, 0] = MASK == 1  # all mass in cell 1: share 1, chance 4/16
    cams[0, 1] = 1.0  # uniform: share = chance = 8/16
    cams[0, 2] = 1.0  # class 2 carried by no cell: skipped
    report = localization_report(["a"], cams, [[0, 1, 2]], masks, cells, ["c0", "c1", "c2"])

    assert report["skipped"] == 1
    assert set(report["per_class"]) == {"c0", "c1"}
    c0, c1 = report["per_class"]["c0"], report["per_class"]["c1"]
    assert (c0["n"], c0["mean_share"], c0["mean_chance"]) == (1, pytest.approx(1.0), pytest.approx(0.25))
    assert c0["lift"] == pytest.approx(0.75)
    assert c1["mean_share"] == pytest.approx(0.5) and c1["lift"] == pytest.approx(0.0)
    overall = report["overall"]
    assert overall["n"] == 2
    assert overall["mean_share"] == pytest.approx(0.75) and overall["mean_chance"] == pytest.approx(0.375)
    md = localization_markdown(report)
    assert "| c0 | 1 | 1.000 | 0.250 | +0.750 |" in md and "| overall | 2 |" in md

    with pytest.raises(LocbenchError, match="no cell mask"):
        localization_report(["zz"], cams, [[0, 1, 2]], masks, cells, ["c0", "c1", "c2"])


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
