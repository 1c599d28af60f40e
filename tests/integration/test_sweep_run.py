"""`locbench sweep` end to end on a 2-point grid of tiny runs: run folders, plan, resumability, failures, status,
the sweep lock, and submitit's local executor."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from locbench.cli import main
from locbench.errors import LocbenchError
from locbench.store.lock import FileLock
from locbench.store.rundir import RunDir
from locbench.sweep.runner import run_sweep

pytest_plugins = ["fixtures.synth_data"]


def write_sweep(path: Path, cache_dir: Path, *, grid: dict | None = None, epochs: int = 1, **extra) -> Path:
    """A sweep file of tiny CPU runs (test_resnet, 32 px, batch 8) over ``grid`` (default: BCE vs focal)."""
    spec = {
        "name": "tiny",
        "description": "two losses on synthetic fields",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"img_size": 32, "workers": 0, "cache_dir": str(cache_dir)},
            "optim": {"lr": 1e-3},
            "train": {"epochs": epochs, "batch_size": 8, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": grid or {"loss.name": ["bce", "focal"]},
        "seeds": [0],
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its mtime (ns) and bytes."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, synth_dir, cache_dir) -> Path:
    """A finished 2-point x 1-seed sweep of 2-epoch runs, run once; tests that change it work on a copy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("sweep")
        sweep_file = write_sweep(root / "tiny.yaml", cache_dir, epochs=2)
        counts = run_sweep(sweep_file, root / "out", data=str(synth_dir))
        assert counts == {"done": 2}
        return root / "out"
    finally:
        torch.set_num_threads(before)


def _runs(out: Path) -> list[Path]:
    plan = json.loads((out / "plan.json").read_text())
    return [out / r["run_id"] for r in plan["runs"]]


def test_sweep_writes_plan_and_one_run_folder_per_point(finished_sweep):
    plan = json.loads((finished_sweep / "plan.json").read_text())
    assert plan["name"] == "tiny" and plan["description"] == "two losses on synthetic fields"
    assert plan["grid"] == {"loss.name": ["bce", "focal"]} and plan["seeds"] == [0]
    assert [r["axes"] for r in plan["runs"]] == [{"loss.name": "bce"}, {"loss.name": "focal"}]
    assert (finished_sweep / "sweep.yaml").exists()
    splits = list((finished_sweep / "splits").glob("*.json"))
    assert len(splits) == 1  # both grid points share seed 0's split
    for entry, run in zip(plan["runs"], _runs(finished_sweep), strict=True):
        assert RunDir(run).status() == "done"
        point = json.loads((run / "sweep_point.json").read_text())
        assert {k: point[k] for k in ("sweep", "point_id", "axes", "seed", "run_id")} == {
            "sweep": "tiny",
            "point_id": entry["point_id"],
            "axes": entry["axes"],
            "seed": 0,
            "run_id": run.name,
        }
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["loss"]["name"] == entry["axes"]["loss.name"]
        assert Path(cfg["data"]["split"]) == splits[0].resolve()
        assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        for name in ("summary.json", "thresholds.json", "predictions/val.npz", "checkpoints/best.safetensors"):
            assert (run / name).is_file()
    # both grid points trained on the same images
    a, b = (json.loads((r / "split.json").read_text()) for r in _runs(finished_sweep))
    assert a["parts"] == b["parts"]


def test_rerun_leaves_finished_runs_untouched(finished_sweep, synth_dir, cache_dir, tmp_path, one_thread, caplog):
    out = shutil.copytree(finished_sweep, tmp_path / "again")
    runs_before = {run.name: snapshot(run) for run in _runs(out)}
    caplog.set_level(logging.INFO, logger="locbench")
    counts = run_sweep(write_sweep(tmp_path / "tiny.yaml", cache_dir, epochs=2), out, data=str(synth_dir))
    assert counts == {"done": 2}
    assert "0 to run, 2 already done" in caplog.text
    for run in _runs(out):
        assert snapshot(run) == runs_before[run.name]  # same bytes and same mtimes


