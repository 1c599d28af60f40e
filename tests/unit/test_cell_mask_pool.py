"""Per-cell mean pooling over a cell mask (model.pool=cell_mask): the soft masks on the feature grid, the mean by
hand, the fallback of a cell without weight, the feature maps of a CNN and a ViT, the embedding cache of fields
with several rows each (resumable), and the config rules."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from locbench.cells.crops import index_cells
from locbench.cells.field_cells import (
    FieldCellDataset,
    FieldsWithCells,
    cell_weights,
    collate_fields,
    resized_geometry,
)
from locbench.config import ModelConfig, load_config
from locbench.data.dataset import FieldDataset
from locbench.data.formats import load_table
from locbench.data.images import resize
from locbench.data.synth import synthesize
from locbench.engine import embed
from locbench.engine.embed import build_embeddings
from locbench.errors import LocbenchError
from locbench.models import build_model
from locbench.models.cell_pool import CellMaskEncoder, feature_map, grid_size, mask_mean


def test_mask_mean_by_hand():
    # a 2 x 2 map of 2 features; cell 1 covers the top-left square, cell 2 the right column, half of each square
    fmap = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])
    mask = np.zeros((8, 8), np.int32)
    mask[:4, :4] = 1
    mask[:, 6:] = 2
    weights, centres = cell_weights(mask, np.array([1, 2]), size=8, grid=(2, 2))
    np.testing.assert_allclose(weights[0], [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(weights[1], [[0.0, 0.5], [0.0, 0.5]])
    assert centres.tolist() == [[0, 0], [0, 1]]  # the square each covers most (the first of equal ones)
    pooled = mask_mean(fmap, torch.from_numpy(weights), torch.from_numpy(centres))
    np.testing.assert_allclose(pooled, [[1.0, 10.0], [3.0, 30.0]])  # (2 + 4) / 2, (20 + 40) / 2
    # unequal shares: a cell covering all of the top-left square and a quarter of the top-right one
    w = torch.tensor([[[1.0, 0.25], [0.0, 0.0]]])
    np.testing.assert_allclose(mask_mean(fmap, w, torch.zeros(1, 2)), [[(1 + 0.25 * 2) / 1.25, 12.0]])


def test_tiny_and_unseen_cells_get_a_feature_never_nan():
    fmap = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    mask = np.zeros((30, 30), np.int32)
    mask[16, 25] = 7  # one pixel: a sliver of one grid square, still that square's feature
    weights, centres = cell_weights(mask, np.array([7]), size=30, grid=(3, 3))
    assert 0 < weights.sum() < 0.02 and centres.tolist() == [[1, 2]]
    np.testing.assert_allclose(mask_mean(fmap, torch.from_numpy(weights), torch.from_numpy(centres)), [fmap[:, 1, 2]])
    # a cell with no weight at all (here: given so by hand) takes the feature of its centroid's square
    pooled = mask_mean(fmap, torch.zeros(1, 3, 3), torch.tensor([[2, 0]]))
    np.testing.assert_allclose(pooled, [fmap[:, 2, 0]])
    # crop policy: a cell in the part of a wide field that is cut away has no weight; its centroid is clipped
    wide = np.zeros((16, 48), np.int32)
    wide[4:8, 1:4] = 1
    wide[4:8, 20:28] = 2
    weights, centres = cell_weights(wide, np.array([1, 2]), size=16, grid=(4, 4), policy="crop")
    assert weights[0].sum() == 0 and weights[1].sum() > 0 and centres[0].tolist() == [1, 0]
    pooled = mask_mean(torch.rand(5, 4, 4), torch.from_numpy(weights), torch.from_numpy(centres))
    assert torch.isfinite(pooled).all()


@pytest.mark.parametrize("policy", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("shape", [(16, 32), (32, 16), (24, 24)])
def test_weights_are_the_area_resize_of_the_mask(policy, shape):
    """On a grid of one square per resized pixel, a cell's weights are its binary mask resized as the images are
    (area interpolation, the same padding or cropping)."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=shape).astype(np.int32)
    weights, _ = cell_weights(mask, np.array([1, 2, 3]), size=8, grid=(8, 8), policy=policy)
    for k in (1, 2, 3):
        want = resize((mask == k).astype(np.float32), 8, policy)
        np.testing.assert_allclose(weights[k - 1], want, atol=1e-5)
    sy, sx, top, left = resized_geometry(*shape, 8, policy)
    assert sy > 0 and sx > 0 and (policy != "pad" or min(top, left) >= 0)


