"""Frozen-backbone probes end to end: embeddings computed once and shared, deterministic heads, and a probe run that
evaluate, predict, explain and the report accept, with the probabilities of its training pass; cell-level probes
pooling each cell from the whole field (model.pool=cell_mask) likewise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from locbench.cli import main
from locbench.config import load_config
from locbench.data.formats import table_from_config
from locbench.engine import embed
from locbench.engine.fit import train
from locbench.errors import LocbenchError
from locbench.infer import evaluate, field_probs, load_run
from locbench.report.build import build_report
from locbench.sweep.runner import run_sweep

pytest_plugins = ["fixtures.synth_data"]
pytestmark = pytest.mark.slow

PROBE = {"model.mode": "probe", "augment.name": "none", "model.backbone": "test_vit", "data.channels": "rgby"}
CELL_MASK = {
    "model.mode": "probe",
    "model.pool": "cell_mask",
    "train.level": "cell",
    "augment.name": "none",
    "data.channels": "rgby",
    "data.img_size": 64,  # the whole 64 px field: a 4 x 4 grid of test_vit's patches
    "train.epochs": 2,
}


@pytest.fixture
def passes(monkeypatch) -> list[str]:
    """The embedding folders computed (not reused) during the test."""
    done: list[str] = []
    real = embed._embed

    def counting(encoder, dataset, folder, *args):
        done.append(folder.name)
        return real(encoder, dataset, folder, *args)

    monkeypatch.setattr(embed, "_embed", counting)
    return done


def _probs(run: Path, part: str = "test") -> np.ndarray:
    with np.load(run / "predictions" / f"{part}.npz") as z:
        return z["probs"]


def test_probe_cells_share_embeddings_and_repeat_exactly(kit, tmp_path, passes):
    over = kit.overrides(**{k.replace(".", "__"): v for k, v in PROBE.items()}, train__epochs=2, model__head="linear")
    first = train(load_config(None, over), tmp_path / "linear-s0")
    assert len(passes) == 1
    folder = Path(kit.cache_dir) / "embeddings" / passes[0]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["backbone"] == "test_vit" and meta["pool"] == "auto" and meta["shape"][0] == 48

    # other cells of the same sweep: another head, another seed (same split), mean pooling is another cache
    train(load_config(None, {**over, "model.head": "mlp"}), tmp_path / "mlp-s0")
    train(load_config(None, {**over, "train.seed": 1}), tmp_path / "linear-s1")
    assert len(passes) == 1
    train(load_config(None, {**over, "model.pool": "mean"}), tmp_path / "linear-mean")
    assert len(passes) == 2 and passes[1] != passes[0] and "-mean-" in passes[1]

    # the same configuration again, embeddings computed afresh in another cache: the same bytes, the same run
    again = train(load_config(None, {**over, "data.cache_dir": str(tmp_path / "cache2")}), tmp_path / "again")
    assert len(passes) == 3
    np.testing.assert_array_equal(
        np.load(folder / "features.npy"), np.load(tmp_path / "cache2" / "embeddings" / passes[0] / "features.npy")
    )
    for part in ("val", "test"):
        np.testing.assert_array_equal(_probs(first, part), _probs(again, part))
    assert not np.array_equal(_probs(first), _probs(tmp_path / "linear-s1"))  # the seed changes the head

    # only the head trained: the saved backbone is the shared one
    s0 = json.loads((first / "summary.json").read_text())
    assert s0["epochs_run"] == 2 and "test" in s0


def test_probe_run_is_a_normal_run(kit, tmp_path):
    over = kit.overrides(**{k.replace(".", "__"): v for k, v in PROBE.items()}, train__epochs=2, model__head="mlp")
    run_dir = train(load_config(None, over), tmp_path / "probe")
    run = load_run(run_dir)
    table = table_from_config(run.config.data)
    with np.load(run_dir / "predictions" / "test.npz") as z:
        ids, saved = list(z["ids"]), z["probs"]
    rows = np.array([table.ids.index(i) for i in ids])
    # the whole model (frozen backbone + head) on the images gives the training pass's probabilities
    np.testing.assert_allclose(field_probs(run, table, rows, device="cpu"), saved, atol=1e-5)

    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    scored = json.loads((run_dir / "eval" / "test.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert scored["map"] == pytest.approx(summary["test"]["map"], abs=1e-4)
    # test-time augmentation at evaluate: the whole model on every view (not refused as at training)
    flipped = tmp_path / "hflip.json"
    assert main(["evaluate", str(run_dir), "--device", "cpu", "--tta", "hflip", "--out", str(flipped)]) == 0
    assert json.loads(flipped.read_text())["tta"] == "hflip"
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run_dir), "--data", str(kit.data), "--out", str(out), "--device", "cpu"]) == 0
    with out.open() as f:
        assert len(list(csv.DictReader(f))) == 48


def test_probe_sweep_and_report(kit, tmp_path):
    """model.mode is a sweep axis like any other; the report shows it as a factor."""
    spec = {
        "name": "modes",
        "config": {
            "model": {"backbone": "test_resnet", "hidden": 32},
            "data": {"img_size": 32, "workers": 0, "cache_dir": str(kit.cache_dir), "path": str(kit.data)},
            "optim": {"lr": 1e-3},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": {"model.mode": ["finetune", "probe"]},
        "overrides": [{"when": {"model.mode": "probe"}, "set": {"augment.name": "none"}}],
        "seeds": [0, 1],
    }
    import yaml

    path = tmp_path / "modes.yaml"
    path.write_text(yaml.safe_dump(spec))
    counts = run_sweep(path, tmp_path / "sweep")
    assert counts == {"done": 4}
    report = build_report(tmp_path / "sweep", n_resamples=50)
    text = report.with_suffix(".md").read_text() if report.suffix != ".md" else report.read_text()
    assert "mode=probe" in text and "mode=finetune" in text


def test_probe_resumes_to_the_numbers_of_an_uninterrupted_run(kit, tmp_path):
    over = kit.overrides(**{k.replace(".", "__"): v for k, v in PROBE.items()}, train__epochs=1)
    train(load_config(None, over), tmp_path / "resumed")
    train(load_config(None, {**over, "train.epochs": 3}), tmp_path / "resumed", resume=True)
    train(load_config(None, {**over, "train.epochs": 3}), tmp_path / "straight")
    for part in ("val", "test"):
        np.testing.assert_array_equal(_probs(tmp_path / "resumed", part), _probs(tmp_path / "straight", part))


@pytest.mark.parametrize("backbone", ["test_vit", "test_resnet"])
def test_cell_mask_probe_trains_shares_embeddings_and_predicts_as_trained(kit, tmp_path, passes, backbone, capsys):
    over = {**kit.overrides(), **CELL_MASK, "model.backbone": backbone, "model.head": "linear"}
    first = train(load_config(None, over), tmp_path / "runs" / "linear")
    assert len(passes) == 1 and "-cell_mask-" in passes[0]
    folder = Path(kit.cache_dir) / "embeddings" / passes[0]
    meta = json.loads((folder / "meta.json").read_text())
    n_cells = len((kit.data / "cells.csv").read_text().splitlines()) - 1
    assert meta["pool"] == "cell_mask" and meta["shape"][0] == n_cells and meta["items"] == 48
    assert np.isfinite(np.load(folder / "features.npy")).all()

    # another head and another seed on the same split: the embeddings are reused, not computed again
    second = train(load_config(None, {**over, "model.head": "mlp", "train.seed": 1}), tmp_path / "runs" / "mlp")
    assert len(passes) == 1

    # evaluate on the run's test part: the same cells, the training pass's probabilities
    result = evaluate(first, level="cell", device="cpu", workers=0, negative="none")
    with np.load(first / "predictions" / "test.npz") as z:
        ids, saved = list(z["ids"]), z["probs"]
    with np.load(Path(result["path"]).with_suffix(".npz")) as z:
        assert list(z["ids"]) == ids
        got = z["probs"]
    trained = ~np.isnan(got).all(0)  # untrainable classes are never predicted (NaN)
    assert trained.any()
    np.testing.assert_allclose(got[:, trained], saved[:, trained], atol=1e-5)

    # the CLI: cell metric and a competition submission
    assert main(["cells", "evaluate", str(first), "--workers", "0", "--device", "cpu"]) == 0
    out = tmp_path / "submission.csv"
    args = ["cells", "predict", str(first), "--data", str(kit.data), "--out", str(out), "--workers", "0"]
    assert main([*args, "--device", "cpu"]) == 0
    assert "validated" in capsys.readouterr().out
    with pytest.raises(LocbenchError, match=r"--tta flips does not apply to .*model.pool=cell_mask.*use --tta none"):
        evaluate(first, level="cell", device="cpu", workers=0, tta="flips")

    # an ensemble of the two: its cells' probabilities are its members' mean, as stored when it was made
    ensemble = tmp_path / "ensemble"
    assert main(["ensemble", str(first), str(second), "--out", str(ensemble)]) == 0
    result = evaluate(ensemble, level="cell", device="cpu", workers=0, negative="none")
    with np.load(ensemble / "predictions" / "test.npz") as z, np.load(Path(result["path"]).with_suffix(".npz")) as e:
        assert list(e["ids"]) == list(z["ids"])
        keep = ~np.isnan(e["probs"]).all(0)
        np.testing.assert_allclose(e["probs"][:, keep], z["probs"][:, keep], atol=1e-5)

    # a normal run folder: the report reads it
    report = build_report(tmp_path / "runs", n_resamples=20)
    assert report.exists()
