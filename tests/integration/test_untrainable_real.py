"""A class with no positive training example is never predicted, on the real Kaggle 2018 fields (skipped without
them): the issue's case, Aggresome (0 training examples) predicted in 10 of 22 validation fields and 4 of 5 new
ones by a run that kept threshold 0.5 for it. docs/VALIDATION.md, "Per-class thresholds"."""

from __future__ import annotations

import csv
import json

import pytest

from locbench.cli import main
from locbench.config import load_config
from locbench.data.formats import load_table
from locbench.data.splits import load_split
from locbench.engine.fit import train
from locbench.metrics import NEVER_PREDICTED
from locbench.store.rundir import RunDir

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def k2018(real_data):
    return real_data / "kaggle2018"


@pytest.fixture(scope="module")
def run(k2018, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("untrainable")
    sets = {
        "data.path": str(k2018),
        "data.cache_dir": str(tmp / "cache"),
        "data.img_size": 64,
        "data.workers": 0,
        "model.backbone": "test_resnet",
        "train.epochs": 1,
        "train.device": "cpu",
        "log.progress": "lines",
    }
    return train(load_config(overrides=sets), tmp / "run")


@pytest.fixture(scope="module")
def untrainable(k2018, run) -> list[str]:
    """The classes without a positive among the run's training fields, counted here from split.json and the CSV."""
    table = load_table(k2018)
    train_rows = load_split(RunDir(run).split).indices(table, "train")
    counts = table.targets[train_rows].sum(axis=0)
    names = [c for c, k in zip(table.scheme.classes, counts, strict=True) if k == 0]
    assert names, "every class occurs in this split's training part: the test would show nothing"
    return names


def test_summary_lists_untrainable_classes(run, untrainable):
    folder = RunDir(run)
    summary = folder.read_summary()
    assert summary["untrainable_classes"] == untrainable
    assert all(summary["train_positives"][c] == 0 for c in untrainable)
    assert sum(k > 0 for k in summary["train_positives"].values()) == 28 - len(untrainable)
    per_class = summary["val"]["per_class"]
    for name, row in per_class.items():
        source = row["threshold_source"]
        if name in untrainable:
            assert source == "untrainable" and row["threshold"] == NEVER_PREDICTED
        elif row["support"] < 3:
            assert source == "fallback" and row["threshold"] == 0.5
        else:
            assert source == "tuned"
    # 101 fields, 20 % validation: too few to rely on, and said so
    assert summary["val"]["n_fields"] == summary["val"]["n_images"] < 30
    assert summary["val"]["sample_note"].startswith(f"n = {summary['val']['n_fields']} fields: too few to rely on")
    assert "too few to rely on" in (run / "train.log").read_text()
    # thresholds.json is plain JSON (no Infinity) with the number every reader compares against
    saved = json.loads((run / "thresholds.json").read_text())
    assert [t for c, t in zip(saved["classes"], saved["thresholds"], strict=True) if c in untrainable] == [
        NEVER_PREDICTED
    ] * len(untrainable)


def test_never_predicted_on_validation(run, untrainable, capsys):
    folder = RunDir(run)
    names, thr = folder.read_thresholds()
    preds = folder.read_predictions("val")
    cols = [names.index(c) for c in untrainable]
    # the failure this guards against: the model scores untrainable classes >= 0.5 on validation fields (measured:
    # Aggresome in 22 of 22), so a 0.5 threshold would predict them
    assert (preds.probs[:, cols] >= 0.5).any()
    assert not (preds.probs[:, cols] >= thr[cols]).any()
    assert main(["evaluate", str(run), "--device", "cpu", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "never predicted (untrainable" in out and all(c in out for c in untrainable)
    # evaluate scores the run's test part by default, with the same warning
    assert "warning: test mAP" in out and "too few to rely on" in out
    result = json.loads((run / "eval" / "test.json").read_text())
    assert result["untrainable_classes"] == untrainable
    for c in untrainable:
        row = result["per_class"][c]
        assert row["threshold"] == NEVER_PREDICTED
        assert row["f1_tuned"] in (0.0, None)  # never predicted: F1 0 where it occurs, undefined where not


def test_never_predicted_on_new_images(run, k2018, untrainable, tmp_path, capsys):
    # five fields as a bare folder of stain images (no CSV): new images to predict
    new = tmp_path / "new"
    new.mkdir()
    ids = load_table(k2018).ids[-5:]
    for fid in ids:
        for png in (k2018 / "train").glob(f"{fid}_*.png"):
            (new / png.name).symlink_to(png)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run), "--data", str(new), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "never predicted (untrainable" in printed and all(c in printed for c in untrainable)
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["id"] for r in rows) == sorted(ids)
    for r in rows:
        assert not set(r["names"].split("|")) & set(untrainable)
        assert all(0.0 <= float(r[f"p_{c}"]) <= 1.0 for c in untrainable)  # probabilities are still written
    kaggle = tmp_path / "kaggle.csv"
    args = ["predict", str(run), "--data", str(new), "--out", str(kaggle), "--format", "kaggle2018", "--device", "cpu"]
    assert main(args) == 0
    names = RunDir(run).read_thresholds()[0]
    never = {str(names.index(c)) for c in untrainable}
    for r in csv.DictReader(kaggle.open()):
        assert not set(r["Predicted"].split()) & never
