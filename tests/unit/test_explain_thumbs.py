"""Thumbnails made once and reused while their fields are unchanged; the cell browser's outline colours."""

from __future__ import annotations

import os

import numpy as np
from fixtures.data_factory import write_dataset

from locbench.cells.overlay import draw_outlines
from locbench.data.formats import load_table
from locbench.explain.cell_thumbs import NO_CALL, NOT_PREDICTED, called_class, class_colors
from locbench.explain.thumbs import write_thumbnails


def test_thumbnails_are_reused_until_their_field_or_size_changes(tmp_path):
    ids = write_dataset(tmp_path / "d", ["0", "1 2", "3"], size=32)
    table = load_table(tmp_path / "d")
    out = tmp_path / "thumbs"
    first = write_thumbnails(table, ids, out, size=24)
    stamp = {f.name: f.stat().st_mtime_ns for f in out.glob("*.jpg")}
    assert len(stamp) == 6 and first == write_thumbnails(table, ids, out, size=24)
    assert {f.name: f.stat().st_mtime_ns for f in out.glob("*.jpg")} == stamp  # nothing written again
    # a stain file rewritten: that field's pair is made again, the others are kept
    src = tmp_path / "d" / "train" / f"{ids[1]}_green.png"
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    write_thumbnails(table, ids, out, size=24)
    changed = {f.name for f in out.glob("*.jpg") if f.stat().st_mtime_ns != stamp[f.name]}
    assert changed == set(first[ids[1]].values())
    # another size: every thumbnail again
    write_thumbnails(table, ids, out, size=16)
    assert all(f.stat().st_mtime_ns != stamp[f.name] for f in out.glob("*.jpg"))


def test_cell_outline_colours():
    colors = class_colors(28)
    assert len(set(colors)) == 28 and NO_CALL not in colors and NOT_PREDICTED not in colors
    thr = np.array([0.5, 0.3, 2.0])
    assert called_class(np.array([0.6, 0.9, 0.99]), thr) == 1  # the most probable called class; never class 2
    assert called_class(np.array([0.1, 0.2, np.nan]), thr) == -1
    labels = np.zeros((10, 10), np.int32)
    labels[1:8, 1:8], labels[8:10, 8:10] = 1, 2
    lut = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    rgb = draw_outlines(np.zeros((10, 10, 3), np.uint8), labels, lut, width=2)
    assert (rgb[1, 4] == [255, 0, 0]).all() and (rgb[2, 4] == [255, 0, 0]).all()  # two rings thick, inside the cell
    assert (rgb[4, 4] == 0).all() and (rgb[8, 8] == [0, 0, 255]).all() and (rgb[0, 9] == 0).all()
