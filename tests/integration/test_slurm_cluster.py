"""`locbench sweep --executor slurm` on a real one-node SLURM cluster (tests/infra/slurm.py): a 4-point job array
to the end with its report, `--no-wait` and `locbench status` while jobs run, `scancel` of a running array task
and of the whole array followed by the same command, which resumes to results equal to an uninterrupted sweep,
and a failing run reported with its SLURM log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from locbench.cli import main
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data", "fixtures.slurm_cluster"]
pytestmark = pytest.mark.slow

GRID = {"loss.name": ["bce", "focal"], "optim.lr": [0.001, 0.003]}


def write_sweep(path: Path, cache_dir: Path, grid: dict, epochs: int = 4) -> Path:
    spec = {
        "name": "slurm-tiny",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"img_size": 64, "workers": 0, "cache_dir": str(cache_dir)},
            "train": {"epochs": epochs, "batch_size": 4, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": grid,
        "seeds": [0],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_args(sweep_file: Path, out: Path, data: Path, *extra: str) -> list[str]:
    return [
        "sweep", str(sweep_file), "--out", str(out), "--data", str(data), "--executor", "slurm",
        "--partition", "debug", "--cpus-per-task", "1", "--mem-gb", "1", "--gpus-per-node", "0",
        "--timeout-min", "10", *extra,
    ]  # fmt: skip


def numbers(out: Path) -> dict[str, dict]:
    """Per run: the summary's validation numbers."""
    plan = json.loads((out / "plan.json").read_text())
    result = {}
    for entry in plan["runs"]:
        summary = json.loads((out / entry["run_id"] / "summary.json").read_text())
        result[entry["run_id"]] = {k: v for k, v in summary.items() if k in ("val", "test", "best_epoch", "epochs_run")}
        assert result[entry["run_id"]]["val"] and result[entry["run_id"]]["epochs_run"] == 4
    return result


