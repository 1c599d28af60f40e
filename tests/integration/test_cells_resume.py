"""`cells predict` and `cells evaluate` of a cell-level run, killed mid-way: the same command run again cuts only
the crops not yet scored and writes exactly the output of an uninterrupted run (as image-level `predict` does,
tests/integration/test_predict_stream.py)."""

from __future__ import annotations

import signal
import subprocess

import numpy as np
import pytest
from fixtures.benchmarks import load_benchmark

from locbench.cells import crops as crops_mod
from locbench.cli import main
from locbench.config import load_config
from locbench.data.synth import synthesize
from locbench.engine.fit import train
from locbench.store.partial import HEADER_BYTES, RowLog, partial_path

#: the run's training batch is 4, so inference batches are 8 cells
BATCH = 8
CLASSES = 19


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory):
    """A cell-level run (one epoch of test_resnet at 32 px), its data (10 fields of 4-5 cells) and an image-level
    run on the same data (to blend in)."""
    root = tmp_path_factory.mktemp("cells-resume")
    data = synthesize(root / "data", images=10, size=64, cells_per_field=(4, 5), seed=11)
    sets = {
        "data.path": str(data),
        "data.cache_dir": str(root / "cache"),
        "data.img_size": 32,
        "data.workers": 0,
        "data.val_frac": 0.3,
        "data.test_frac": 0,
        "model.backbone": "test_resnet",
        "train.epochs": 1,
        "train.batch_size": BATCH // 2,
        "train.device": "cpu",
        "log.progress": "lines",
    }
    cell = train(load_config(overrides={**sets, "train.level": "cell"}), root / "run")
    image = train(load_config(overrides=sets), root / "image")
    return cell, data, image


@pytest.fixture
def crops_cut(monkeypatch):
    """Counts the crops cut in this process."""
    calls = {"n": 0}
    original = crops_mod.crop_cell

    def counting(*args, **kw):
        calls["n"] += 1
        return original(*args, **kw)

    monkeypatch.setattr(crops_mod, "crop_cell", counting)
    return calls


def _killed_at_batch(args: list[str], batch: int) -> None:
    """``locbench ARGS`` in a subprocess, SIGKILLed just before the model's ``batch``-th forward pass."""
    fi = load_benchmark("fault_injection", as_name="fault_injection")
    cmd = fi.child_command(args, die_in=f"locbench.infer.stream:forward_probs@{batch}")
    res = subprocess.run(cmd, env=fi.child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]


@pytest.mark.slow  # a locbench subprocess, killed
def test_cells_predict_killed_mid_way_continues_to_the_same_bytes(cell_run, tmp_path, crops_cut, caplog):
    run, data, _ = cell_run
    args = ["cells", "predict", str(run), "--data", str(data), "--device", "cpu", "--workers", "0", "--out"]
    reference = tmp_path / "reference.csv"
    assert main([*args, str(reference)]) == 0
    n_cells = crops_cut["n"]
    assert n_cells > 3 * BATCH  # the kill below falls in the middle
    out = tmp_path / "out.csv"
    _killed_at_batch([*args, str(out)], 3)
    partial = partial_path(out)
    assert not out.exists()
    assert partial.stat().st_size == HEADER_BYTES + 2 * BATCH * CLASSES * 4  # two whole batches kept
    with partial.open("ab") as f:
        f.write(b"\x01" * 30)  # a torn row: cut off when the file is opened again
    crops_cut["n"] = 0
    with caplog.at_level("INFO", logger="locbench"):
        assert main([*args, str(out)]) == 0
    assert crops_cut["n"] == n_cells - 2 * BATCH  # crops already scored are not cut again
    assert f"{2 * BATCH} of {n_cells} cells already done" in caplog.text
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists()


@pytest.mark.slow  # a locbench subprocess, killed
def test_cells_evaluate_killed_mid_way_continues_to_the_same_result(cell_run, tmp_path, crops_cut):
    run, data, _ = cell_run
    args = ["cells", "evaluate", str(run), "--split", "all", "--device", "cpu", "--workers", "0", "--out"]
    reference = tmp_path / "reference.json"
    assert main([*args, str(reference)]) == 0
    n_cells = crops_cut["n"]
    out = tmp_path / "e.json"
    _killed_at_batch([*args, str(out)], 2)
    assert partial_path(out).stat().st_size == HEADER_BYTES + BATCH * CLASSES * 4
    crops_cut["n"] = 0
    assert main([*args, str(out)]) == 0
    assert crops_cut["n"] == n_cells - BATCH
    assert out.read_bytes() == reference.read_bytes() and not partial_path(out).exists()
    with np.load(out.with_suffix(".npz")) as a, np.load(reference.with_suffix(".npz")) as b:
        assert a.files == b.files == ["ids", "probs"]
        assert np.array_equal(a["ids"], b["ids"]) and np.array_equal(a["probs"], b["probs"], equal_nan=True)