def test_feature_maps_of_a_cnn_and_a_vit():
    torch.manual_seed(0)
    cnn = build_model(ModelConfig(backbone="test_resnet", pool="cell_mask"), num_classes=3, in_chans=4).eval()
    vit = build_model(ModelConfig(backbone="test_vit", pool="cell_mask"), num_classes=3, in_chans=4, img_size=64)
    vit.eval()
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(feature_map(cnn.backbone, x), cnn.backbone.forward_features(x))
        tokens = vit.backbone.forward_features(x)
        fmap = feature_map(vit.backbone, x)
    prefix = vit.backbone.num_prefix_tokens
    gh, gw = grid_size(vit.backbone, in_chans=4, size=64)
    assert fmap.shape == (2, vit.backbone.num_features, gh, gw) and gh * gw == tokens.shape[1] - prefix
    # patch token (r, c) is grid square (r, c): row-major, prefix (CLS/register) tokens left out
    np.testing.assert_array_equal(fmap[:, :, 1, 2], tokens[:, prefix + 1 * gw + 2])
    assert grid_size(cnn.backbone, in_chans=4, size=64) == (2, 2)  # test_resnet: stride 32


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_a_cell_covering_the_field_is_the_models_own_mean_pool(backbone):
    """The whole field as one cell gives what the backbone's own forward gives under cell_mask (the mean pool,
    with what timm does after it: a ViT's fc_norm, a CNN's head before its classifier)."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(backbone=backbone, pool="cell_mask"), num_classes=3, in_chans=4, img_size=64).eval()
    x = torch.rand(2, 4, 64, 64)
    grid = grid_size(m.backbone, in_chans=4, size=64)
    whole = torch.ones(1, *grid)
    with torch.no_grad():
        cells = CellMaskEncoder(m.backbone)(x, ([whole, whole], [torch.zeros(1, 2)] * 2))
        np.testing.assert_allclose(cells, m.backbone(x), atol=1e-5)


def test_config_refuses_cell_mask_outside_cell_level_probes():
    ok = {"model.mode": "probe", "augment.name": "none", "train.level": "cell", "model.pool": "cell_mask"}
    assert load_config(None, ok).model.pool == "cell_mask"
    with pytest.raises(
        LocbenchError,
        match=r"model.pool=cell_mask needs model.mode=probe and train.level=cell "
        r"\(train.level=image given\)",
    ):
        load_config(None, {**ok, "train.level": "image"})
    with pytest.raises(
        LocbenchError,
        match=r"model.pool=cell_mask needs .*\(model.mode=finetune given\).*"
        r"or use model.pool=mean",
    ):
        load_config(None, {**ok, "model.mode": "finetune", "augment.name": "standard"})
    with pytest.raises(LocbenchError, match="model.pool must be one of auto, cls, mean, cell_mask"):
        load_config(None, {"model.pool": "cells"})


# ------------------------------------------------------------------------------------------------------------
# The embedding cache: fields in, one row per cell, resumable by field
# ------------------------------------------------------------------------------------------------------------


class Pooling(nn.Module):
    """A tiny cell_mask encoder that counts the fields it sees (and can fail after some batches)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 6, 8, stride=8)
        self.fields, self.batches, self.fail_after = 0, 0, fail_after

    def forward(self, x, masks):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("killed mid-way")
        self.fields += len(x)
        self.batches += 1
        fmap = self.conv(x)
        return torch.cat([mask_mean(f, w, c) for f, w, c in zip(fmap, *masks, strict=True)])


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    root = synthesize(tmp_path_factory.mktemp("cm") / "d", images=9, size=64, seed=3, cells_per_field=(2, 5))
    table = load_table(root)
    cells = index_cells(table, root / "masks")
    spans = FieldsWithCells.of(cells, len(table))
    images = FieldDataset(table, spans.fields, channels="rgby", size=64)
    return FieldCellDataset(images, cells, root / "masks", grid=(8, 8), spans=spans), cells