@pytest.fixture(scope="session")  # run once even where pytest interleaves this module with others
def slurm_sweep(slurm_cluster, synth_dir, cache_dir, tmp_path_factory) -> dict:
    """The 4-point sweep run to the end through SLURM (with --report); what squeue showed while it ran."""
    import threading

    root = tmp_path_factory.mktemp("slurm-sweep")
    sweep_file = write_sweep(root / "s.yaml", cache_dir, GRID)
    views: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            q = slurm_cluster.squeue()
            if "RUNNING" in q:
                views.append(slurm_cluster.sinfo() + q)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    try:  # the command itself, for its terminal output as a user sees it
        cmd = [sys.executable, "-m", "locbench", *sweep_args(sweep_file, root / "out", synth_dir, "--report")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    finally:
        done.set()
        t.join()
    return {
        "code": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "out": root / "out",
        "file": sweep_file,
        "views": views,
        "seconds": time.perf_counter() - t0,
    }


def test_sweep_runs_as_a_job_array_and_writes_its_report(slurm_sweep):
    out = slurm_sweep["out"]
    assert slurm_sweep["code"] == 0, slurm_sweep["stderr"]
    runs = json.loads((out / "plan.json").read_text())["runs"]
    assert len(runs) == 4
    for entry in runs:
        assert RunDir(out / entry["run_id"]).status() == "done"
    jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    assert len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
    assert sorted(int(j.split("_")[1]) for j in jobs.values()) == [0, 1, 2, 3]
    assert (out / "report" / "report.html").is_file() or list(out.glob("report*"))
    # squeue saw the array's tasks running on the cluster's node
    assert any("lbnode" in v and "RUNNING" in v for v in slurm_sweep["views"]), slurm_sweep["views"]


def wait_for(ok, timeout: float, what: str, step: float = 0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = ok()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def first_epoch_saved(out: Path) -> str | None:
    """A run whose first epoch checkpoint is written (its metadata file is written last, atomically)."""
    for meta in sorted(out.glob("*/checkpoints/epoch-0001.json")):
        return meta.parent.parent.name
    return None


def last_saved_epoch(run: Path) -> int:
    return max((int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("epoch-*.json")), default=0)


def test_submitit_lines_said_once_and_no_accounting_said_once_per_sweep(slurm_sweep):
    """This cluster has no accounting (sacct fails), as many lab clusters: one line says so for the whole sweep;
    no per-poll "Bypassing sacct error", no copy of a line through submitit's own handlers, nothing of sacct's."""
    said = slurm_sweep["stdout"] + slurm_sweep["stderr"]
    assert said.count("SLURM accounting is not available here") == 1, said
    assert "Bypassing sacct" not in said and "submitit WARNING" not in said, said
    assert "Slurm accounting storage is disabled\n" not in said.replace("disabled)", ""), said
    warnings = [line.split(" ", 1)[1] for line in said.splitlines() if " WARNING " in line]
    assert len(warnings) == len(set(warnings)), said


def test_cancelled_task_and_array_resume_to_the_uninterrupted_numbers(
    slurm_sweep, slurm_cluster, synth_dir, cache_dir, capsys
):
    """--no-wait, `locbench status` while the jobs run, scancel of a running task after its first epoch, then of
    the whole array; the same sweep command finishes every run with the numbers of the uninterrupted sweep, the
    cancelled one resumed after its last epoch, not from zero."""
    root = slurm_sweep["out"].parent
    # two of the uninterrupted sweep's runs (a run's id and folder follow from its configuration)
    sweep_file = write_sweep(root / "two.yaml", cache_dir, {"loss.name": ["bce", "focal"], "optim.lr": [0.001]})
    out = root / "cancelled"
    args = sweep_args(sweep_file, out, synth_dir)
    assert main([*args, "--no-wait"]) == 0
    jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    run_id = wait_for(lambda: first_epoch_saved(out), 120, "no run saved an epoch")
    slurm_cluster.run("scancel", jobs[run_id])  # that array task, while it trains
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "running" in shown and "epoch " in shown, shown
    wait_for(lambda: RunDir(out / run_id).state() == "interrupted", 60, f"{run_id} not left interrupted", 0.3)
    slurm_cluster.run("scancel", jobs[run_id].split("_")[0])  # the whole array
    wait_for(lambda: not slurm_cluster.run("squeue", "-h").strip(), 60, "the queue did not empty", 0.5)
    states = {r: RunDir(out / r).state() for r in jobs}
    assert states[run_id] == "interrupted" and set(states.values()) <= {"interrupted", "pending", "done"}
    kept = last_saved_epoch(out / run_id)
    assert 1 <= kept < 4, kept
    assert "interrupted by SIGTERM" in RunDir(out / run_id).status_info()["reason"]

    assert main(args) == 0  # the same command again
    assert {RunDir(out / r).state() for r in jobs} == {"done"}
    assert f"after epoch {kept}" in (out / run_id / "train.log").read_text()
    uninterrupted = numbers(slurm_sweep["out"])
    assert numbers(out) == {r: uninterrupted[r] for r in jobs}


def test_preempted_job_is_requeued_and_resumes_after_its_last_epoch(slurm_sweep, slurm_cluster, synth_dir, cache_dir):
    """SIGUSR2, which SLURM sends before a pre-emption or the time limit (submitit's --signal=USR2@90): the run
    stops, keeping its finished epochs, the job is requeued and resumes it after the last one, to the numbers of
    the uninterrupted sweep, with nobody running the sweep command again."""
    root = slurm_sweep["out"].parent
    sweep_file = write_sweep(root / "one.yaml", cache_dir, {"loss.name": ["bce"], "optim.lr": [0.001]})
    out = root / "preempted"
    assert main(sweep_args(sweep_file, out, synth_dir, "--no-wait")) == 0
    jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    run_id = wait_for(lambda: first_epoch_saved(out), 120, "the run saved no epoch")
    slurm_cluster.run("scancel", "--signal=USR2", jobs[run_id])
    # SLURM holds a requeued job back for two minutes (BeginTime); a test has no time for that
    job_ids = wait_for(lambda: slurm_cluster.run("squeue", "-h", "-t", "PD", "-o", "%A %r").split(), 120, "no requeue")
    assert job_ids[1] == "BeginTime", job_ids
    slurm_cluster.run("scontrol", "update", f"JobId={job_ids[0]}", "StartTime=now")
    wait_for(lambda: RunDir(out / run_id).state() == "done", 240, f"{run_id} not finished after its requeue", 0.5)
    job = jobs[run_id]
    assert f"job {job} requeued" in (out / ".submitit" / job / f"{job}_0_log.err").read_text()
    text = (out / run_id / "train.log").read_text()
    kept = int(text.split("after epoch ", 1)[1].split(" ", 1)[0])  # "resuming RUN after epoch K (best ...)"
    assert 1 <= kept < 4
    assert numbers(out)[run_id] == numbers(slurm_sweep["out"])[run_id]


def test_failing_run_is_reported_with_its_slurm_log(slurm_cluster, synth_dir, cache_dir, tmp_path, caplog, capsys):
    """A run that fails in its job: the sweep exits 1 and names the job's log; `locbench status` shows why and
    where that log is."""
    sweep_file = write_sweep(tmp_path / "s.yaml", cache_dir, {"train.device": ["cpu", "cuda:99"]}, epochs=1)
    caplog.set_level("INFO", logger="locbench")
    out = tmp_path / "out"
    assert main(sweep_args(sweep_file, out, synth_dir)) == 1
    failed = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "slurm log:" in r.getMessage()]
    assert len(failed) == 1 and "cuda_99" in failed[0] and ": failed;" in failed[0], failed
    log_path = Path(failed[0].rsplit("slurm log: ", 1)[1])
    assert log_path.is_file() and log_path.parent.parent == out / ".submitit"
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "failed" in shown and "cuda:99" in shown and f"job log: {log_path}" in shown, shown
