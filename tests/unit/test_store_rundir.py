"""The run folder (store.rundir.RunDir): files written by its writers read back by its readers, the exact
formats, the errors that name a damaged file, and the one derivation of a run's state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locbench.report.collect import read_run
from locbench.store.lock import FileLock
from locbench.store.rundir import STATES, NewerFormatError, RunDir, RunFileError
from locbench.sweep.status import sweep_status

CLASSES = ["Nucleoplasm", "Cytosol", "Mitochondria"]


def _finished(root: Path) -> RunDir:
    """A run folder as `locbench train` leaves it, written only through RunDir's writers."""
    run = RunDir(root)
    run.write_config("seed: 3\ntrain:\n  epochs: 2\n")
    run.write_env({"locbench": "0", "device": "cpu"})
    run.set_status("running")
    for epoch in (1, 2):
        run.append_metrics({"epoch": epoch, "val/map": 0.5 + epoch / 10, "time/epoch_s": 1.5})
    ids = ["a", "b", "c", "d"]
    probs = np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)
    targets = np.eye(4, 3, dtype=np.uint8)
    run.write_predictions("val", ids, probs, targets)
    run.write_thresholds(CLASSES, np.array([0.25, 0.5, 0.75]))
    run.write_summary({"format_version": 1, "val": {"map": 0.7}, "best_epoch": 2})
    run.set_status("done")
    return run


def test_writers_and_readers_round_trip(tmp_path):
    run = _finished(tmp_path / "run")
    assert run.is_run() and not RunDir(tmp_path).is_run()
    assert run.read_config() == {"seed": 3, "train": {"epochs": 2}}
    assert run.read_env() == {"locbench": "0", "device": "cpu"}
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert run.read_summary()["best_epoch"] == 2 and run.has_summary()
    names, thr = run.read_thresholds(num_classes=3)
    assert names == CLASSES and thr.dtype == np.float64 and thr.tolist() == [0.25, 0.5, 0.75]
    pred = run.read_predictions("val")
    assert pred.ids.tolist() == ["a", "b", "c", "d"] and pred.probs.dtype == np.float32
    assert pred.targets.dtype == np.uint8 and pred.targets.shape == (4, 3) and run.has_predictions("val")
    assert not run.has_predictions("test")
    assert run.status() == "done" and run.status_info()["status"] == "done" and run.status_info()["reason"] == ""
    assert run.read_sweep_point() is None and run.read_best_meta() == {}


