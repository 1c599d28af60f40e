"""The held-out test part: made by default, read once at the end of training, never by anything chosen in training;
a run killed before its test block is finished by --resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from locbench.cli import main
from locbench.config import load_config
from locbench.data.splits import MIN_TEST, load_split
from locbench.engine import checkpoint as ckpt
from locbench.engine.fit import train
from locbench.store.atomic import read_jsonl
from locbench.store.rundir import RunDir

pytest_plugins = ["fixtures.synth_data"]
pytestmark = pytest.mark.slow

#: metrics.jsonl fields that are results (not the machine's timings)
SAME = ("epoch", "train/loss", "val/loss", "val/macro_f1", "val/map", "lr")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, synth_dir, cache_dir) -> Path:
    """A 3-epoch run with the default test part (early epochs differ, so the checkpoint choice is a real one)."""
    from fixtures.synth_data import Kit, one_torch_thread

    with one_torch_thread():
        over = Kit(synth_dir, cache_dir).overrides(train__epochs=3)
        return train(load_config(None, over), tmp_path_factory.mktemp("testpart") / "clean")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _poisoned_copy(data: Path, test_ids: list[str], dest: Path) -> Path:
    """``data`` with every test field's images replaced by noise and its labels replaced by other classes."""
    shutil.copytree(data, dest)
    rng = np.random.default_rng(0)
    for fid in test_ids:
        for png in (dest / "train").glob(f"{fid}_*.png"):
            with Image.open(png) as im:
                shape = np.asarray(im).shape
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(png)
    lines = (dest / "train.csv").read_text().splitlines()
    out = [lines[0]]
    test = set(test_ids)
    for line in lines[1:]:
        fid, labels = line.split(",", 1)
        if fid in test:  # every class it does not have, and none it has
            have = {int(x) for x in labels.split("|")}
            labels = "|".join(str(c) for c in range(18) if c not in have) or "0"
        out.append(f"{fid},{labels}")
    (dest / "train.csv").write_text("\n".join(out) + "\n")
    return dest


def test_every_run_holds_out_a_stratified_test_part(clean_run):
    split = load_split(clean_run / "split.json")
    assert split.fractions["test"] == 0.2
    assert len(split.parts["test"]) >= MIN_TEST
    assert not set(split.parts["test"]) & (set(split.parts["train"]) | set(split.parts["val"]))
    summary = _summary(clean_run)
    assert summary["test"]["n_images"] == len(split.parts["test"])
    assert summary["test"]["tuned_f1"] == "val thresholds"
    assert summary["val"]["tuned_f1"] == "cross-fitted"
    with np.load(clean_run / "predictions" / "test.npz") as z:
        assert sorted(z["ids"].tolist()) == sorted(split.parts["test"])


def test_thresholds_and_checkpoint_never_read_the_test_part(clean_run, kit, synth_dir, tmp_path):
    """The same run on data whose test fields are noise with wrong labels (same split) chooses the same checkpoint,
    the same thresholds and the same validation numbers; only its test block differs."""
    test_ids = load_split(clean_run / "split.json").parts["test"]
    poisoned = _poisoned_copy(synth_dir, test_ids, tmp_path / "poisoned")
    over = kit.overrides(data=poisoned, train__epochs=3)
    over.update({"data.split": str(clean_run / "split.json"), "data.cache_dir": str(tmp_path / "cache")})
    run = train(load_config(None, over), tmp_path / "poisoned-run")

    assert (run / "thresholds.json").read_text() == (clean_run / "thresholds.json").read_text()
    got, want = read_jsonl(run / "metrics.jsonl"), read_jsonl(clean_run / "metrics.jsonl")
    assert [{k: r[k] for k in SAME} for r in got] == [{k: r[k] for k in SAME} for r in want]
    a, b = _summary(run), _summary(clean_run)
    assert a["best_epoch"] == b["best_epoch"] and a["val"] == b["val"]
    best_a, _ = ckpt.load_checkpoint(RunDir(run).best)
    best_b, _ = ckpt.load_checkpoint(RunDir(clean_run).best)
    assert all(np.array_equal(best_a["model"][k], best_b["model"][k]) for k in best_b["model"])
    with np.load(run / "predictions" / "val.npz") as x, np.load(clean_run / "predictions" / "val.npz") as y:
        assert np.array_equal(x["probs"], y["probs"])
    # the poison did reach the test part: the end-of-training test block saw it
    assert a["test"]["per_class"] != b["test"]["per_class"]
    with np.load(run / "predictions" / "test.npz") as x, np.load(clean_run / "predictions" / "test.npz") as y:
        assert not np.array_equal(x["targets"], y["targets"])


