"""Cell level end to end: train one epoch, the run folder contract, cell evaluation, blending, a submission,
and a sweep with the level as an axis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locbench.cells.submission import read_submission, validate_submission
from locbench.cli import main
from locbench.config import load_config
from locbench.data.splits import load_split
from locbench.data.synth import synthesize
from locbench.engine.fit import train
from locbench.errors import LocbenchError
from locbench.infer.cells import evaluate_cells

TINY = {
    "model.backbone": "test_resnet",
    "data.img_size": 32,
    "data.channels": "rgby",
    "data.workers": 0,
    "data.val_frac": 0.3,
    "data.test_frac": 0,  # 10 fields: too few for a test part (test_test_part.py covers cell runs with one)
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.device": "cpu",
    "log.progress": "lines",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny synthetic dataset, one cell-level and one image-level run on it (one epoch each)."""
    root = tmp_path_factory.mktemp("cellmode")
    data = synthesize(root / "data", images=10, size=64, cells_per_field=(2, 3), seed=7)
    sets = {**TINY, "data.path": str(data), "data.cache_dir": str(root / "cache")}
    cell = train(load_config(overrides={**sets, "train.level": "cell"}), root / "cell")
    image = train(load_config(overrides=sets), root / "image")
    return data, cell, image


def test_cell_run_folder_contract(runs):
    data, cell, _ = runs
    assert (cell / "status").read_text().strip() == "done"
    for name in ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "thresholds.json", "split.json"):
        assert (cell / name).is_file(), name
    assert (cell / "checkpoints" / "best.safetensors").is_file()
    preds = np.load(cell / "predictions" / "val.npz")
    ids = [str(i) for i in preds["ids"]]
    val_fields = set(load_split(cell / "split.json").parts["val"])
    assert ids and all(i.rsplit("/", 1)[0] in val_fields and i.rsplit("/", 1)[1].isdigit() for i in ids)
    n_val_cells = sum(
        1 for line in (data / "cells.csv").read_text().splitlines()[1:] if line.split(",")[0] in val_fields
    )
    assert preds["probs"].shape == (n_val_cells, 19) == preds["targets"].shape
    summary = json.loads((cell / "summary.json").read_text())
    assert summary["val"]["n_images"] == n_val_cells


def test_evaluate_cell_level_and_image_baseline(runs, capsys):
    _, cell, image = runs
    assert main(["evaluate", str(cell), "--workers", "0", "--device", "cpu"]) == 0  # a cell run: cell level
    printed = capsys.readouterr().out
    assert "mAP" in printed and "IoU >= 0.6" in printed and "protocol: challenge" in printed
    result = json.loads((cell / "eval" / "cell_val.json").read_text())
    # 3 validation fields: the number comes with its warning, printed and written
    assert result["sample_note"].startswith(f"n = {result['n_fields']} fields: too few to rely on")
    assert f"warning: val cell mAP {result['map']:.4f} ({result['sample_note']})" in printed
    assert result["level"] == "cell" and 0.0 <= result["map"] <= 1.0 and result["protocol"] == "challenge"
    assert result["masks"] == result["truth_masks"] and "segmentation" not in result
    stored = np.load(cell / "eval" / "cell_val.npz")
    np.testing.assert_array_equal(stored["ids"], np.load(cell / "predictions" / "val.npz")["ids"])

    baseline = evaluate_cells(image, device="cpu", workers=0)
    assert baseline["level"] == "image" and baseline["n_pred_cells"] == result["n_pred_cells"]
    # The image run's field probabilities are copied to every cell of the field, except for classes it never
    # trained on (7 training fields here): those are never predicted, NaN for every cell.
    probs = np.load(Path(baseline["path"]).with_suffix(".npz"))["probs"]
    never = json.loads((image / "summary.json").read_text())["untrainable_classes"]
    assert never and baseline["untrainable_classes"] == never
    names = json.loads((image / "thresholds.json").read_text())["classes"]
    assert np.isnan(probs).all(axis=0).tolist() == [c in never for c in names]
    assert all(baseline["per_class"][c]["num_pred"] == 0 for c in never)
    fields = [i.rsplit("/", 1)[0] for i in np.load(Path(baseline["path"]).with_suffix(".npz"))["ids"]]
    for f in set(fields):
        rows = probs[[k for k, g in enumerate(fields) if g == f]]
        assert np.allclose(rows, rows[0], equal_nan=True)

    # Blending with weight 1 gives exactly the image run's per-cell predictions and score.
    full = evaluate_cells(cell, image_run=image, blend=1.0, device="cpu", workers=0, out=cell / "eval" / "b.json")
    blended = np.load(cell / "eval" / "b.npz")["probs"]
    cell_never = json.loads((cell / "summary.json").read_text())["untrainable_classes"]
    # the cell run's own untrainable classes are never predicted, whatever the blended run says
    assert np.isnan(blended[:, [c in cell_never for c in names]]).all()
    keep = [c not in cell_never and c not in never for c in names]
    np.testing.assert_allclose(blended[:, keep], probs[:, keep], atol=1e-6)
    assert full["map"] == pytest.approx(baseline["map"]) and full["blend"] == 1.0


