"""Pictures for people: ``segment --overlay`` (cell outlines over the composite, reference masks in a second
colour) and ``preview`` (per-stain panels, contrast stretch for 16-bit fields, the green stain alone)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from locbench.cells.overlay import MASK_COLOR, REFERENCE_COLOR, overlay_rgb
from locbench.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from unit.test_cells_segment import draw_field, write_dataset  # noqa: E402


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int32)


def test_overlay_outlines_every_cell_and_the_reference_in_its_own_colour():
    stains, truth = draw_field(256)
    shifted = np.roll(truth, 6, axis=1)  # a reference that disagrees a little
    rgb = overlay_rgb(stains, truth, shifted, size=256)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    white = (rgb == MASK_COLOR).all(axis=-1)
    cyan = (rgb == REFERENCE_COLOR).all(axis=-1)
    for label in (1, 2, 3):  # each cell's outline: its own pixels on the edge of its region
        inner = cv2.erode((truth == label).astype(np.uint8), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8))
        edge = (truth == label) & ~inner.astype(bool)  # pixels with a 4-neighbour outside the cell
        assert white[edge].mean() > 0.95
    assert cyan.sum() > 100 and not (white & cyan).any()
    # a field larger than size is drawn smaller, outlines included
    assert overlay_rgb(stains, truth, size=100).shape == (100, 100, 3)


def test_overlay_refuses_a_mask_of_another_size():
    stains, truth = draw_field(128)
    with pytest.raises(Exception, match="mask is"):
        overlay_rgb(stains, truth[:64])


def test_cli_segment_overlay_with_reference(tmp_path: Path, capsys):
    ids = write_dataset(tmp_path / "data", n=2)
    data, masks, ov = (str(tmp_path / p) for p in ("data", "m", "ov"))
    argv = ["segment", "--data", data, "--out", masks, "--compare-to", masks, "--overlay", ov]
    assert main(argv) == 0
    assert "2 overlays (cells outlined in white, reference masks in cyan)" in capsys.readouterr().out
    for i in ids:
        px = _pixels(tmp_path / "ov" / f"{i}.png")
        assert px.shape[1] >= 256  # the field at full size (and the caption band under it, widened if needed)
        assert (px[:256, :256] == MASK_COLOR).all(axis=-1).sum() > 200  # the segmentation drawn over the reference
    # an existing overlay folder is an output: replaced only with --force, and never a data folder
    assert main(argv) == 2
    assert "--overlay" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert main(["segment", "--data", data, "--out", masks, "--overlay", data]) == 2


def test_cli_segment_overlay_on_a_real_2021_field(real_data: Path, tmp_path: Path):
    src = real_data / "kaggle2021"
    data = tmp_path / "one"
    (data / "train").mkdir(parents=True)
    fid = "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0"  # the field with the fewest cells: the fastest to segment
    rows = [line for line in (src / "train.csv").read_text().splitlines() if line.startswith(("ID,", fid))]
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    for f in (src / "train").glob(f"{fid}_*"):
        shutil.copy(f, data / "train" / f.name)
    argv = ["segment", "--data", str(data), "--out", str(tmp_path / "m"), "--compare-to", str(src / "masks")]
    assert main([*argv, "--overlay", str(tmp_path / "ov"), "--overlay-size", "512"]) == 0
    px = _pixels(tmp_path / "ov" / f"{fid}.png")
    assert px.shape[1] == 512
    assert (px == MASK_COLOR).all(axis=-1).sum() > 500 and (px == REFERENCE_COLOR).all(axis=-1).sum() > 500


def _dim16(root: Path, n: int = 2) -> Path:
    """A 12-bit camera's counts in 16-bit TIFFs: a few percent of the range, black when divided by 65535."""
    (root / "train").mkdir(parents=True)
    stains, _ = draw_field(96)
    (root / "train.csv").write_text("Id,Target\n" + "".join(f"f{k},0\n" for k in range(n)))
    for k in range(n):
        for name, img in stains.items():
            tifffile.imwrite(root / "train" / f"f{k}_{name}.tif", (img.astype(np.uint16) * 6 + 300))
    return root


def _field_pixels(path: Path) -> np.ndarray:
    """The non-white pixels of a preview (the fields, not the page around them)."""
    px = _pixels(path)
    return px[(px < 245).any(axis=-1)]


def test_preview_stretches_16bit_fields_by_default(tmp_path: Path):
    data = _dim16(tmp_path / "d16")
    out = {k: tmp_path / f"{k}.png" for k in ("auto", "off", "on")}
    for k, path in out.items():
        assert main(["preview", str(data), "--n", "2", "--size", "96", "--stretch", k, "--out", str(path)]) == 0
    bright = {k: np.percentile(_field_pixels(p).max(axis=-1), 95) for k, p in out.items()}
    assert bright["off"] < 40 and bright["auto"] > 150  # without the stretch the cells are almost black
    assert bright["auto"] == pytest.approx(bright["on"], abs=1)


def test_preview_panels_and_green_only(tmp_path: Path):
    data = _dim16(tmp_path / "d16", n=2)
    assert main(["preview", str(data), "--n", "2", "--size", "96", "--panels", "--out", str(tmp_path / "p.png")]) == 0
    h, w = _pixels(tmp_path / "p.png").shape[:2]
    assert w / h > 1.8  # one row per field: the composite and four stains side by side
    assert main(["preview", str(data), "--n", "2", "--size", "96", "--green", "--out", str(tmp_path / "g.png")]) == 0
    px = _field_pixels(tmp_path / "g.png")
    dark = px[(px < 245).all(axis=-1) & (px.max(axis=-1) > 40)]  # field pixels with some signal
    assert dark[:, 1].mean() > 4 * max(dark[:, 0].mean(), dark[:, 2].mean())  # green alone


def test_preview_outlines_cells_of_a_mask_folder(tmp_path: Path, capsys):
    ids = write_dataset(tmp_path / "data", n=2)
    data, masks = str(tmp_path / "data"), str(tmp_path / "m")
    assert main(["segment", "--data", data, "--out", masks]) == 0
    base = ["preview", data, "--n", "2", "--size", "256", "--stretch", "off"]
    assert main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*base, "--masks", masks, "--out", str(tmp_path / "cells.png")]) == 0
    plain, cells = _pixels(tmp_path / "plain.png"), _pixels(tmp_path / "cells.png")
    assert plain.shape == cells.shape  # the same layout: only the outlines differ
    white = (cells == MASK_COLOR).all(axis=-1) & ~(plain == MASK_COLOR).all(axis=-1)
    assert white.sum() > 300  # three cells per field, outlined
    (tmp_path / "m" / f"{ids[1]}.png").unlink()
    assert main(["preview", data, "--n", "2", "--masks", masks, "--out", str(tmp_path / "q.png")]) == 2
    assert ids[1] in capsys.readouterr().err
