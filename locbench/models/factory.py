"""Backbones straight from timm (any model name), heads from a small registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from locbench.errors import LocbenchError
from locbench.models.backbones import check_backbone
from locbench.models.pooling import set_pool
from locbench.models.quirks import Quirks, quirks
from locbench.models.weights import WeightsReport, find_weights, hub_reachable, load_weights, missing_error
from locbench.registry import Registry

log = logging.getLogger(__name__)

HEADS: Registry = Registry("head")


@HEADS.register("mlp", "features → hidden (512) → ReLU → classes (the study's head)")
def mlp_head(in_features: int, num_classes: int, *, hidden: int = 512, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


@HEADS.register("linear", "features → classes")
def linear_head(in_features: int, num_classes: int, *, hidden: int = 512, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class ModelSpec(Protocol):
    """What :func:`build_model` reads of a model configuration (:class:`locbench.config.ModelConfig` is one)."""

    backbone: str
    pretrained: bool
    pretrained_file: str | None
    head: str
    hidden: int
    dropout: float
    pool: str


class LocModel(nn.Module):
    """A timm backbone without its classifier (pooled features) and a locbench head; ``quirks`` says what the
    backbone asks of the training loop (gradient clipping, memory layout), ``weights`` what loading pretrained
    weights from a file did (None when none was loaded from a file)."""

    def __init__(
        self, backbone: nn.Module, head: nn.Module, quirks: Quirks | None = None, weights: WeightsReport | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.quirks = quirks or Quirks()
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(cfg: ModelSpec, *, num_classes: int, in_chans: int, img_size: int | None = None) -> LocModel:
    """Build the backbone named by ``cfg.backbone`` (a :class:`locbench.config.ModelConfig`) with ``in_chans``
    input channels and the configured head. With ``img_size``, models made for one input size (ViTs, Swin: timm's
    ``fixed_input_size``) are built for it: their position embeddings, pretrained ones included, are resampled
    to its patch grid.

    With ``cfg.pretrained`` the weights come from ``cfg.pretrained_file`` when given (timm layout, a plain state
    dict, or a training checkpoint holding one: :func:`~locbench.models.weights.load_weights`), else from a local
    file (:func:`~locbench.models.weights.find_weights`: imported, or in the hub caches) or, where the hub answers,
    a download; offline without them it fails within seconds naming where to put the file. timm adapts the first
    layer to ``in_chans`` (1 and 4 channels included; a ViT's patch embedding too).
    """
    name = check_backbone(cfg.backbone)
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    weights_file: Path | None = None
    if cfg.pretrained:
        if cfg.pretrained_file:
            weights_file = Path(cfg.pretrained_file).expanduser()
            if not weights_file.is_file():
                raise LocbenchError(
                    f"model.pretrained_file {weights_file} does not exist; give the path of a weights file"
                )
        else:
            weights_file = _local_weights(cfg.backbone)
    sized = img_size is not None and _fixed_input_size(name)
    if sized:
        kwargs["img_size"] = img_size
    download = cfg.pretrained and weights_file is None
    try:
        backbone = _create(name, pretrained=download, **kwargs)
    except LocbenchError:
        raise
    except Exception as e:  # timm raises many kinds of errors for weights it cannot download
        if not download:
            raise
        raise LocbenchError(
            f"could not download pretrained weights for {name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); {find_weights(cfg.backbone).missing_message()}"
        ) from None
    report = None
    if weights_file is not None:
        try:
            report = load_weights(backbone, weights_file, name=name, in_chans=in_chans)
        except LocbenchError as e:
            raise LocbenchError(f"model.pretrained_file {e}" if cfg.pretrained_file else str(e)) from None
    if sized:
        _check_patch_grid(backbone, img_size, name)
    set_pool(backbone, cfg.pool, name)  # after the weights: a ViT's final norm stays where its weights expect it
    head = HEADS.get(cfg.head)(backbone.num_features, num_classes, hidden=cfg.hidden, dropout=cfg.dropout)
    return LocModel(backbone, head, quirks(name), report)


def _fixed_input_size(name: str) -> bool:
    """Whether timm's ``name`` is made for one input size (a ViT asserts on any other)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def _create(name: str, *, pretrained: bool, **kwargs) -> nn.Module:
    """``timm.create_model``; a fixed-size model whose constructor takes no ``img_size`` is resized after."""
    img_size = kwargs.get("img_size")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        if img_size is None or "img_size" not in str(e):
            raise
    backbone = timm.create_model(name, pretrained=pretrained, **{k: v for k, v in kwargs.items() if k != "img_size"})
    if hasattr(backbone, "set_input_size"):
        backbone.set_input_size(img_size=img_size)
    return backbone


def _check_patch_grid(backbone: nn.Module, img_size: int, name: str) -> None:
    """An image size that is not a multiple of a ViT's patch size: most ViTs then leave the last pixels of each row
    and column unseen (a warning); those built for any input size (timm's ``dynamic_img_size``) refuse such input,
    so they are refused here, before training starts."""
    embed = getattr(backbone, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    side = patch[0] if isinstance(patch, tuple) else patch
    if not isinstance(side, int) or img_size % side == 0:
        return
    fix = f"use {img_size - img_size % side} or {img_size - img_size % side + side} (--img-size)"
    if not getattr(embed, "strict_img_size", True) and not getattr(embed, "dynamic_img_pad", False):
        raise LocbenchError(f"data.img_size {img_size} is not a multiple of {name}'s patch size {side}: {fix}")
    log.warning(
        "data.img_size %d is not a multiple of %s's patch size %d: the last %d px of each image are not seen; %s",
        img_size,
        name,
        side,
        img_size % side,
        fix,
    )


def _local_weights(backbone: str) -> Path | None:
    """The local file of ``backbone``'s pretrained weights; None when timm may download them (the hub answers).
    Raises :class:`~locbench.models.weights.WeightsMissing` within seconds when neither."""
    lookup = find_weights(backbone)
    if lookup.found is not None:
        log.info("pretrained weights for %s: %s (%s)", lookup.timm_name, lookup.found, lookup.source)
        return lookup.found
    if not lookup.has_weights:
        raise LocbenchError(lookup.missing_message())
    if hub_reachable(lookup):
        log.info("pretrained weights for %s are not on this machine; downloading them", lookup.timm_name)
        return None
    raise missing_error([lookup], what=f"model.pretrained for {backbone}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_gmacs(model: nn.Module, in_chans: int, size: int) -> float:
    """Multiply-accumulates of one forward pass of one image, in billions (FLOPs / 2, via torch's counter)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9