def test_cell_metric_protocol_is_chosen_and_recorded(runs, capsys):
    _, cell, _ = runs
    out = cell / "eval" / "strict.json"
    args = ["cells", "evaluate", str(cell), "--protocol", "strict", "--workers", "0", "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    assert "protocol: strict" in capsys.readouterr().out
    strict = json.loads(out.read_text())
    challenge = evaluate_cells(cell, device="cpu", workers=0, out=cell / "eval" / "challenge.json")
    assert strict["protocol"] == "strict" and challenge["protocol"] == "challenge"
    # The challenge protocol scores a subset of the strict one's predictions: what it leaves out is counted.
    for name, row in strict["per_class"].items():
        assert row["num_gt"] == challenge["per_class"][name]["num_gt"] and row["ignored"] == 0
        assert row["num_pred"] == challenge["per_class"][name]["num_pred"] + challenge["per_class"][name]["ignored"]
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown protocol
        main(["evaluate", str(cell), "--level", "cell", "--protocol", "kaggle"])
    assert exit_info.value.code == 2
    with pytest.raises(LocbenchError, match="unknown cell-metric protocol 'kaggle'; use one of challenge, strict"):
        evaluate_cells(cell, protocol="kaggle", device="cpu", workers=0)


def test_cell_submission_validates(runs, tmp_path, capsys):
    data, cell, _ = runs
    out = tmp_path / "submission.csv"
    args = ["predict", str(cell), "--level", "cell", "--data", str(data), "--out", str(out), "--workers", "0"]
    assert main([*args, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    never = json.loads((cell / "summary.json").read_text())["untrainable_classes"]
    assert never and "validated" in printed and "never predicted (untrainable" in printed
    rows = read_submission(out)
    ids = [line.split(",")[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
    assert [r.image_id for r in rows] == ids and all((r.width, r.height) == (64, 64) for r in rows)
    n_cells = len((data / "cells.csv").read_text().splitlines()) - 1
    # one triple per cell and class, except the classes the run never trained on: never predicted
    assert validate_submission(out, num_classes=19, ids=ids) == {
        "images": 10,
        "triples": (19 - len(never)) * n_cells,
        "cells": n_cells,
    }
    names = json.loads((cell / "thresholds.json").read_text())["classes"]
    never_idx = {str(names.index(c)) for c in never}
    assert all(not set(r.prediction_string.split()[0::3]) & never_idx for r in rows)


def test_sweep_with_level_axis(runs, tmp_path):
    from locbench.sweep.runner import run_sweep

    data, _, _ = runs
    spec = tmp_path / "levels.yaml"
    spec.write_text("name: levels\nconfig: {train: {max_steps: 1}}\ngrid:\n  train.level: [image, cell]\nseeds: [0]\n")
    counts = run_sweep(spec, tmp_path / "sweep", data=str(data), overrides={**TINY, "data.cache_dir": str(tmp_path)})
    assert counts == {"done": 2}
    levels = {}
    for folder in (tmp_path / "sweep").iterdir():
        if (folder / "sweep_point.json").is_file():
            record = json.loads((folder / "sweep_point.json").read_text())
            levels[record["axes"]["train.level"]] = np.load(folder / "predictions" / "val.npz")["ids"]
    assert set(levels) == {"image", "cell"}
    assert all("/" in str(i) for i in levels["cell"]) and not any("/" in str(i) for i in levels["image"])
    # One split file serves both levels: the cells' fields are exactly the image run's validation fields.
    assert {str(i).rsplit("/", 1)[0] for i in levels["cell"]} == {str(i) for i in levels["image"]}


def test_cell_level_test_time_augmentation(runs, capsys):
    """``cells evaluate --tta d8``: each cell's probability is the mean over the 8 views of its crop, and says so."""
    import torch

    from locbench.cells.crops import CellCropDataset
    from locbench.data.formats import table_from_config
    from locbench.engine.data import to_unit
    from locbench.infer import load_run
    from locbench.models import apply_view, tta_views

    data, cell, _ = runs
    out = cell / "eval" / "d8.json"
    args = ["cells", "evaluate", str(cell), "--tta", "d8", "--workers", "0", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert "test-time augmentation: d8 (x8 forward passes per image)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["tta"] == "d8"
    stored = np.load(out.with_suffix(".npz"))

    # the same cells' crops, through the run's single-pass model on each view by hand
    run = load_run(cell)
    table = table_from_config(run.config.data)
    masks = Path(result["masks"])
    ds = CellCropDataset(
        table,
        masks,
        np.arange(len(table)),
        channels=run.meta["channels"],
        crop_size=run.config.data.img_size,
        margin=run.config.cell.margin,
        masked=run.config.cell.masked,
    )
    where = {f"{f}/{c}": k for k in range(len(ds)) for f, c in [ds.meta(k)]}
    rows = [where[str(i)] for i in stored["ids"]]
    x = torch.stack([to_unit(ds[k][0]) for k in rows])
    model = run.model("cpu", tta=False)
    with torch.no_grad():
        views = torch.stack([torch.sigmoid(model(apply_view(x, v))) for v in tta_views("d8")])
    want, single = views.double().mean(0).numpy(), views[0].numpy()
    keep = ~np.isnan(stored["probs"]).any(axis=0)
    keep &= np.asarray([c != "Negative" for c in run.class_names])  # the Negative rule is applied on top
    np.testing.assert_allclose(stored["probs"][:, keep], want[:, keep], atol=1e-5)
    assert np.abs(want - single)[:, keep].max() > 1e-4  # the views differ: the test can tell d8 from none
