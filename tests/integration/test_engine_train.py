"""`locbench train / evaluate / predict` end to end on tiny synthetic data: the run-folder contract
(docs/ARCHITECTURE.md), determinism, divergence and the refusals that protect a run folder."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import yaml

from locbench.cli import main
from locbench.config import load_config
from locbench.engine.fit import RunDiverged, train
from locbench.store.atomic import read_jsonl

pytest_plugins = ["fixtures.synth_data"]

# evaluate's per-class keys (summary.json adds threshold_source)
PER_CLASS_KEYS = {"ap", "f1", "f1_tuned", "precision", "recall", "support", "threshold"}


def test_train_cli_writes_the_run_folder_contract(kit, tmp_path, capsys, run_contract):
    run = tmp_path / "run"
    over = kit.overrides()
    del over["train.epochs"]
    args = ["train", "--out", str(run), "--epochs", "2", "--channels", "rgby", *kit.set_args(over)]
    assert main(args) == 0
    assert f"run folder: {run}" in capsys.readouterr().out
    run_contract(run, epochs=2)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["channels"] == "rgby" and saved["model"]["backbone"] == "test_resnet"
    meta = json.loads((run / "checkpoints" / "best.json").read_text())
    assert meta["in_chans"] == 4 and meta["channels"] == ["red", "green", "blue", "yellow"]
    assert "training test_resnet" in (run / "train.log").read_text()


def test_the_shared_trained_run_follows_the_contract(trained_run, run_contract):
    run_contract(trained_run, epochs=2)


def test_evaluate_writes_json_prints_table_and_matches_training(trained_run, capsys, one_thread):
    assert main(["evaluate", str(trained_run), "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "macro" in out.lower() and "metrics written to" in out
    assert "the run's test part" in out and "tuned on the run's validation part" in out
    # by default the run's test part, with the numbers its summary holds
    result = json.loads((trained_run / "eval" / "test.json").read_text())
    summary = json.loads((trained_run / "summary.json").read_text())
    test = summary["test"]
    assert result["split"] == "test" and result["n_images"] == test["n_images"]
    assert result["tuned_f1"] == test["tuned_f1"] == "val thresholds"
    # the best model on the same images gives the same numbers as the end of training
    assert result["map"] == pytest.approx(test["map"], abs=1e-6)
    assert result["macro_f1_tuned"] == pytest.approx(test["macro_f1_tuned"], abs=1e-6)
    assert set(result["per_class"]["Nucleoplasm"]) == PER_CLASS_KEYS
    # validation: its tuned F1 cross-fitted, as in the summary
    assert main(["evaluate", str(trained_run), "--split", "val", "--device", "cpu", "--workers", "0"]) == 0
    assert "macro F1 (tuned, cross-fitted)" in capsys.readouterr().out
    val = json.loads((trained_run / "eval" / "val.json").read_text())
    assert val["map"] == pytest.approx(summary["val"]["map"], abs=1e-6)
    assert val["macro_f1_tuned"] == pytest.approx(summary["val"]["macro_f1_tuned"], abs=1e-6)


def test_evaluate_refusals_exit_2(trained_run, synth_2018_dir, capsys):
    assert main(["evaluate", str(trained_run), "--split", "holdout", "--device", "cpu", "--workers", "0"]) == 2
    assert "has no part 'holdout'" in capsys.readouterr().err
    assert main(["evaluate", str(trained_run), "--data", str(synth_2018_dir), "--device", "cpu"]) == 2
    assert "differ from the run's" in capsys.readouterr().err
    assert main(["evaluate", str(trained_run.parent / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_csv(trained_run, kit, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    args = [
        "predict",
        str(trained_run),
        "--data",
        str(kit.data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    classes = json.loads((trained_run / "thresholds.json").read_text())
    assert len(rows) == 48
    assert list(rows[0]) == ["id", "labels", "names", *[f"p_{c}" for c in classes["classes"]]]
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in classes["classes"]])
        labels = [int(k) for k in row["labels"].split()]
        th = np.array(classes["thresholds"])
        # labels use the tuned thresholds (probabilities are written rounded to 6 decimals)
        assert all(probs[j] >= th[j] - 1e-6 for j in labels)
        assert all(probs[j] < th[j] + 1e-6 for j in set(range(len(th))) - set(labels))
        assert row["names"] == "|".join(classes["classes"][j] for j in labels)
    # a bare folder of stain images (no CSV) predicts the same numbers
    bare = tmp_path / "bare.csv"
    assert main([*args[:3], str(kit.data / "train"), "--out", str(bare), "--device", "cpu", "--workers", "0"]) == 0
    by_id = {r["id"]: r for r in csv.DictReader(bare.open())}
    assert len(by_id) == 48
    for row in rows[:5]:
        assert by_id[row["id"]]["p_Nucleoplasm"] == row["p_Nucleoplasm"]


def test_predict_kaggle2018_format(kit, synth_2018_dir, tmp_path, run_contract):
    run = train(load_config(None, kit.overrides(synth_2018_dir)), tmp_path / "run2018")
    summary = run_contract(run, epochs=1, n_classes=28)
    assert "Microtubule organizing center" in summary["val"]["per_class"]
    out = tmp_path / "submission.csv"
    args = ["predict", str(run), "--data", str(synth_2018_dir), "--out", str(out), "--format", "kaggle2018"]
    assert main([*args, "--device", "cpu", "--workers", "0"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "Id,Predicted" and len(lines) == 25
    ids = [line.split(",")[0] for line in lines[1:]]
    assert ids == [r["Id"] for r in csv.DictReader((synth_2018_dir / "train.csv").open())]
    for line in lines[1:]:
        labels = line.split(",")[1].split()
        assert all(0 <= int(k) < 28 for k in labels)


def test_same_seed_same_numbers_other_seed_differs(trained_run, kit, tmp_path):
    again = train(load_config(None, kit.overrides(train__epochs=2)), tmp_path / "again")
    first, second = read_jsonl(trained_run / "metrics.jsonl"), read_jsonl(again / "metrics.jsonl")
    for key in ("train/loss", "val/loss", "val/map"):
        assert [r[key] for r in first] == [r[key] for r in second]
    a, b = kit.read_npz(trained_run / "predictions" / "val.npz"), kit.read_npz(again / "predictions" / "val.npz")
    assert np.array_equal(a["probs"], b["probs"]) and np.array_equal(a["ids"], b["ids"])

    other = train(load_config(None, kit.overrides(train__epochs=2, train__seed=1)), tmp_path / "s1")
    c = kit.read_npz(other / "predictions" / "val.npz")
    assert [r["train/loss"] for r in read_jsonl(other / "metrics.jsonl")] != [r["train/loss"] for r in first]
    assert np.array_equal(c["ids"], a["ids"])  # train.seed alone keeps the split (data.split_seed is separate)
    assert not np.array_equal(c["probs"], a["probs"])


def test_existing_run_folder_without_resume_exits_2(trained_run, kit, capsys):
    before = (trained_run / "metrics.jsonl").read_bytes()
    args = ["train", "--out", str(trained_run), *kit.set_args(kit.overrides(train__epochs=2))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run (status: done)" in err and "--resume" in err
    assert (trained_run / "metrics.jsonl").read_bytes() == before
    assert (trained_run / "status").read_text().strip() == "done"


def test_divergence_is_recorded_and_exits_3(kit, tmp_path, capsys):
    run = tmp_path / "div"
    over = kit.overrides(optim__name="sgd")
    assert main(["train", "--out", str(run), *kit.set_args(over), "--set", "optim.lr=1e6"]) == 3
    err = capsys.readouterr().err
    assert "training loss became nan in epoch 1" in err and "optim.clip_grad" in err
    assert (run / "status").read_text().strip() == "diverged"
    info = json.loads((run / "status.json").read_text())
    assert info["status"] == "diverged" and "lower the learning rate" in info["reason"]
    assert not (run / "summary.json").exists()


def test_nan_loss_diverges(kit, tmp_path, monkeypatch):
    from locbench.losses.bce import BCELoss

    monkeypatch.setattr(BCELoss, "elementwise", lambda self, x, y: x * float("nan"))
    with pytest.raises(RunDiverged) as e:
        train(load_config(None, kit.overrides()), tmp_path / "nan")
    assert e.value.exit_code == 3
    assert (tmp_path / "nan" / "status").read_text().strip() == "diverged"


def test_unavailable_device_exits_2(kit, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    over = kit.overrides()
    over.pop("train.device")
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cuda", *kit.set_args(over)]) == 2
    assert "CUDA is not available here; use --device cpu" in capsys.readouterr().err


def test_too_few_images_is_a_clear_error(kit, tmp_path):
    from locbench.errors import LocbenchError

    subset = tmp_path / "two"
    subset.mkdir()
    (subset / "train").symlink_to(kit.data / "train")
    lines = (kit.data / "train.csv").read_text().splitlines()
    (subset / "train.csv").write_text("\n".join(lines[:3]) + "\n")
    over = kit.overrides(data__path=str(subset), data__cache=False, data__test_frac=0)
    with pytest.raises(LocbenchError, match=r"data.val_frac=0.2 .*too few images.*of the 2 images .* 1 train, 1 val"):
        train(load_config(None, over), tmp_path / "few")
    assert not (tmp_path / "few").exists()  # refused before the run folder is made


def test_train_log_gets_info_lines_without_flooding_a_quiet_caller(kit, tmp_path, caplog):
    # no logging set up at INFO (a submitit job, `locbench -q`, a library caller): the file still gets the epochs
    caplog.set_level(logging.WARNING)
    run = train(load_config(None, kit.overrides()), tmp_path / "quiet")
    text = (run / "train.log").read_text()
    assert "epoch 1/1" in text and "done: best epoch 1" in text
    assert not [r for r in caplog.records if r.name.startswith("locbench") and r.levelno < logging.WARNING]
    assert logging.getLogger("locbench").propagate and logging.getLogger("locbench").handlers == []