def test_file_formats_stay_as_documented(tmp_path):
    run = _finished(tmp_path / "run")
    root = run.root
    assert (root / "status").read_text() == "done\n"
    assert (root / "thresholds.json").read_text() == json.dumps(
        {"classes": CLASSES, "thresholds": [0.25, 0.5, 0.75]}, indent=2
    ) + "\n"
    lines = (root / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == '{"epoch": 1, "val/map": 0.6, "time/epoch_s": 1.5}'
    assert (root / "config.yaml").read_text() == "seed: 3\ntrain:\n  epochs: 2\n"
    with np.load(root / "predictions" / "val.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["ids", "probs", "targets"]
    status = json.loads((root / "status.json").read_text())
    assert list(status) == ["status", "reason", "time"] and status["status"] == "done"


def test_metrics_are_truncated_for_a_resume_and_cleared(tmp_path):
    run = _finished(tmp_path / "run")
    run.truncate_metrics(1)
    assert [r["epoch"] for r in run.read_metrics()] == [1]
    assert (run.root / "metrics.jsonl").read_text() == '{"epoch": 1, "val/map": 0.6, "time/epoch_s": 1.5}\n'
    run.clear_metrics()
    run.clear_metrics()  # nothing there: no error
    assert run.read_metrics() == []


def test_eval_results_go_to_eval_or_out(tmp_path):
    run = _finished(tmp_path / "run")
    path = run.write_eval("cell_val", {"map": 0.5}, arrays={"ids": np.array(["a/1"]), "probs": np.ones((1, 3))})
    assert path == run.root / "eval" / "cell_val.json" and json.loads(path.read_text()) == {"map": 0.5}
    with np.load(path.with_suffix(".npz")) as z:
        assert z["ids"].tolist() == ["a/1"]
    elsewhere = run.write_eval("val", {"map": 0.1}, out=tmp_path / "x.json")
    assert elsewhere == tmp_path / "x.json" and not (run.root / "eval" / "val.json").exists()


def test_sweep_point_and_set_aside_keep_only_the_record(tmp_path):
    run = _finished(tmp_path / "run")
    record = {"sweep": "s", "point_id": "c00", "axes": {"loss.name": "bce"}, "seed": 0, "run_id": "run"}
    run.write_sweep_point(record)
    assert run.read_sweep_point() == record
    run.set_aside(tmp_path / ".attempts" / "run-1")
    assert sorted(p.name for p in run.root.iterdir()) == ["sweep_point.json"]
    assert run.read_sweep_point() == record and run.state() == "pending"
    assert RunDir(tmp_path / ".attempts" / "run-1").status() == "done"


def test_an_older_sweeps_sweep_cell_json_is_read_kept_aside_and_replaced(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    old = {"sweep": "s", "cell_id": "c00", "axes": {"loss.name": "bce"}, "seed": 0, "run_id": "run"}
    (run.root / "sweep_cell.json").write_text(json.dumps(old))
    assert run.is_run() and run.state() == "pending"
    assert run.read_sweep_point() == {
        "sweep": "s",
        "point_id": "c00",
        "axes": {"loss.name": "bce"},
        "seed": 0,
        "run_id": "run",
    }
    run.set_aside(tmp_path / ".attempts" / "run-1")
    assert sorted(p.name for p in run.root.iterdir()) == ["sweep_cell.json"]
    new = {**run.read_sweep_point(), "seed": 1}
    run.write_sweep_point(new)
    assert sorted(p.name for p in run.root.iterdir()) == ["sweep_point.json"] and run.read_sweep_point() == new


def _state_of_each(tmp_path: Path) -> dict[str, RunDir]:
    runs = {}
    runs["pending"] = RunDir(tmp_path / "pending")
    runs["pending"].write_sweep_point({"sweep": "s", "point_id": "c", "axes": {}, "seed": 0, "run_id": "pending"})
    runs["done"] = _finished(tmp_path / "done")
    for status in ("failed", "diverged", "running", "interrupted"):
        runs[status] = RunDir(tmp_path / status)
        runs[status].write_config("train:\n  epochs: 4\n")
        runs[status].append_metrics({"epoch": 1, "time/epoch_s": 2.0})
        runs[status].set_status("running" if status == "interrupted" else status, f"why {status}")
    return runs


def test_state_is_derived_from_status_and_lock(tmp_path):
    runs = _state_of_each(tmp_path)
    lock = runs["running"].lock()
    assert lock.acquire(blocking=False)  # a live trainer holds its run's lock
    try:
        assert {name: run.state() for name, run in runs.items()} == {name: name for name in runs}
        assert set(STATES) == set(runs)
    finally:
        lock.release()
    assert runs["running"].state() == "interrupted"  # the holder died: the kernel released its lock


def test_report_and_sweep_status_use_the_same_state(tmp_path):
    runs = _state_of_each(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"name": "s", "runs": [{"run_id": name} for name in runs]}))
    with FileLock(runs["running"].root / ".lock"):
        report = {name: read_run(run.root) for name, run in runs.items()}
        status = {r["run_id"]: r for r in sweep_status(tmp_path)["runs"]}
    assert {name: r.status for name, r in report.items()} == {name: name for name in runs}
    assert {name: r["state"] for name, r in status.items()} == {name: name for name in runs}
    assert report["pending"].reason == "not started yet" and report["done"].usable
    assert report["failed"].reason == "why failed" and status["failed"]["reason"] == "why failed"
    assert "still running (1 epochs logged)" in report["running"].reason
    assert "interrupted after 1 epochs" in report["interrupted"].reason
    assert status["running"]["epoch"] == 1 and status["running"]["epochs"] == 4


def test_damaged_or_missing_files_are_named(tmp_path):
    run = _finished(tmp_path / "run")
    (run.root / "thresholds.json").write_text('{"classes": [')
    with pytest.raises(RunFileError, match="thresholds.json is not valid JSON .*the run folder is damaged"):
        run.read_thresholds()
    (run.root / "thresholds.json").write_text('{"classes": ["a"]}')
    with pytest.raises(RunFileError, match="thresholds.json is unreadable"):
        run.read_thresholds()
    (run.root / "thresholds.json").write_text('{"classes": ["a"], "thresholds": [0.5]}')
    with pytest.raises(RunFileError, match="lists 1 classes / 1 thresholds but predictions/val.npz has 3 columns"):
        run.read_thresholds(num_classes=3)
    (run.root / "thresholds.json").unlink()
    with pytest.raises(RunFileError, match="thresholds.json is missing: the run folder is incomplete"):
        run.read_thresholds()
    (run.root / "predictions" / "val.npz").write_bytes(b"not a zip")
    with pytest.raises(RunFileError, match="val.npz is unreadable") as e:
        run.read_predictions()
    assert e.value.path == run.root / "predictions" / "val.npz" and "damaged" not in e.value.cause
    with pytest.raises(RunFileError, match="no stored test predictions"):
        run.read_predictions("test")


def test_summary_missing_damaged_or_newer(tmp_path):
    run = _finished(tmp_path / "run")
    run.write_summary({"format_version": 2})
    with pytest.raises(NewerFormatError, match="written by a newer locbench .run format 2") as e:
        run.read_summary()
    assert e.value.version == 2
    (run.root / "summary.json").write_text("{")
    with pytest.raises(RunFileError, match="not valid JSON") as e:
        run.read_summary()
    assert "summary.json unreadable (" + e.value.cause + ")" in read_run(run.root).reason
    (run.root / "summary.json").unlink()
    with pytest.raises(RunFileError, match="has no summary.json: the run has not finished .status: done."):
        run.read_summary()


def test_reading_a_run_folder_needs_no_torch():
    code = "import sys, locbench.store.rundir, locbench.report.collect; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
