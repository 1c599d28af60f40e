"""kill -9 of `locbench train`, `locbench sweep`, a sweep worker and `locbench cache` (real SIGKILLs of real
subprocesses), then the same command again: nothing finished is lost or changed, no file is ever half-written
under its final name, and the re-run ends with the numbers of an uninterrupted run.

Kills land at chosen points through benchmarks/fault_injection.py's ``child`` mode (on the N-th training step,
half-way through writing a named file); its random-delay driver runs in ``--quick`` mode at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from fixtures.benchmarks import load_benchmark

from locbench.cli import main
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data"]

REPO = Path(__file__).resolve().parents[2]
#: 48 fields, val 0.2, test 0.2: 27 training images, 4 steps of 8 per epoch.
STEPS = 4


def _load_fi():
    return load_benchmark("fault_injection", as_name="fault_injection")


fi = _load_fi()


def killed(args: list[str], sig: str = "KILL", **kill) -> subprocess.CompletedProcess:
    """Run ``locbench ARGS`` in a subprocess with a signal (SIGKILL unless ``sig``) planted; assert that it ended by
    it: killed outright, or for SIGINT and SIGTERM with exit code 130 and 143."""
    res = subprocess.run(fi.child_command(args, **kill, sig=sig), env=fi.child_env(), capture_output=True, text=True)
    expect = {"KILL": -signal.SIGKILL, "INT": 130, "TERM": 143}[sig]
    assert res.returncode == expect, res.stderr[-2000:]
    return res


def scratch_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def train_args(synth_dir, cache_dir):
    from fixtures.synth_data import Kit

    kit = Kit(synth_dir, cache_dir)
    return lambda out, *extra: ["train", "--out", str(out), *kit.set_args(kit.overrides(train__epochs=3)), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, train_args):
    """An uninterrupted 3-epoch run, in this process (one thread, as the subprocesses)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("kill") / "reference"
        assert main(train_args(out)) == 0
        return fi.result_numbers(out)
    finally:
        torch.set_num_threads(before)


def test_train_killed_mid_epoch_then_mid_checkpoint_write_resumes_to_the_same_numbers(
    reference, train_args, tmp_path, one_thread
):
    run = tmp_path / "run"
    killed(train_args(run), die_in=f"locbench.engine.optim:clip_gradients@{STEPS + 3}")  # epoch 2, step 3
    assert RunDir(run).status() == "running" and fi.corrupt_files(run) == []
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch-*")) == [
        "epoch-0001.json",
        "epoch-0001.safetensors",
    ]

    killed(train_args(run, "--resume"), die_on_write="epoch-0002.safetensors")
    assert not (run / "checkpoints" / "epoch-0002.safetensors").exists()
    (half,) = scratch_files(run)  # the half-written bytes sit under a scratch name only
    assert half.name.startswith(".epoch-0002.safetensors.") and half.stat().st_size > 0
    assert fi.corrupt_files(run) == []

    assert main(train_args(run, "--resume")) == 0
    assert scratch_files(run) == []
    assert fi.result_numbers(run) == reference
    assert fi.corrupt_files(run) == []


def test_train_killed_writing_the_summary_with_a_corrupt_newest_checkpoint(
    reference, train_args, tmp_path, one_thread, caplog
):
    run = tmp_path / "run"
    killed(train_args(run), die_on_write="summary.json")
    assert not (run / "summary.json").exists() and RunDir(run).status() == "running"
    assert fi.corrupt_files(run) == []
    # on top of the kill, the newest checkpoint got truncated (a disk problem): the previous one is used
    newest = run / "checkpoints" / "epoch-0003.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="locbench"):
        assert main(train_args(run, "--resume")) == 0
    assert "epoch-0003.safetensors is truncated or corrupt" in caplog.text
    assert fi.result_numbers(run) == reference
    assert fi.corrupt_files(run) == []


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory, synth_dir, cache_dir):
    from fixtures.synth_data import Kit

    config: dict = {}
    for key, value in Kit(synth_dir, cache_dir).overrides(train__epochs=2).items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    path = tmp_path_factory.mktemp("sweepfile") / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "kill", "config": config, "grid": {"loss.name": ["bce", "focal"]}}))
    return path


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory, sweep_file):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("sweepref") / "sweep"
        assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
        return {p.name: fi.result_numbers(p) for p in out.iterdir() if (p / "summary.json").exists()}
    finally:
        torch.set_num_threads(before)


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "sweep_point.json").exists())


def test_killed_sweep_finishes_on_rerun_and_never_touches_finished_runs(
    sweep_file, sweep_reference, tmp_path, one_thread
):
    out = tmp_path / "sweep"
    killed(
        ["sweep", str(sweep_file), "--out", str(out)], die_in=f"locbench.engine.optim:clip_gradients@{2 * STEPS + 7}"
    )
    first, second = _runs(out)
    assert RunDir(first).status() == "done" and RunDir(second).status() == "running"
    assert fi.corrupt_files(out) == []
    before = fi.snapshot(first)
    time.sleep(0.01)  # an mtime written by the re-run would differ
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    assert fi.snapshot(first) == before
    assert {p.name: fi.result_numbers(p) for p in _runs(out)} == sweep_reference
    assert fi.corrupt_files(out) == []


