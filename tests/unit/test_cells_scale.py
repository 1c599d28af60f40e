"""Segmentation and the cell crop cache over many fields: worker processes give the serial result byte for byte,
a kill -9 mid-way then the same command gives the uninterrupted result without redoing finished fields, and
crops cut while segmenting (one decode a field) equal crops cut from the written masks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from locbench.cells import crops as crops_mod
from locbench.cells.crops import CellCropDataset, CellIndex, cells_of_mask, index_cells
from locbench.cells.data import build_crop_cache, prepare_cell_data
from locbench.cells.segment import PROGRESS_LOG, SEGMENTERS, WatershedSegmenter, segment_dataset
from locbench.config import load_config
from locbench.data.formats import load_table
from locbench.data.pool import MIN_FIELDS_FOR_POOL
from locbench.data.synth import synthesize

REPO = Path(__file__).resolve().parents[2]
N_FIELDS = 2 * MIN_FIELDS_FOR_POOL  # enough for the worker pool to start


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("scale") / "data", images=N_FIELDS, size=128, seed=3)


def _mask_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _run_until(cmd: list[str], ready, *, timeout: float = 120.0) -> None:
    """Start ``cmd`` in its own process group and kill -9 the whole group (workers included) once ``ready()``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"finished before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("never got far enough to be killed")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def test_segment_in_workers_equals_serial(fields, tmp_path):
    serial = segment_dataset(fields, out_dir=tmp_path / "serial", workers=1)
    pooled = segment_dataset(fields, out_dir=tmp_path / "pool", workers=2)
    assert serial.computed == pooled.computed == N_FIELDS
    assert _mask_bytes(tmp_path / "serial") == _mask_bytes(tmp_path / "pool")
    assert not (tmp_path / "pool" / PROGRESS_LOG).exists()  # folded into the manifest


# A backend that is watershed slowed down, so a run can be caught half-way (the masks are watershed's).
SLOW_SEGMENT = """
import sys, time
from locbench.cells.segment import SEGMENTERS, WatershedSegmenter
class Slow(WatershedSegmenter):
    def segment(self, channels):
        time.sleep(0.1)
        return super().segment(channels)
SEGMENTERS.register("slow", doc="watershed, slowly")(lambda **o: Slow())
from locbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_segment_killed_then_rerun_equals_uninterrupted_and_keeps_finished_fields(fields, tmp_path, monkeypatch):
    segment_dataset(fields, out_dir=tmp_path / "whole", workers=1)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", SLOW_SEGMENT, "segment", "--data", str(fields), "--out", str(out)]
    log_path = out / PROGRESS_LOG

    def half_done() -> bool:
        return log_path.is_file() and log_path.read_text().count("\n") >= N_FIELDS // 3

    # in one process: worker processes would not know the test's backend
    _run_until([*cmd, "--backend", "slow", "--workers", "1"], half_done)
    finished = [line.split("\t")[0] for line in log_path.read_text().splitlines() if "\t" in line]
    assert N_FIELDS // 3 <= len(finished) < N_FIELDS
    stamps = {i: (out / f"{i}.png").stat().st_mtime_ns for i in finished}

    # the same command again (but not killed, and in this process to count what it does)
    monkeypatch.setitem(SEGMENTERS._entries, "slow", lambda **o: WatershedSegmenter())
    again = segment_dataset(fields, backend="slow", out_dir=out, workers=1)
    assert (again.computed, again.reused) == (N_FIELDS - len(set(finished)), len(set(finished)))
    assert {i: (out / f"{i}.png").stat().st_mtime_ns for i in finished} == stamps  # not redone
    assert _mask_bytes(out) == _mask_bytes(tmp_path / "whole")


def _index(fields: Path):
    table = load_table(fields)
    return table, index_cells(table, fields / "masks", cache_path=None)


CROPS = {"stains": ("red", "green", "blue", "yellow"), "size": 24, "margin": 0.1, "masked": True}


def test_cell_index_in_workers_equals_serial(fields):
    table = load_table(fields)
    one = index_cells(table, fields / "masks", cache_path=None, workers=1)
    two = index_cells(table, fields / "masks", cache_path=None, workers=2)
    assert len(set(one.image_index.tolist())) == N_FIELDS
    for name in CellIndex.__dataclass_fields__:
        a, b = getattr(one, name), getattr(two, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_cell_areas_are_pixel_counts(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 40, size=(64, 80)).astype(np.int32)  # cells interleaved: every box holds others' pixels
    mask[mask == 17] = 0  # a label that is absent
    index = cells_of_mask(mask, 3, min_area=128)
    counts = np.bincount(mask.ravel(), minlength=40)
    expected = [c for c in range(1, 40) if counts[c] >= 128]
    assert 5 < len(expected) < 35  # min_area leaves some out
    assert index.cell_id.tolist() == expected
    assert index.area.tolist() == counts[expected].tolist()
    assert set(index.image_index.tolist()) == {3}
    assert len(cells_of_mask(np.zeros((0, 0), np.int32), 0)) == len(CellIndex.concat([])) == 0


def test_crop_cache_in_workers_equals_serial_and_on_demand_crops(fields, tmp_path):
    table, cells = _index(fields)
    one = build_crop_cache(table, cells, fields / "masks", **CROPS, cache_dir=tmp_path / "c1", workers=1)
    two = build_crop_cache(table, cells, fields / "masks", **CROPS, cache_dir=tmp_path / "c2", workers=2)
    assert (one.path / "pixels.npy").read_bytes() == (two.path / "pixels.npy").read_bytes()
    live = CellCropDataset(table, fields / "masks", np.arange(len(table)), channels="rgby", crop_size=24, masked=True)
    for k in range(0, len(cells), 7):
        np.testing.assert_array_equal(two.get(k), live.crop(k))


SLOW_CROPS = """
import sys, time
import numpy as np
from pathlib import Path
from locbench.cells import crops as crops_mod
from locbench.cells import data as cellmod
from locbench.cells.crops import index_cells
from locbench.data.formats import load_table
fields, cache = Path(sys.argv[1]), Path(sys.argv[2])
cellmod.FLUSH_EVERY_S = 0  # progress saved after every task
crop_cell = crops_mod.crop_cell
def slow(*a, **k):
    time.sleep(0.02)
    return crop_cell(*a, **k)
