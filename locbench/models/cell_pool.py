"""Per-cell mean pooling over a cell mask (``model.pool: cell_mask``, cell-level probes): one backbone pass per
whole field, one vector per cell.

The backbone's spatial feature map is what timm's global pooling would average: a CNN's last feature map
(``forward_features``, NCHW; NHWC models are turned to NCHW), a ViT's patch tokens after its final norm (its
``num_prefix_tokens`` CLS/register tokens left out) laid back on the patch grid. Each cell's vector is the mean of
that map weighted by the cell's soft mask on the feature grid (the share of each grid square the cell covers:
:func:`locbench.cells.field_cells.cell_weights`); a cell with no weight on the grid (outside what the backbone sees)
takes the feature at its centroid. What timm does after its pooling is then done to each cell's vector, so it is the
per-cell counterpart of ``model.pool: mean``: a CNN's ``forward_head(pre_logits=True)`` on a 1 x 1 map (a ConvNeXt's
final norm, for instance), a ViT's ``fc_norm``.

Written by hand: timm pools whole images only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from locbench.errors import LocbenchError


def to_grid(backbone: nn.Module, out: torch.Tensor, image_hw: tuple[int, int], *, what: str, fix: str) -> torch.Tensor:
    """A layer's output ``out`` as a (B, D, h, w) map: tokens (B, N, D) lose their ``num_prefix_tokens`` (CLS and
    register tokens) and are laid on the patch grid of an ``image_hw`` input (a square grid without a timm patch
    embedding that knows its size); a channels-last map (timm ``output_fmt == "NHWC"``) is permuted; an NCHW map
    passes through. Tokens that are not prefix tokens plus that grid raise :class:`LocbenchError` (``what`` gives
    them, ``fix`` says what to do)."""
    if out.ndim == 3:
        prefix = int(getattr(backbone, "num_prefix_tokens", 0) or 0)
        b, n, d = out.shape
        embed = getattr(backbone, "patch_embed", None)
        if hasattr(embed, "dynamic_feat_size"):
            gh, gw = embed.dynamic_feat_size(tuple(image_hw))
        else:
            gh = gw = math.isqrt(n - prefix)
        if gh * gw != n - prefix:
            raise LocbenchError(
                f"{what} gives {n} tokens, which is not {prefix} prefix token(s) plus a {gh} x {gw} patch grid; {fix}"
            )
        return out[:, prefix:, :].reshape(b, gh, gw, d).permute(0, 3, 1, 2)
    if out.ndim == 4 and getattr(backbone, "output_fmt", "NCHW") == "NHWC":
        return out.permute(0, 3, 1, 2)
    return out


def feature_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) spatial features of ``x`` (B, C, H, W) before any pooling (see the module docstring)."""
    out = backbone.forward_features(x)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if out.ndim == 4 or (out.ndim == 3 and hasattr(backbone, "patch_embed")):
        return to_grid(
            backbone,
            out,
            tuple(x.shape[-2:]),
            what=f"model.pool=cell_mask: {type(backbone).__name__}",
            fix="use a plain ViT or a CNN, or model.pool=mean on cell crops",
        )
    raise LocbenchError(
        f"model.pool=cell_mask needs a spatial feature map; {type(backbone).__name__}.forward_features gives shape "
        f"{tuple(out.shape)}: use a CNN or a ViT, or model.pool=mean on cell crops"
    )


def grid_size(backbone: nn.Module, *, in_chans: int, size: int) -> tuple[int, int]:
    """(h, w) of the feature map of a ``size`` x ``size`` input (one forward pass of zeros)."""
    with torch.no_grad():
        was = backbone.training
        backbone.eval()
        p = next(backbone.parameters())
        fmap = feature_map(backbone, torch.zeros(1, in_chans, size, size, dtype=p.dtype, device=p.device))
        backbone.train(was)
    return int(fmap.shape[2]), int(fmap.shape[3])


def mask_mean(fmap: torch.Tensor, weights: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(k, D) per-cell means of one field's map ``fmap`` (D, h, w) under soft masks ``weights`` (k, h, w, >= 0);
    a cell whose weights sum to 0 takes the feature at its grid square ``centres[j]`` (row, column)."""
    weights = weights.to(fmap.dtype)
    total = weights.sum((1, 2))
    pooled = torch.einsum("khw,dhw->kd", weights, fmap) / total.clamp(min=torch.finfo(fmap.dtype).tiny)[:, None]
    empty = total <= 0
    if bool(empty.any()):
        c = centres[empty].long()
        pooled[empty] = fmap[:, c[:, 0], c[:, 1]].T
    return pooled


def finish_pooled(backbone: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """What timm does to a pooled (K, D) vector before its classifier: a CNN's ``forward_head(pre_logits=True)`` on
    a 1 x 1 map, a ViT's ``fc_norm``."""
    if hasattr(backbone, "patch_embed") and hasattr(backbone, "fc_norm"):
        return backbone.fc_norm(pooled)
    if hasattr(backbone, "forward_head"):
        one = pooled[:, :, None, None]
        if getattr(backbone, "output_fmt", "NCHW") == "NHWC":
            one = one.permute(0, 2, 3, 1)
        return backbone.forward_head(one, pre_logits=True)
    return pooled


class CellMaskEncoder(nn.Module):
    """Whole fields in, one vector per cell out: ``forward(x, (weights, centres))`` with ``x`` (B, C, H, W) [0, 1]
    images, ``weights[i]`` (k_i, h, w) and ``centres[i]`` (k_i, 2) of field ``i`` → (sum k_i, D), cells in order."""

    def __init__(self, backbone: nn.Module, normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.normalize = normalize if normalize is not None else nn.Identity()

    def forward(self, x: torch.Tensor, masks: tuple[list[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:
        weights, centres = masks
        fmap = feature_map(self.backbone, self.normalize(x))
        if fmap.shape[2:] != weights[0].shape[1:]:
            raise ValueError(f"cell weights on a {tuple(weights[0].shape[1:])} grid, features {tuple(fmap.shape)}")
        dev = fmap.device
        pooled = [mask_mean(f, w.to(dev), c.to(dev)) for f, w, c in zip(fmap.float(), weights, centres, strict=True)]
        return finish_pooled(self.backbone, torch.cat(pooled))
