"""Segmentation backends on drawn fields, the cached dataset pass, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from locbench.cells.metric import compare_masks
from locbench.cells.segment import (
    SEGMENTERS,
    Segmenter,
    WatershedSegmenter,
    make_segmenter,
    read_mask,
    segment_dataset,
)
from locbench.cli import main
from locbench.errors import LocbenchError

#: Nucleus centres (row, col) of a 512 px field; the first two cells touch, as do their nuclei.
CENTRES = [(200, 170), (200, 238), (380, 380)]


def draw_field(size: int = 512) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stains of three round cells and the true instance mask (each cell pixel goes to its nearest nucleus)."""
    s = 512 / size
    yy, xx = np.mgrid[0:size, 0:size] * s
    dist = np.stack([np.hypot(yy - r, xx - c) for r, c in CENTRES])
    nearest = dist.argmin(axis=0)
    d = dist.min(axis=0)
    truth = np.where(d < 62, nearest + 1, 0).astype(np.int32)
    cyto = np.where(d < 62, 160 - d, 0)
    blue = np.where(d < 24, 200, 0)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 4, (3, size, size))
    stains = {
        name: np.clip(img + n + 5, 0, 255).astype(np.uint8)
        for name, img, n in zip(("red", "yellow", "blue"), (cyto, cyto * 0.8, blue), noise, strict=True)
    }
    stains["green"] = stains["red"] // 2
    return stains, truth


def test_watershed_finds_touching_cells():
    stains, truth = draw_field()
    mask = WatershedSegmenter().segment(stains)
    assert mask.dtype == np.int32 and mask.shape == truth.shape
    r = compare_masks(mask, truth)
    assert (r["found"], r["missed"], r["extra"]) == (3, 0, 0)
    assert r["matched_iou_mean"] > 0.9


def test_watershed_works_at_reduced_resolution_and_returns_full_size():
    stains, truth = draw_field(1024)  # worked on at 512 px, scaled back up
    mask = make_segmenter("watershed").segment(stains)
    assert mask.shape == (1024, 1024)
    r = compare_masks(mask, truth)
    assert r["found"] == 3 and r["matched_iou_mean"] > 0.9


def test_empty_field_gives_empty_mask():
    blank = {c: np.zeros((300, 200), np.uint8) for c in ("red", "yellow", "blue")}
    mask = WatershedSegmenter().segment(blank)
    assert mask.shape == (300, 200) and not mask.any()


def test_missing_stain_is_named():
    stains, _ = draw_field(128)
    del stains["yellow"]
    with pytest.raises(LocbenchError, match="'yellow'"):
        WatershedSegmenter().segment(stains)


def test_registry_lists_the_backends_and_they_follow_the_protocol():
    assert {"watershed", "hpacellseg", "cellpose"} <= set(SEGMENTERS.names())
    assert isinstance(make_segmenter("watershed"), Segmenter)
    with pytest.raises(LocbenchError, match="valid names"):
        make_segmenter("nope")


@pytest.mark.parametrize(("backend", "hint"), [("hpacellseg", "pip install"), ("cellpose", "pip install cellpose")])
def test_model_backends_explain_what_to_install(backend, hint, monkeypatch):
    import sys

    # Hide the package even where it happens to be installed: the message must say how to get it.
    monkeypatch.setitem(sys.modules, backend, None)
    with pytest.raises(LocbenchError, match=hint):
        make_segmenter(backend, weights="nowhere")


def write_dataset(root: Path, n: int = 2) -> list[str]:
    stains, _ = draw_field(256)
    ids = [f"img{i}" for i in range(n)]
    (root / "train").mkdir(parents=True)
    (root / "train.csv").write_text("ID,Label\n" + "".join(f"{i},0|3\n" for i in ids))
    for k, i in enumerate(ids):
        for c, img in stains.items():
            cv2.imwrite(str(root / "train" / f"{i}_{c}.png"), np.roll(img, 10 * k, axis=1))
    return ids


def test_segment_dataset_writes_16bit_masks_and_reuses_them(tmp_path):
    ids = write_dataset(tmp_path / "data")
    out = tmp_path / "masks"
    first = segment_dataset(tmp_path / "data", out_dir=out)
    assert (first.computed, first.reused) == (2, 0)
    for i in ids:
        raw = cv2.imread(str(out / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.max() == 3
    stamp = (out / "img0.png").stat().st_mtime_ns
    second = segment_dataset(tmp_path / "data", out_dir=out)
    assert (second.computed, second.reused) == (0, 2)
    assert (out / "img0.png").stat().st_mtime_ns == stamp
    # A deleted mask, or a changed image, is recomputed; the rest is kept.
    (out / "img1.png").unlink()
    assert segment_dataset(tmp_path / "data", out_dir=out).computed == 1
    blue = tmp_path / "data" / "train" / "img0_blue.png"
    cv2.imwrite(str(blue), np.zeros((256, 256), np.uint8))
    again = segment_dataset(tmp_path / "data", out_dir=out)
    assert (again.computed, again.reused) == (1, 1)
    assert read_mask(out / "img0.png").max() == 0  # no nuclei left in that field
    manifest = json.loads((out / "segment.json").read_text())
    assert manifest["backend"] == "watershed" and set(manifest["fields"]) == set(ids)


def test_segment_dataset_refuses_a_folder_of_another_backend(tmp_path):
    write_dataset(tmp_path / "data", n=1)
    segment_dataset(tmp_path / "data", out_dir=tmp_path / "m")
    with pytest.raises(LocbenchError, match="holds masks from backend 'watershed'"):
        segment_dataset(tmp_path / "data", out_dir=tmp_path / "m", options={"min_cell_area": 10})


def test_segment_dataset_in_worker_processes_matches_serial(tmp_path):
    write_dataset(tmp_path / "data", n=2)
    segment_dataset(tmp_path / "data", out_dir=tmp_path / "serial")
    segment_dataset(tmp_path / "data", out_dir=tmp_path / "pool", workers=2)
    for i in ("img0", "img1"):
        np.testing.assert_array_equal(
            read_mask(tmp_path / "serial" / f"{i}.png"), read_mask(tmp_path / "pool" / f"{i}.png")
        )


def test_cli_segments_and_compares(tmp_path, capsys):
    write_dataset(tmp_path / "data", n=1)
    assert main(["segment", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m")]) == 0
    # Comparing a folder with itself: every cell found at IoU 1.
    args = [
        "segment",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "m"),
        "--compare-to",
        str(tmp_path / "m"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 fields: 0 segmented, 1 reused" in out
    assert out.splitlines()[-1].split() == ["all", "3", "3", "3", "0", "0", "1.000"]


def test_cli_reports_a_missing_backend_package_without_traceback(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cellpose", None)
    write_dataset(tmp_path / "data", n=1)
    assert (
        main(["segment", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--backend", "cellpose"]) == 2
    )
    assert "pip install cellpose" in capsys.readouterr().err