crops_mod.crop_cell = slow
table = load_table(fields)
cells = index_cells(table, fields / "masks", cache_path=None)
cellmod.build_crop_cache(table, cells, fields / "masks", stains=("red", "green", "blue", "yellow"), size=24,
                         margin=0.1, masked=True, cache_dir=cache, workers=1)
"""


@pytest.mark.slow
def test_crop_cache_killed_then_rerun_equals_uninterrupted_and_keeps_finished_fields(fields, tmp_path, monkeypatch):
    table, cells = _index(fields)
    whole = build_crop_cache(table, cells, fields / "masks", **CROPS, cache_dir=tmp_path / "whole", workers=1)
    cache = tmp_path / "killed"

    def done_path() -> Path | None:
        found = list(cache.glob("cells-*/done.npy"))
        return found[0] if found else None

    def half_done() -> bool:
        p = done_path()
        return p is not None and int(np.load(p).sum()) >= N_FIELDS // 3

    _run_until([sys.executable, "-c", SLOW_CROPS, str(fields), str(cache)], half_done)
    done = np.load(done_path())
    assert N_FIELDS // 3 <= done.sum() < N_FIELDS and not (done_path().parent / "complete").exists()

    decoded = []
    read_stains = crops_mod.read_stains
    monkeypatch.setattr(crops_mod, "read_stains", lambda src, stains: decoded.append(src) or read_stains(src, stains))
    again = build_crop_cache(table, cells, fields / "masks", **CROPS, cache_dir=cache, workers=1)
    assert len(decoded) == int((done == 0).sum())  # finished fields are not cut again
    assert (again.path / "pixels.npy").read_bytes() == (whole.path / "pixels.npy").read_bytes()
    assert (again.path / "complete").is_file()


def test_crops_cut_while_segmenting_equal_crops_from_the_masks(fields, tmp_path, monkeypatch):
    sets = {
        "data.path": str(fields),
        "data.img_size": 24,
        "data.channels": "rgby",
        "data.cache_dir": str(tmp_path / "cache"),
        "data.val_frac": 0.5,
        "data.test_frac": 0,
        "data.workers": 1,
        "train.level": "cell",
        "cell.masks": "segment",
        "cell.masked": True,
    }
    cfg = load_config(overrides=sets)
    segmented_once = []
    read_stains = crops_mod.read_stains

    def counted(src, stains):
        segmented_once.append(src)
        return read_stains(src, stains)

    # every field is segmented here, so the crop cache must take every field's crops from its shard
    monkeypatch.setattr(crops_mod, "read_stains", counted)
    data = prepare_cell_data(cfg, tmp_path / "split.json")
    assert segmented_once == [] and len(data.cells) > 0
    assert not list((tmp_path / "cache").glob("cell-shards-*"))  # removed once the cache is complete
    monkeypatch.undo()
    ref = build_crop_cache(
        data.table, data.cells, data.masks_dir, **{**CROPS, "size": 24}, cache_dir=tmp_path / "ref", workers=1
    )
    assert (ref.path / "pixels.npy").read_bytes() == (data.cache.path / "pixels.npy").read_bytes()