def test_interrupted_run_is_resumed_and_the_other_left_alone(
    finished_sweep, synth_dir, cache_dir, tmp_path, one_thread, caplog
):
    out = shutil.copytree(finished_sweep, tmp_path / "interrupted")
    killed, other = _runs(out)
    full_metrics = (killed / "metrics.jsonl").read_text()
    for suffix in (".json", ".safetensors"):
        (killed / "checkpoints" / f"epoch-0002{suffix}").unlink()
    (killed / "summary.json").unlink()
    RunDir(killed).set_status("running")  # as a kill leaves it: status running, nobody holding the lock
    assert RunDir(killed).state() == "interrupted"
    other_before = snapshot(other)

    caplog.set_level(logging.INFO, logger="locbench")
    counts = run_sweep(write_sweep(tmp_path / "tiny.yaml", cache_dir, epochs=2), out, data=str(synth_dir))
    assert counts == {"done": 2}
    assert f"resuming {killed}" in caplog.text and "after epoch 1" in caplog.text
    # the resumed epoch 2 repeats the lost one exactly
    strip = [
        {k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "train/img"))}
        for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    full = [
        {k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "train/img"))}
        for line in full_metrics.splitlines()
    ]
    assert strip == full
    assert snapshot(other) == other_before


def as_older_sweep(out: Path) -> None:
    """Rewrite a sweep folder as a locbench from before the grid point rename wrote it: each run's record in
    ``sweep_cell.json`` with ``cell_id``, the plan's runs with ``cell_id``."""
    for run in _runs(out):
        record = json.loads((run / "sweep_point.json").read_text())
        old = {("cell_id" if k == "point_id" else k): v for k, v in record.items()}
        (run / "sweep_cell.json").write_text(json.dumps(old))
        (run / "sweep_point.json").unlink()
    plan = json.loads((out / "plan.json").read_text())
    plan["runs"] = [{("cell_id" if k == "point_id" else k): v for k, v in r.items()} for r in plan["runs"]]
    (out / "plan.json").write_text(json.dumps(plan))


def test_an_older_sweep_folder_resumes_and_reports(finished_sweep, synth_dir, cache_dir, tmp_path, one_thread, caplog):
    from locbench.report.collect import collect

    out = shutil.copytree(finished_sweep, tmp_path / "older")
    as_older_sweep(out)
    killed, other = _runs(out)
    for suffix in (".json", ".safetensors"):
        (killed / "checkpoints" / f"epoch-0002{suffix}").unlink()
    (killed / "summary.json").unlink()
    RunDir(killed).set_status("running")
    other_before = snapshot(other)
    assert RunDir(killed).read_sweep_point()["point_id"] == "bce"

    # the worker command under its old name, as a job queued by an older locbench calls it
    assert main(["-q", "sweep-cell", str(killed)]) == 0
    assert RunDir(killed).state() == "done" and (killed / "summary.json").is_file()
    caplog.set_level(logging.INFO, logger="locbench")
    counts = run_sweep(write_sweep(tmp_path / "tiny.yaml", cache_dir, epochs=2), out, data=str(synth_dir))
    assert counts == {"done": 2} and "0 to run, 2 already done" in caplog.text
    assert snapshot(other) == other_before  # a finished run of an older sweep is not rewritten
    assert not (other / "sweep_point.json").exists()

    sweep = collect(out)
    assert [(p.point_id, p.axes, len(p.done)) for p in sweep.points] == [
        ("bce", {"loss.name": "bce"}, 1),
        ("focal", {"loss.name": "focal"}, 1),
    ]
    assert main(["status", str(out)]) == 0


def test_a_run_that_is_being_trained_is_left_alone(finished_sweep, synth_dir, cache_dir, tmp_path, caplog):
    out = shutil.copytree(finished_sweep, tmp_path / "live")
    busy, _ = _runs(out)
    RunDir(busy).set_status("running")
    lock = FileLock(busy / ".lock")
    assert lock.acquire(blocking=False)  # another process training it (a second descriptor conflicts too)
    try:
        assert RunDir(busy).state() == "running"
        caplog.set_level(logging.INFO, logger="locbench")
        counts = run_sweep(write_sweep(tmp_path / "tiny.yaml", cache_dir, epochs=2), out, data=str(synth_dir))
    finally:
        lock.release()
    assert counts == {"running": 1, "done": 1}
    assert "is being trained by another process; leaving it" in caplog.text