@pytest.mark.slow  # a locbench subprocess, killed
def test_a_finished_cell_pass_is_kept_while_the_image_run_is_blended_in(cell_run, tmp_path, crops_cut):
    run, data, image = cell_run
    args = ["cells", "predict", str(run), "--data", str(data), "--device", "cpu", "--workers", "0"]
    args += ["--image-run", str(image), "--blend", "0.5", "--out"]
    reference = tmp_path / "reference.csv"
    assert main([*args, str(reference)]) == 0
    n_cells = crops_cut["n"]
    batches = -(-n_cells // BATCH)
    out = tmp_path / "out.csv"
    _killed_at_batch([*args, str(out)], batches + 1)  # all cell batches done, then the image run's first one
    assert partial_path(out).stat().st_size == HEADER_BYTES + n_cells * CLASSES * 4  # the last, short batch too
    assert partial_path(out, part="image-run").stat().st_size == HEADER_BYTES
    crops_cut["n"] = 0
    assert main([*args, str(out)]) == 0
    assert crops_cut["n"] == 0  # no crop cut again
    assert out.read_bytes() == reference.read_bytes()
    assert not partial_path(out).exists() and not partial_path(out, part="image-run").exists()


def test_a_whole_pass_keeps_its_short_last_batch(tmp_path):
    log = RowLog(tmp_path / ".x.partial", key="a", columns=2)
    log.open(multiple=4, total=6)
    log.append(np.ones((6, 2)))
    assert log.open(multiple=4, total=6) == 6  # all the rows of the pass: nothing to redo
    assert log.open(multiple=4) == 4  # rows of an unfinished pass: whole batches only


@pytest.mark.slow  # a locbench subprocess, killed
def test_a_cell_mask_probe_killed_mid_way_continues_with_the_first_field_not_kept(cell_run, tmp_path, caplog):
    """A ``model.pool=cell_mask`` probe scores whole fields (each batch a few fields' cells): the kept rows end at
    a field's last cell, and a torn write longer than a row is cut back to one."""
    _, data, _ = cell_run
    sets = {
        "data.path": str(data),
        "data.cache_dir": str(tmp_path / "cache"),
        "data.img_size": 64,
        "data.channels": "rgby",
        "data.workers": 0,
        "data.val_frac": 0.3,
        "data.test_frac": 0,
        "model.backbone": "test_resnet",
        "model.mode": "probe",
        "model.pool": "cell_mask",
        "augment.name": "none",
        "train.level": "cell",
        "train.epochs": 1,
        "train.batch_size": 1,  # inference batches of 2 fields
        "train.device": "cpu",
        "log.progress": "lines",
    }
    run = train(load_config(overrides=sets), tmp_path / "probe")
    args = ["cells", "predict", str(run), "--data", str(data), "--device", "cpu", "--workers", "0", "--out"]
    reference = tmp_path / "reference.csv"
    assert main([*args, str(reference)]) == 0
    out = tmp_path / "out.csv"
    fi = load_benchmark("fault_injection", as_name="fault_injection")
    cmd = fi.child_command([*args, str(out)], die_in="locbench.infer.stream:forward_probs@3")
    res = subprocess.run(cmd, env=fi.child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    partial = partial_path(out)
    kept = (partial.stat().st_size - HEADER_BYTES) // (CLASSES * 4)
    counts = {}
    for line in (data / "cells.csv").read_text().splitlines()[1:]:
        counts[line.split(",")[0]] = counts.get(line.split(",")[0], 0) + 1
    ids = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    assert kept == sum(counts[i] for i in ids[:4])  # two batches of two fields
    with partial.open("ab") as f:
        f.write(b"\x01" * (2 * CLASSES * 4 + 30))  # two rows and a torn one: not a whole field
    with caplog.at_level("INFO", logger="locbench"):
        assert main([*args, str(out)]) == 0
    assert f"{kept} of {sum(counts.values())} cells already done" in caplog.text
    assert out.read_bytes() == reference.read_bytes() and not partial.exists()
