"""The embedding cache of probes (engine/embed.py), pooling (models/pooling.py) and the probe config rules."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import TensorDataset

from locbench.config import ModelConfig, load_config
from locbench.engine import embed
from locbench.engine.embed import build_embeddings, weights_digest
from locbench.errors import LocbenchError
from locbench.models import build_model
from locbench.sweep.grid import expand


class Counting(nn.Module):
    """A tiny encoder that counts the images it embeds (and can fail after some batches)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)
        self.images, self.batches, self.fail_after = 0, 0, fail_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("killed mid-way")
        self.images += len(x)
        self.batches += 1
        return self.conv(x).mean((2, 3))


def _items(n: int = 23) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.zeros(n, 2))


def _build(folder, enc, ds, **kw):
    return build_embeddings(
        enc, ds, folder=folder, dim=5, meta={"what": "test"}, device=torch.device("cpu"), batch_size=4, **kw
    )


def test_embeddings_once_then_reused(tmp_path):
    ds, enc = _items(), Counting()
    first = _build(tmp_path / "e", enc, ds)
    assert enc.images == len(ds) and first.array.shape == (len(ds), 5)
    again = _build(tmp_path / "e", enc, ds)
    assert enc.images == len(ds)  # nothing embedded the second time
    np.testing.assert_array_equal(first.array, again.array)
    with torch.no_grad():
        want = enc.conv(torch.stack([x for x, _ in ds]).float() / 255).mean((2, 3)).numpy()
    np.testing.assert_allclose(first.array, want, rtol=1e-5, atol=1e-6)
    meta = json.loads((tmp_path / "e" / "meta.json").read_text())
    assert meta["shape"] == [len(ds), 5] and meta["what"] == "test" and meta["batch_size"] == 4


def test_embedding_resumes_after_a_failure_mid_way(tmp_path):
    ds = _items()
    whole = np.array(_build(tmp_path / "whole", Counting(), ds).array)
    seen = []
    with pytest.raises(RuntimeError, match="killed mid-way"):
        _build(tmp_path / "e", Counting(fail_after=3), ds, on_batch=seen.append)
    assert seen == [4, 8, 12]
    assert not (tmp_path / "e" / "complete").exists()
    assert np.load(tmp_path / "e" / "done.npy").sum() == 12  # the finished batches are recorded
    enc = Counting()
    resumed = _build(tmp_path / "e", enc, ds)
    assert enc.images == len(ds) - 12  # only the batches not done
    np.testing.assert_array_equal(resumed.array, whole)  # same batches as an uninterrupted pass: same bytes


def _embed_then_die(folder: str) -> None:
    """A child process that embeds two batches, then is killed (no finally block runs, nothing is cleaned up)."""

    def die(done: int) -> None:
        if done >= 8:
            os.kill(os.getpid(), signal.SIGKILL)

    embed.FLUSH_EVERY_S = 0.0  # record progress after every batch (in the child only)
    _build(Path(folder), Counting(), _items(), on_batch=die)


def test_embedding_resumes_after_sigkill(tmp_path):
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_embed_then_die, args=(str(tmp_path / "e"),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    assert not (tmp_path / "e" / "complete").exists()
    done = int(np.load(tmp_path / "e" / "done.npy").sum())
    assert 0 < done < 23
    enc = Counting()
    resumed = _build(tmp_path / "e", enc, _items())
    assert enc.images == 23 - done
    np.testing.assert_array_equal(resumed.array, _build(tmp_path / "whole", Counting(), _items()).array)


def test_weights_digest_tells_weights_apart():
    a, b = Counting(), Counting()
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.conv.bias[0] += 1e-6
    assert weights_digest(a) != weights_digest(b)


def test_vit_pools_follow_timm_semantics():
    """cls is the CLS token and mean the mean of the patch tokens, both of timm's forward_features (after the final
    norm); the model's forward uses the pooled vector."""
    x = torch.rand(2, 4, 32, 32)
    out = {}
    for pool in ("auto", "cls", "mean"):
        torch.manual_seed(0)
        m = build_model(ModelConfig(backbone="test_vit", pool=pool), num_classes=3, in_chans=4, img_size=32).eval()
        with torch.no_grad():
            tokens = m.backbone.forward_features(x)
            out[pool] = m.backbone(x)
        assert m.backbone.num_prefix_tokens >= 1
    np.testing.assert_allclose(out["cls"], tokens[:, 0], atol=1e-6)
    np.testing.assert_allclose(out["mean"], tokens[:, m.backbone.num_prefix_tokens :].mean(1), atol=1e-6)
    np.testing.assert_array_equal(out["auto"], out["cls"])  # timm's ViT default is the CLS token
    assert not torch.allclose(out["cls"], out["mean"])


def test_cnn_pools():
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone="test_resnet", pool="mean"), num_classes=3, in_chans=3).eval()
    with torch.no_grad():
        np.testing.assert_allclose(m.backbone(x), m.backbone.forward_features(x).mean((2, 3)), atol=1e-6)
    with pytest.raises(LocbenchError, match="model.pool=cls needs a backbone with a CLS token"):
        build_model(ModelConfig(backbone="test_resnet", pool="cls"), num_classes=3, in_chans=3)
    assert timm.create_model("test_resnet").default_cfg  # the tiny model the tests rely on exists


def test_probe_config_rules():
    cfg = load_config(None, {"model.mode": "probe", "augment.name": "none", "model.head": "linear"})
    assert cfg.model.mode == "probe" and cfg.model.pool == "auto"
    with pytest.raises(LocbenchError, match=r"augment.name=standard does not apply to model.mode=probe"):
        load_config(None, {"model.mode": "probe"})
    with pytest.raises(LocbenchError, match="model.mode must be one of finetune, probe"):
        load_config(None, {"model.mode": "linear"})
    with pytest.raises(LocbenchError, match="model.pool must be one of auto, cls, mean"):
        load_config(None, {"model.pool": "max"})


def test_sweep_probe_axis_and_augmentation_clash():
    spec = {
        "grid": {"model.mode": ["finetune", "probe"], "model.head": ["linear", "mlp"]},
        "config": {"model": {"backbone": "test_resnet"}},
        "overrides": [{"when": {"model.mode": "probe"}, "set": {"augment.name": "none"}}],
        "seeds": [0, 1],
    }
    sweep = expand(spec)
    assert len(sweep.points) == 8
    assert {p.point_id for p in sweep.points} >= {"probe-linear", "finetune-mlp"}
    probes = [p for p in sweep.points if p.axes["model.mode"] == "probe"]
    assert all(p.config.augment.name == "none" for p in probes)
    clash = {"grid": {"model.mode": ["finetune", "probe"], "augment.name": ["standard", "cutmix"]}}
    with pytest.raises(LocbenchError, match=r"grid point .*probe.*augment.name=standard does not apply"):
        expand(clash)