def test_failing_run_is_recorded_and_the_others_finish(kit, tmp_path, capsys):
    # class weights for 2 classes on 19-class data: valid at expansion, fails when the run builds its loss
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, grid={"loss.class_weights": [None, [1.0, 2.0]]})
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data)]) == 1
    assert "1 done, 1 failed" in capsys.readouterr().out
    ok, bad = _runs(out)
    assert RunDir(ok).status() == "done" and RunDir(bad).status() == "failed"
    info = json.loads((bad / "status.json").read_text())
    assert "loss.class_weights has 2 values; the data has 19 classes" in info["reason"]
    assert "Traceback" in info["traceback"]

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "sweep tiny: 1 done, 1 failed"
    assert any(
        bad.name in line and "failed" in line and "class_weights has 2 values" in line for line in text.splitlines()
    )
    assert any(ok.name in line and "done" in line and "epoch 1/1" in line for line in text.splitlines())

    # without --retry-failed a failed run stays as it is; with it, it runs again (and fails again here)
    before = snapshot(bad)
    assert main(["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data)]) == 1
    assert snapshot(bad) == before
    assert main(["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data), "--retry-failed"]) == 1
    assert json.loads((bad / "status.json").read_text())["time"] >= info["time"]
    assert list((out / ".attempts").iterdir())  # the earlier attempt was kept aside


def test_run_failing_before_training_starts_is_recorded_failed(kit, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # an unavailable device fails before the run folder gets a status: it must not look pending forever
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, grid={"train.device": ["cpu", "cuda"]})
    counts = run_sweep(sweep_file, tmp_path / "out", data=str(kit.data))
    assert counts == {"done": 1, "failed": 1}
    _, bad = _runs(tmp_path / "out")
    assert "CUDA is not available" in json.loads((bad / "status.json").read_text())["reason"]


def test_second_sweep_on_a_locked_folder_is_refused(finished_sweep, kit, tmp_path, capsys):
    out = shutil.copytree(finished_sweep, tmp_path / "locked")
    sweep_file = write_sweep(tmp_path / "tiny.yaml", kit.cache_dir, epochs=2)
    lock = FileLock(out / ".sweep.lock")
    assert lock.acquire(blocking=False)
    try:
        with pytest.raises(LocbenchError, match=r"another `locbench sweep` is running on .*locked"):
            run_sweep(sweep_file, out, data=str(kit.data))
        assert main(["sweep", str(sweep_file), "--out", str(out), "--data", str(kit.data)]) == 2
        assert "locbench status" in capsys.readouterr().err
    finally:
        lock.release()


def test_status_command(finished_sweep, tmp_path, capsys):
    assert main(["status", str(finished_sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sweep tiny: 2 done"
    for run in _runs(finished_sweep):
        (line,) = [ln for ln in lines if run.name in ln]
        assert line.split()[1:4] == ["done", "epoch", "2/2"]
    # a pending run and an ETA once something is left
    out = shutil.copytree(finished_sweep, tmp_path / "half")
    pending = _runs(out)[1]
    shutil.rmtree(pending)
    text = main(["status", str(out)]) == 0 and capsys.readouterr().out
    assert text.splitlines()[0].startswith("sweep tiny: 1 done, 1 pending; about ")
    assert main(["status", str(tmp_path)]) == 2
    assert "is not a sweep folder (no plan.json)" in capsys.readouterr().err


def test_bad_executor_and_sweep_file_errors(kit, tmp_path, capsys):
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir)
    with pytest.raises(LocbenchError, match="--executor 'cloud'"):
        run_sweep(sweep_file, tmp_path / "o", executor="cloud")
    typo = tmp_path / "typo.yaml"
    typo.write_text("grid:\n  loss.nmae: [bce]\n")
    assert main(["sweep", str(typo), "--out", str(tmp_path / "o2"), "--data", str(kit.data)]) == 2
    assert "did you mean loss.name" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_submitit_local_executor(kit, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs are processes of their own
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir, grid={"loss.name": ["focal"]})
    out = tmp_path / "out"
    counts = run_sweep(sweep_file, out, data=str(kit.data), executor="local", slurm={"timeout_min": 5})
    assert counts == {"done": 1}
    jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    assert set(jobs) == {run.name for run in _runs(out)}
    for run in _runs(out):
        assert RunDir(run).status() == "done" and (run / "summary.json").is_file()
        assert "epoch 1/1" in (run / "train.log").read_text()
    assert list((out / ".submitit").iterdir())


@pytest.mark.slow
def test_worker_processes(kit, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep_file = write_sweep(tmp_path / "s.yaml", kit.cache_dir)
    out = tmp_path / "out"
    assert run_sweep(sweep_file, out, data=str(kit.data), workers=2) == {"done": 2}
    for run in _runs(out):
        assert "epoch 1/1" in (run / "train.log").read_text()
        assert (run / "worker.log").exists()