@pytest.mark.parametrize("left", ["nothing", "test predictions"])
def test_a_run_killed_before_its_test_block_is_finished_by_resume(clean_run, kit, tmp_path, left):
    """Killed after the last epoch, before summary.json (with or without predictions/test.npz written): the same
    command with --resume writes the test block the uninterrupted run wrote."""
    run = Path(shutil.copytree(clean_run, tmp_path / "killed"))
    for name in ("summary.json", "thresholds.json"):
        (run / name).unlink()
    if left == "nothing":
        (run / "predictions" / "test.npz").unlink()
    RunDir(run).set_status("running")
    assert RunDir(run).state() == "interrupted"
    over = kit.overrides(train__epochs=3)
    assert main(["train", "--out", str(run), "--resume", *kit.set_args(over)]) == 0
    assert RunDir(run).status() == "done"
    a, b = _summary(run), _summary(clean_run)
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert len(read_jsonl(run / "metrics.jsonl")) == 3  # no epoch trained again


def test_a_dataset_too_small_for_three_parts_says_so(kit, tmp_path, capsys):
    from locbench.data.synth import synthesize

    data = synthesize(tmp_path / "tiny", images=9, size=64, seed=0)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), *kit.set_args(kit.overrides(data=data))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "9 fields are too few for three parts" in err and "test part needs at least 5" in err
    assert "--set data.test_frac=0" in err and "cross-fitted" in err and "Traceback" not in err
    # the way out it names works
    assert main([*args[:4], str(tmp_path / "run0"), *args[5:], "--set", "data.test_frac=0"]) == 0
    summary = _summary(tmp_path / "run0")
    assert "test" not in summary and summary["val"]["tuned_f1"] == "cross-fitted"


def test_cell_runs_hold_out_whole_fields(kit, tmp_path, synth_dir):
    over = kit.overrides(train__level="cell", data__channels="rgby", data__val_frac=0.3)
    run = train(load_config(None, over), tmp_path / "cell")
    split = load_split(run / "split.json")
    with np.load(run / "predictions" / "test.npz") as z:
        ids = z["ids"].tolist()
    fields = {i.split("/")[0] for i in ids}  # cell ids are FIELD/CELL
    assert fields and fields <= set(split.parts["test"])
    assert _summary(run)["test"]["n_images"] == len(ids)


def test_a_synth_sweep_reports_test_part_numbers(kit, tmp_path):
    """2 configurations x 3 seeds with the default test part: the report's headline numbers are the runs' test
    numbers, labelled as such."""
    import csv

    import yaml

    from locbench.report import build_report

    spec = {
        "name": "parts",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"img_size": 32, "workers": 0, "cache_dir": str(kit.cache_dir)},
            "optim": {"lr": 1e-3},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": {"loss.name": ["bce", "focal"]},
        "seeds": [0, 1, 2],
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    assert main(["sweep", str(tmp_path / "s.yaml"), "--out", str(out), "--data", str(kit.data)]) == 0
    build_report(out, metric="macro_f1_tuned")
    md = (out / "report.md").read_text()
    assert "primary metric test macro F1 (tuned)" in md and "test mAP" in md
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == 2 and {r["part"] for r in rows} == {"test"}
    for row in rows:
        runs = [p for p in out.iterdir() if p.name.startswith(row["point"] + "-s")]
        assert len(runs) == 3
        for m in ("map", "macro_f1", "macro_f1_tuned"):
            want = np.mean([_summary(r)["test"][m] for r in runs])
            assert float(row[f"{m}_mean"]) == pytest.approx(want, rel=1e-9), m
