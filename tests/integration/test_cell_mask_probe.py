"""Cell-level probes pooling each cell from the whole field (model.pool=cell_mask) end to end: one embedding pass
shared by the heads, evaluate and predict giving the training pass's probabilities, a normal run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from locbench.cli import main
from locbench.config import load_config
from locbench.engine import embed
from locbench.engine.fit import train
from locbench.errors import LocbenchError
from locbench.infer import evaluate
from locbench.report.build import build_report

pytest_plugins = ["fixtures.synth_data"]
pytestmark = pytest.mark.slow

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
    train(load_config(None, {**over, "model.head": "mlp", "train.seed": 1}), tmp_path / "runs" / "mlp")
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

    # a normal run folder: the report reads it
    report = build_report(tmp_path / "runs", n_resamples=20)
    assert report.exists()