def _build(folder, enc, items, **kw):
    ds, _ = items
    return build_embeddings(
        enc,
        ds,
        folder=folder,
        dim=6,
        meta={"what": "test"},
        device=torch.device("cpu"),
        batch_size=2,
        spans=ds.spans.bounds,
        collate=collate_fields,
        **kw,
    )


def test_field_embeddings_give_one_row_per_cell_in_index_order(fields, tmp_path):
    ds, cells = fields
    enc = Pooling()
    got = _build(tmp_path / "e", enc, fields)
    assert got.array.shape == (len(cells), 6) and enc.fields == len(ds)
    j = 4  # one field by hand
    x, (w, c) = ds[j]
    with torch.no_grad():
        want = mask_mean(enc.conv(x[None].float() / 255)[0], w, c)
    lo, hi = ds.spans.bounds[j], ds.spans.bounds[j + 1]
    np.testing.assert_allclose(got.array[lo:hi], want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(got.array).all()
    _build(tmp_path / "e", enc, fields)
    assert enc.fields == len(ds)  # reused: nothing embedded again


def test_field_embeddings_resume_after_a_failure(fields, tmp_path):
    ds, _ = fields
    whole = np.array(_build(tmp_path / "whole", Pooling(), fields).array)
    with pytest.raises(RuntimeError, match="killed mid-way"):
        _build(tmp_path / "e", Pooling(fail_after=2), fields)
    assert np.load(tmp_path / "e" / "done.npy").tolist() == [1] * 4 + [0] * (len(ds) - 4)  # the unit is a field
    enc = Pooling()
    resumed = _build(tmp_path / "e", enc, fields)
    assert enc.fields == len(ds) - 4
    np.testing.assert_array_equal(resumed.array, whole)


def _embed_then_die(folder: str, items) -> None:
    def die(done: int) -> None:
        if done >= 4:
            os.kill(os.getpid(), signal.SIGKILL)

    embed.FLUSH_EVERY_S = 0.0  # record progress after every batch (in the child only)
    _build(Path(folder), Pooling(), items, on_batch=die)


def test_field_embeddings_resume_after_sigkill(fields, tmp_path):
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_embed_then_die, args=(str(tmp_path / "e"), fields))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    assert not (tmp_path / "e" / "complete").exists()
    done = int(np.load(tmp_path / "e" / "done.npy").sum())
    assert 0 < done < len(fields[0])
    enc = Pooling()
    resumed = _build(tmp_path / "e", enc, fields)
    assert enc.fields == len(fields[0]) - done
    whole = _build(tmp_path / "whole", Pooling(), fields)
    assert (tmp_path / "e" / "features.npy").read_bytes() == (tmp_path / "whole" / "features.npy").read_bytes()
    np.testing.assert_array_equal(resumed.array, whole.array)


def test_fields_without_cells_are_not_items():
    class Index:  # the part of a CellIndex that FieldsWithCells reads
        image_index = np.array([0, 0, 2, 4, 4, 4])

        def __len__(self) -> int:
            return 6

    spans = FieldsWithCells.of(Index(), 6)
    assert spans.fields.tolist() == [0, 2, 4] and spans.bounds.tolist() == [0, 2, 3, 6]
    Index.image_index = np.array([2, 0])
    with pytest.raises(LocbenchError, match="not sorted by field"):
        FieldsWithCells.of(Index(), 3)


@pytest.mark.parametrize("policy", ["pad", "crop", "stretch"])
def test_shares_partition_each_square_on_any_grid(policy):
    """On a grid that does not divide the image (7 squares over 40 px, a 50 x 70 field), the shares of all labels
    in a square add up to 1 where the image covers it, less where it is padding; none is above 1."""
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 5, size=(50, 70)).astype(np.int32)
    weights, _ = cell_weights(mask, np.arange(5), size=40, grid=(7, 7), policy=policy)
    total = weights.sum(0)
    assert weights.max() <= 1.0 and total.max() == pytest.approx(1.0, abs=1e-6)
    if policy == "pad":  # the field fills 40 x 29 (rows 5-33 of 40): the top and bottom squares are partly padding
        assert 0 < total[0, 0] < 1 and total[3, 3] == pytest.approx(1.0, abs=1e-6)
    else:
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
