"""Faults other than kills: a full disk, a cache that cannot fit, a loss that becomes NaN in one run of a sweep.

A full disk is simulated in-process by making chosen atomic writes fail with ENOSPC, as ``f.write`` does on a
full filesystem: the command stops cleanly (exit 2, the file named, no traceback), leaves nothing half-written,
and a re-run once space is free finishes with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json

import pytest
import yaml

import locbench.store.atomic as atomic
from locbench.cli import main
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data"]


def disk_full(monkeypatch, *names: str, after_first: bool = False) -> list[str]:
    """Make atomic writes of files named ``names`` (every write from the first such one on, with ``after_first``)
    fail with ENOSPC; returns the list of refused paths."""
    refused: list[str] = []
    original = atomic.atomic_write

    def atomic_write(path, writer):
        from pathlib import Path

        if Path(path).name in names or (after_first and refused):

            def failing(f):
                f.write(b"\0" * 10)  # part of the data reached the disk before it filled
                raise OSError(errno.ENOSPC, "No space left on device")

            refused.append(str(path))
            return original(path, failing)
        return original(path, writer)

    monkeypatch.setattr(atomic, "atomic_write", atomic_write)
    return refused


def scratch(folder) -> list:
    return sorted(folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_dir, cache_dir):
    from fixtures.synth_data import Kit, one_torch_thread

    from locbench.config import load_config
    from locbench.engine.fit import train

    with one_torch_thread():
        over = Kit(synth_dir, cache_dir).overrides(train__epochs=3)
        return train(load_config(None, over), tmp_path_factory.mktemp("faults") / "reference")


def _same_numbers(a, b) -> None:
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert sa["val"] == sb["val"] and sa["best_epoch"] == sb["best_epoch"]
    assert (a / "thresholds.json").read_text() == (b / "thresholds.json").read_text()


@pytest.mark.parametrize("everything_after", [False, True], ids=["checkpoint-only", "disk-stays-full"])
def test_disk_full_while_writing_a_checkpoint(everything_after, reference, kit, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *kit.set_args(kit.overrides(train__epochs=3))]
    refused = disk_full(monkeypatch, "epoch-0002.safetensors", after_first=everything_after)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no space left on the device" in err
    assert str(run / "checkpoints" / "epoch-0002.safetensors") in err  # the write that failed, not a later one
    assert refused[0].endswith("epoch-0002.safetensors")
    assert scratch(run) == [] and not (run / "checkpoints" / "epoch-0002.safetensors").exists()
    if everything_after:  # not even the status could be written: the folder still reads as interrupted
        assert RunDir(run).status() == "running"
    else:
        info = RunDir(run).status_info()
        assert info["status"] == "failed" and "No space left" in info["reason"]
    monkeypatch.undo()  # space freed
    assert main([*args, "--resume"]) == 0
    _same_numbers(run, reference)


def test_disk_full_while_appending_metrics_is_a_clean_stop(kit, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"

    def append_jsonl(path, record):
        raise atomic.write_error(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr("locbench.store.rundir.append_jsonl", append_jsonl)
    assert main(["train", "--out", str(run), *kit.set_args(kit.overrides())]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(run / "metrics.jsonl") in err and "free some space" in err
    assert RunDir(run).status() == "failed"


def test_append_jsonl_turns_enospc_into_a_named_error(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def full_open(path, mode="r", *a, **k):
        if "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(atomic.WriteError, match="metrics.jsonl: no space left") as e:
        atomic.append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1})
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)


def test_cache_too_big_for_the_disk_is_refused_before_decoding(kit, tmp_path, capsys, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("locbench.data.cache.shutil.disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    cache_dir = tmp_path / "cache"
    args = ["cache", "--data", str(kit.data), "--img-size", "64", "--cache-dir", str(cache_dir), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "the cache needs" in err and "only 0.00 GB are free" in err
    assert not list(cache_dir.rglob("pixels.npy"))  # nothing decoded, nothing allocated
    # train builds the same cache first: the same early refusal, before the model is built
    run = tmp_path / "run"
    over = kit.overrides(data__cache_dir=str(cache_dir), data__img_size=64)
    assert main(["train", "--out", str(run), *kit.set_args(over)]) == 2
    assert "the cache needs" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def test_disk_full_during_a_cache_build_stops_cleanly_and_a_rerun_finishes(kit, tmp_path, capsys, monkeypatch):
    cache_dir = tmp_path / "cache"
    args = ["cache", "--data", str(kit.data), "--img-size", "40", "--cache-dir", str(cache_dir), "--workers", "0"]
    disk_full(monkeypatch, "complete")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "complete: no space left" in err
    (folder,) = list(cache_dir.iterdir())
    assert not (folder / "complete").exists() and scratch(folder) == []
    monkeypatch.undo()
    assert main(args) == 0
    assert (folder / "complete").exists()


def test_a_diverging_run_is_recorded_the_sweep_goes_on_and_the_report_lists_it(kit, tmp_path, capsys):
    config: dict = {}
    for key, value in kit.overrides(optim__name="sgd").items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "div", "config": config, "grid": {"optim.lr": [0.001, 1000000.0]}}))
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out)]) == 1  # not every run finished: a non-zero exit
    assert "1 diverged" in capsys.readouterr().out
    states = {p.name: RunDir(p).status_info() for p in out.iterdir() if (p / "sweep_point.json").exists()}
    diverged = [name for name, info in states.items() if info["status"] == "diverged"]
    assert len(diverged) == 1
    assert "training loss became nan" in states[diverged[0]]["reason"]
    assert sorted(info["status"] for info in states.values()) == ["diverged", "done"]

    assert main(["status", str(out)]) == 0
    status_out = capsys.readouterr().out
    assert "diverged" in status_out and "training loss became nan" in status_out

    assert main(["report", str(out), "--resamples", "100"]) == 0
    report = (out / "report.md").read_text()
    assert diverged[0] in report and "diverged" in report and "training loss became nan" in report
    # a re-run leaves the diverged run alone (it would diverge again) unless asked
    before = (out / diverged[0] / "status.json").read_bytes()
    assert main(["sweep", str(sweep), "--out", str(out)]) == 1
    assert (out / diverged[0] / "status.json").read_bytes() == before


def test_stale_scratch_files_of_a_killed_write_are_removed_on_resume(kit, tmp_path, one_thread):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *kit.set_args(kit.overrides(train__epochs=2))]
    assert main(args) == 0
    # what a kill in the middle of writing a checkpoint leaves beside it
    stale = run / "checkpoints" / ".epoch-0003.safetensors.abc123.tmp"
    stale.write_bytes(b"\0" * 1000)
    (run / "status").write_text("running\n")
    assert main([*args, "--resume"]) == 0
    assert not stale.exists() and RunDir(run).status() == "done"


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    path = atomic.atomic_write_text(tmp_path / "x.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")  # what open() gives a new file under this process's umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_lock_probe_writes_nothing_and_report_tells_interrupted_from_running(trained_run, tmp_path):
    import shutil

    from locbench.report.collect import read_run
    from locbench.store.lock import FileLock

    run = tmp_path / "sweep" / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("epoch-*", "eval"))
    (run / "status").write_text("running\n")
    lock = run / ".lock"
    lock.write_text("12345\n")
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    assert not FileLock(lock).held_elsewhere()
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before  # probing never rewrites a run's lock
    got = read_run(run)
    assert got.status == "interrupted" and "re-run the sweep" in got.reason and not got.usable
    with FileLock(lock):  # a live trainer holds it
        assert FileLock(lock).held_elsewhere()
        got = read_run(run)
    assert got.status == "running" and "still running" in got.reason
