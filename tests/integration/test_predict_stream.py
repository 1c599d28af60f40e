"""`predict` and `evaluate` streamed over a dataset: a kill -9 mid-way loses at most the batch in flight, the same
command run again decodes only the fields not yet done and writes exactly the output of an uninterrupted run;
loader workers give the same numbers as none; progress lines carry throughput and time left."""

from __future__ import annotations

import logging
import signal
import subprocess

import numpy as np
import pytest
from fixtures.benchmarks import load_benchmark

from locbench.cli import main
from locbench.data import images as imio
from locbench.store.partial import HEADER_BYTES, RowLog, partial_path

pytest_plugins = ["fixtures.synth_data"]

#: the trained run's batch is 8, so predict's is 16: 48 fields are 3 batches
BATCH = 16


def _fi():
    return load_benchmark("fault_injection", as_name="fault_injection")


def _killed_at_batch(args: list[str], batch: int) -> None:
    """``locbench ARGS`` in a subprocess, SIGKILLed just before the model's ``batch``-th forward pass."""
    fi = _fi()
    cmd = fi.child_command(args, die_in=f"locbench.infer.stream:forward_probs@{batch}")
    res = subprocess.run(cmd, env=fi.child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]


@pytest.fixture
def decodes(monkeypatch):
    """Counts the fields decoded at the run's size (the dtype probe reads one stain at 8 px: not counted)."""
    calls = {"n": 0}
    original = imio.read_field_raw

    def counting(paths, channels, size, **kw):
        if size > 8:
            calls["n"] += 1
        return original(paths, channels, size, **kw)

    monkeypatch.setattr(imio, "read_field_raw", counting)
    return calls


def _predict_args(run, data, out, *extra):
    return ["predict", str(run), "--data", str(data), "--out", str(out), "--device", "cpu", "--workers", "0", *extra]


@pytest.mark.slow  # a locbench subprocess, killed
def test_predict_killed_mid_way_continues_to_the_same_bytes(trained_run, kit, tmp_path, decodes, caplog):
    reference = tmp_path / "reference.csv"
    assert main(_predict_args(trained_run, kit.data, reference)) == 0
    assert decodes["n"] == 48
    out = tmp_path / "out.csv"
    _killed_at_batch(_predict_args(trained_run, kit.data, out), 3)
    partial = partial_path(out)
    assert not out.exists()  # the output appears only whole
    # two whole batches were kept; a torn row (a kill during the write) is cut off when the file is opened again
    assert partial.stat().st_size == HEADER_BYTES + 2 * BATCH * 19 * 4
    with partial.open("ab") as f:
        f.write(b"\x01" * 30)
    decodes["n"] = 0
    with caplog.at_level(logging.INFO, logger="locbench"):
        assert main(_predict_args(trained_run, kit.data, out)) == 0
    assert decodes["n"] == 48 - 2 * BATCH  # work already done is not redone
    assert "32 of 48 fields already done" in caplog.text
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists()


@pytest.mark.slow  # a locbench subprocess, killed
def test_a_partial_file_of_another_command_is_started_over(trained_run, kit, tmp_path, decodes, caplog):
    out = tmp_path / "out.csv"
    _killed_at_batch(_predict_args(trained_run, kit.data, out), 2)  # one batch of all 48 fields kept
    sub = tmp_path / "sub"  # the same fields but fewer: another pass, whose rows are not these
    (sub / "train").mkdir(parents=True)
    lines = (kit.data / "train.csv").read_text().splitlines()
    (sub / "train.csv").write_text("\n".join(lines[:21]) + "\n")
    for fid in [line.split(",")[0] for line in lines[1:21]]:
        for f in (kit.data / "train").glob(f"{fid}_*"):
            (sub / "train" / f.name).hardlink_to(f)
    decodes["n"] = 0
    with caplog.at_level(logging.INFO, logger="locbench"):
        assert main(_predict_args(trained_run, sub, out)) == 0
    assert "rows of another command" in caplog.text and decodes["n"] == 20
    reference = tmp_path / "reference.csv"
    assert main(_predict_args(trained_run, sub, reference)) == 0
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.slow  # a locbench subprocess, killed
def test_evaluate_killed_mid_way_continues_to_the_same_result(trained_run, kit, tmp_path, decodes):
    args = ["evaluate", str(trained_run), "--split", "all", "--device", "cpu", "--workers", "0"]
    reference = tmp_path / "reference.json"
    assert main([*args, "--out", str(reference)]) == 0
    out = tmp_path / "e.json"
    _killed_at_batch([*args, "--out", str(out)], 2)
    assert partial_path(out).stat().st_size == HEADER_BYTES + BATCH * 19 * 4
    decodes["n"] = 0
    assert main([*args, "--out", str(out)]) == 0
    assert decodes["n"] == 48 - BATCH
    assert out.read_bytes() == reference.read_bytes() and not partial_path(out).exists()


def test_loader_workers_give_the_same_bytes_and_progress_has_throughput(trained_run, kit, tmp_path, caplog):
    one, two = tmp_path / "w0.csv", tmp_path / "w2.csv"
    assert main(_predict_args(trained_run, kit.data, one)) == 0
    with caplog.at_level(logging.INFO, logger="locbench"):
        assert main([*_predict_args(trained_run, kit.data, two)[:-1], "2"]) == 0
    assert one.read_bytes() == two.read_bytes()
    lines = [r.getMessage() for r in caplog.records if "fields/s" in r.getMessage()]
    assert lines[0].startswith("16/48 fields") and "ETA" in lines[0]
    assert lines[-1].startswith("48 fields in ")


def test_row_log_keeps_whole_batches_and_refuses_none(tmp_path):
    path = tmp_path / ".x.partial"
    log = RowLog(path, key="a", columns=3)
    assert log.open(multiple=2) == 0
    rows = np.arange(15, dtype=np.float32).reshape(5, 3)
    log.append(rows[:2])
    log.append(rows[2:])
    assert log.open(multiple=2) == 4  # the 5th row is past the last whole batch of 2: cut off
    assert np.array_equal(log.read(), rows[:4])
    assert RowLog(path, key="b", columns=3).open() == 0  # another key: started over
    assert RowLog(path, key="b", columns=3).read().shape == (0, 3)
    with pytest.raises(ValueError):
        log.append(np.zeros((1, 4)))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_image_is_named_with_loader_workers_too(trained_run, kit, tmp_path, capsys, workers):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train.csv").write_bytes((kit.data / "train.csv").read_bytes())
    for f in (kit.data / "train").iterdir():
        (data / "train" / f.name).hardlink_to(f)
    fid = (data / "train.csv").read_text().splitlines()[1 + 40].split(",")[0]  # field 41: in the third batch
    bad = data / "train" / f"{fid}_green.png"
    bad.unlink()
    bad.write_bytes(b"")  # a file of its own: the shared dataset's is untouched
    out = tmp_path / "p.csv"
    assert main([*_predict_args(trained_run, data, out)[:-1], workers]) == 2
    err = capsys.readouterr().err
    assert bad.name in err and "empty" in err and "Traceback" not in err
    assert not out.exists() and partial_path(out).stat().st_size == HEADER_BYTES + 2 * BATCH * 19 * 4