def test_a_second_sweep_on_the_same_folder_refuses(sweep_file, tmp_path, capsys):
    from locbench.store.lock import FileLock

    out = tmp_path / "sweep"
    out.mkdir()
    with FileLock(out / ".sweep.lock"):  # what the first `locbench sweep` holds while it runs
        assert main(["sweep", str(sweep_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "another `locbench sweep` is running on" in err and str(out) in err
    assert not (out / "plan.json").exists()


def test_killed_sweep_worker_is_resumed_by_the_rerun(sweep_file, sweep_reference, tmp_path, one_thread):
    from locbench.sweep.runner import run_sweep

    out = tmp_path / "sweep"
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run_sweep(sweep_file, out, workers=2)))
    thread.start()
    victim = fi._running_worker(out, timeout=240)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    states = sorted(RunDir(p).state() for p in _runs(out))
    # the killed worker's run is interrupted (pending if the kill came before its status was first written, done if
    # as it finished); the other worker's run went on to the end
    assert "done" in states and set(states) <= {"done", "interrupted", "pending"}
    assert fi.corrupt_files(out) == []
    finished = {p.name: fi.snapshot(p) for p in _runs(out) if RunDir(p).status() == "done"}
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    assert {name: fi.snapshot(out / name) for name in finished} == finished
    assert {p.name: fi.result_numbers(p) for p in _runs(out)} == sweep_reference


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers die with the sweep on Linux (prctl)")
def test_killing_a_sweep_kills_its_workers_and_the_rerun_resumes(sweep_file, sweep_reference, tmp_path, one_thread):
    out = tmp_path / "sweep"
    cmd = fi.child_command(["sweep", str(sweep_file), "--out", str(out), "--workers", "2"])
    sweep = subprocess.Popen(cmd, env=fi.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = fi._running_worker(out, timeout=240, proc=sweep)
        assert worker is not None
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "a worker kept training after its sweep was killed"
        # the other worker gets the same signal but may take a moment to die; until then its run counts as
        # running and a re-run leaves it alone (correctly), so wait for every run lock to be free
        while any(RunDir(p).state() == "running" for p in _runs(out)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(RunDir(p).state() == "running" for p in _runs(out)), "a worker outlived its sweep"
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    assert {p.name: fi.result_numbers(p) for p in _runs(out)} == sweep_reference
    assert fi.corrupt_files(out) == []


def test_killed_cache_build_is_never_used_half_built_and_resumes(kit, tmp_path, caplog):
    from locbench.data.cache import build_cache, open_cache
    from locbench.data.formats import load_table
    from locbench.errors import LocbenchError

    cache_dir = tmp_path / "cache"
    args = ["cache", "--data", str(kit.data), "--img-size", "40", "--cache-dir", str(cache_dir), "--workers", "0"]
    killed(args, die_in="locbench.data.cache:_fill_chunk@2")
    (folder,) = list(cache_dir.iterdir())
    assert not (folder / "complete").exists() and fi.corrupt_files(folder) == []
    with pytest.raises(LocbenchError, match="not a finished cache"):
        open_cache(folder)
    table = load_table(kit.data)
    with caplog.at_level(logging.INFO, logger="locbench"):
        resumed = build_cache(table, channels="rgby", size=40, cache_dir=cache_dir, workers=0, progress=False)
    assert "resuming cache" in caplog.text and "reusing cache" not in caplog.text
    fresh = build_cache(table, channels="rgby", size=40, cache_dir=tmp_path / "fresh", workers=0, progress=False)
    assert (resumed.array == fresh.array).all()


# ---- SIGINT (Ctrl-C) and SIGTERM: handled, the run is left interrupted (never failed) and the same command resumes


def test_ctrl_c_in_train_leaves_it_interrupted_and_resume_gives_the_same_numbers(
    reference, train_args, tmp_path, one_thread, capsys
):
    run = tmp_path / "run"
    res = killed(train_args(run), sig="INT", die_in=f"locbench.engine.optim:clip_gradients@{STEPS + 3}")
    assert "interrupted by SIGINT" in res.stderr and "--resume" in res.stderr and "Traceback" not in res.stderr
    folder = RunDir(run)
    assert folder.status() == "running" and folder.state() == "interrupted"
    assert folder.status_info()["reason"] == "interrupted by SIGINT"
    # the half epoch is not saved: epoch 1's checkpoint only, and its metrics line only
    assert [p.name for p in sorted((run / "checkpoints").glob("epoch-*.json"))] == ["epoch-0001.json"]
    assert [r["epoch"] for r in folder.read_metrics()] == [1]
    assert scratch_files(run) == [] and fi.corrupt_files(run) == []
    assert main(train_args(run)) == 2  # without --resume: refused, saying what the folder holds and what to do
    assert "(status: interrupted); use --resume" in capsys.readouterr().err
    assert main(train_args(run, "--resume")) == 0
    assert fi.result_numbers(run) == reference


def test_sigterm_half_way_through_a_checkpoint_write_keeps_the_previous_one(
    reference, train_args, tmp_path, one_thread
):
    run = tmp_path / "run"
    res = killed(train_args(run), sig="TERM", die_on_write="epoch-0002.safetensors")
    assert "interrupted by SIGTERM" in res.stderr
    assert RunDir(run).state() == "interrupted" and scratch_files(run) == []  # the scratch file is removed at once
    assert not (run / "checkpoints" / "epoch-0002.safetensors").exists() and fi.corrupt_files(run) == []
    assert main(train_args(run, "--resume")) == 0
    assert fi.result_numbers(run) == reference


def test_sigterm_of_a_sweep_leaves_its_run_interrupted_and_the_same_command_resumes(
    sweep_file, sweep_reference, synth_dir, tmp_path, one_thread, capsys, untouched
):
    untouched.watch(sweep_file, synth_dir)
    out = tmp_path / "sweep"
    args = ["sweep", str(sweep_file), "--out", str(out)]
    res = killed(args, sig="TERM", die_in=f"locbench.engine.optim:clip_gradients@{2 * STEPS + 7}")  # the 2nd run
    assert "interrupted by SIGTERM" in res.stderr and "Traceback" not in res.stderr
    first, second = _runs(out)
    assert RunDir(first).state() == "done" and RunDir(second).state() == "interrupted"
    assert main(["status", str(out)]) == 0
    assert "interrupted by SIGTERM; re-running the sweep resumes it" in capsys.readouterr().out
    before = fi.snapshot(first)
    assert main(args) == 0  # the same command, no --retry-failed
    assert fi.snapshot(first) == before
    assert {p.name: fi.result_numbers(p) for p in _runs(out)} == sweep_reference
    untouched.check()


def test_ctrl_c_of_a_sweep_with_workers_is_forwarded_to_them_and_waited_for(
    sweep_file, sweep_reference, synth_dir, tmp_path, one_thread, untouched
):
    untouched.watch(sweep_file, synth_dir)
    out = tmp_path / "sweep"
    args = ["sweep", str(sweep_file), "--out", str(out), "--workers", "2"]
    sweep = subprocess.Popen(fi.child_command(args), env=fi.child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert fi._running_worker(out, timeout=240, proc=sweep) is not None
        while not any(RunDir(p).read_metrics() for p in _runs(out)) and sweep.poll() is None:
            time.sleep(0.05)  # a worker has finished an epoch: there is something to keep
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, err.decode()[-2000:]
    assert "interrupted by SIGINT" in err.decode() and "Traceback" not in err.decode()
    # the sweep returned only once its workers had recorded their runs: no run is still locked, none failed (a
    # worker still starting up when the signal came leaves its run pending)
    states = [RunDir(p).state() for p in _runs(out)]
    assert "interrupted" in states and set(states) <= {"done", "interrupted", "pending"}, states
    for p in _runs(out):
        if RunDir(p).state() == "interrupted":
            assert RunDir(p).status_info()["reason"] == "interrupted by SIGINT"
    assert main(args) == 0
    assert {p.name: fi.result_numbers(p) for p in _runs(out)} == sweep_reference
    untouched.check()


def test_divergence_in_the_last_step_of_an_epoch_is_diverged_not_failed(kit, tmp_path, capsys, untouched):
    untouched.watch(kit.data)
    run = tmp_path / "run"
    overrides = kit.overrides(optim__lr=1e30, train__max_steps=1, train__epochs=2)  # one step: its loss is finite
    assert main(["train", "--out", str(run), *kit.set_args(overrides)]) == 3
    err = capsys.readouterr().err
    assert "validation loss became nan after epoch 1" in err and "corrupt" not in err
    assert RunDir(run).status() == "diverged" and "optim.clip_grad" in RunDir(run).status_info()["reason"]
    untouched.check()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_run_being_trained_is_not_evaluated(command, trained_run, synth_dir, tmp_path, capsys, untouched):
    import shutil

    from locbench.store.lock import FileLock

    run = tmp_path / "run"
    # (without the outputs other tests may have written into the shared run: evaluate's eval/, explain's)
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval", "explain"))
    extra = ["--data", str(synth_dir), "--out", str(tmp_path / "p.csv")] if command == "predict" else []
    RunDir(run).set_status("running")  # `train --resume` extending it: status running, its lock held
    with FileLock(run / ".lock"):
        untouched.watch(run, synth_dir)  # the run is only read here: it stays as it is, lock file included
        assert main([command, str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert "is being trained right now" in err and str(run) in err
    assert not (tmp_path / "p.csv").exists() and not (run / "eval").exists()
    untouched.check()


@pytest.mark.slow
def test_fault_injection_quick():
    """The benchmark's random kills (train, sweep, cache), each followed by a re-run: nothing lost or corrupted."""
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fault_injection.py"), "--quick"],
        capture_output=True,
        text=True,
        env=fi.child_env(),
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "kill points tried / runs lost / files corrupted: 3 / 0 / 0" in res.stdout
