"""Resuming: an interrupted run ends with the same numbers as an uninterrupted one; what resume refuses."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from locbench.cli import main
from locbench.config import load_config
from locbench.engine.fit import train
from locbench.errors import LocbenchError
from locbench.store.atomic import read_jsonl
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data"]

#: metrics that must match exactly; times and throughput naturally differ
SAME = ("epoch", "train/loss", "val/loss", "val/macro_f1", "val/map", "lr")


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, synth_dir, cache_dir):
    """An uninterrupted 3-epoch run (cutmix, so the mixer's global-RNG draws are part of what must match)."""
    import torch
    from fixtures.synth_data import Kit

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        over = Kit(synth_dir, cache_dir).overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
        return train(load_config(None, over), tmp_path_factory.mktemp("resume") / "full")
    finally:
        torch.set_num_threads(before)


def _probs(run) -> np.ndarray:
    with np.load(run / "predictions" / "val.npz") as z:
        return z["probs"]


def assert_same_run(a, b) -> None:
    ma, mb = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [{k: r[k] for k in SAME} for r in ma] == [{k: r[k] for k in SAME} for r in mb]
    assert np.array_equal(_probs(a), _probs(b))
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert sa["best_epoch"] == sb["best_epoch"] and sa["epochs_run"] == sb["epochs_run"] == 3
    assert sa["val"]["map"] == sb["val"]["map"] and sa["val"]["macro_f1_tuned"] == sb["val"]["macro_f1_tuned"]
    assert json.loads((a / "thresholds.json").read_text()) == json.loads((b / "thresholds.json").read_text())
    assert RunDir(b).status() == "done"


def test_two_epochs_then_resume_to_three_matches_uninterrupted(three_epochs, kit, tmp_path):
    over = kit.overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
    run = tmp_path / "split"
    train(load_config(None, dict(over, **{"train.epochs": 2})), run)
    assert len(read_jsonl(run / "metrics.jsonl")) == 2 and RunDir(run).status() == "done"
    train(load_config(None, over), run, resume=True)  # only train.epochs changed: allowed
    assert_same_run(three_epochs, run)


def _simulate_kill_in_epoch_3(run) -> None:
    """What a kill during epoch 3, after its metrics line, leaves: no epoch-3 checkpoint, status running."""
    ckpt = run / "checkpoints"
    for suffix in (".json", ".safetensors"):
        (ckpt / f"epoch-0003{suffix}").unlink()
    for name in ("summary.json", "thresholds.json"):
        (run / name).unlink()
    RunDir(run).set_status("running")


def test_killed_run_resumes_from_its_last_checkpoint(three_epochs, kit, tmp_path, caplog):
    run = shutil.copytree(three_epochs, tmp_path / "killed")
    _simulate_kill_in_epoch_3(run)
    assert len(read_jsonl(run / "metrics.jsonl")) == 3  # the lost epoch's line is still there
    caplog.set_level(logging.INFO, logger="locbench")
    over = kit.overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
    assert main(["train", "--out", str(run), "--resume", *kit.set_args(over)]) == 0
    assert "resuming" in caplog.text and "after epoch 2" in caplog.text
    assert_same_run(three_epochs, run)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(three_epochs, kit, tmp_path, caplog):
    run = shutil.copytree(three_epochs, tmp_path / "corrupt")
    blob = run / "checkpoints" / "epoch-0003.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the size is right, the checksum is not
    blob.write_bytes(bytes(data))
    for name in ("summary.json", "thresholds.json"):
        (run / name).unlink()
    RunDir(run).set_status("running")
    caplog.set_level(logging.INFO, logger="locbench")
    over = kit.overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
    train(load_config(None, over), run, resume=True)
    assert "epoch-0003.safetensors is truncated or corrupt" in caplog.text
    assert "after epoch 2" in caplog.text
    assert_same_run(three_epochs, run)


def test_resume_of_a_finished_run_only_rewrites_the_summary(three_epochs, kit, tmp_path):
    run = shutil.copytree(three_epochs, tmp_path / "done")
    before = (run / "metrics.jsonl").read_text()
    over = kit.overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
    train(load_config(None, over), run, resume=True)
    assert (run / "metrics.jsonl").read_text() == before
    assert_same_run(three_epochs, run)


def test_resume_with_a_changed_config_is_refused(three_epochs, kit, tmp_path, capsys):
    run = shutil.copytree(three_epochs, tmp_path / "changed")
    status_before = (run / "status.json").read_text()
    over = kit.overrides(train__epochs=3, augment__name="cutmix", model__dropout=0.2)
    with pytest.raises(LocbenchError, match=r"configuration differs from the saved one in loss.name"):
        train(load_config(None, dict(over, **{"loss.name": "focal"})), run, resume=True)
    args = ["train", "--out", str(run), "--resume", *kit.set_args(dict(over, **{"optim.lr": 0.01}))]
    assert main(args) == 2
    assert "differs from the saved one in optim.lr" in capsys.readouterr().err
    assert (run / "status.json").read_text() == status_before  # the refused attempt leaves the folder alone
    # keys that do not change the numbers may differ
    train(load_config(None, dict(over, **{"data.workers": 0, "log.progress": "bar"})), run, resume=True)


def test_resume_without_any_checkpoint_starts_over(kit, tmp_path):
    run = tmp_path / "early"
    train(load_config(None, kit.overrides()), run)
    shutil.rmtree(run / "checkpoints")
    RunDir(run).set_status("running")
    train(load_config(None, kit.overrides()), run, resume=True)
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    assert RunDir(run).status() == "done"


def test_more_epochs_on_resume_is_refused_under_a_cosine_schedule(kit, tmp_path):
    # the cosine curve spans all epochs: epochs 1-2 of a 2-epoch run followed another curve than a 3-epoch run's
    run = tmp_path / "cosine"
    over = kit.overrides(optim__schedule="cosine")
    train(load_config(None, over), run)
    with pytest.raises(LocbenchError, match=r"train.epochs 1 -> 2: its cosine learning-rate schedule depends"):
        train(load_config(None, dict(over, **{"train.epochs": 2})), run, resume=True)
    assert load_config(run / "config.yaml").train.epochs == 1


def test_resume_accepts_the_same_split_at_another_path_only(kit, tmp_path):
    from locbench.data.formats import load_data_table
    from locbench.data.splits import make_split, save_split

    run = tmp_path / "r"
    train(load_config(None, kit.overrides()), run)
    copy = shutil.copy(run / "split.json", tmp_path / "moved-split.json")  # a moved sweep folder's split file
    RunDir(run).set_status("running")
    train(load_config(None, kit.overrides(data__split=str(copy))), run, resume=True)
    assert RunDir(run).status() == "done"

    cfg = load_config(None, kit.overrides())
    other = save_split(
        make_split(load_data_table(cfg.data), seed=5, val_frac=0.2, test_frac=0.0, group_col=None),
        tmp_path / "other-split.json",
    )
    with pytest.raises(LocbenchError, match=r"differs from the saved one in data.split"):
        train(load_config(None, kit.overrides(data__split=str(other))), run, resume=True)
