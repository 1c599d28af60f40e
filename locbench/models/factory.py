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
from locbench.models.weights import check_weights_file, find_weights, hub_reachable, missing_error
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
    backbone asks of the training loop (gradient clipping, memory layout)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, quirks: Quirks | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.quirks = quirks or Quirks()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(cfg: ModelSpec, *, num_classes: int, in_chans: int, img_size: int | None = None) -> LocModel:
    """Build the backbone named by ``cfg.backbone`` (a :class:`locbench.config.ModelConfig`) with ``in_chans``
    input channels and the configured head. With ``img_size``, models made for one input size (ViTs, Swin: timm's
    ``fixed_input_size``) are resized to it (position embeddings resampled).

    With ``cfg.pretrained`` the ImageNet weights come from ``cfg.pretrained_file`` when given, else from a local
    file (:func:`~locbench.models.weights.find_weights`: imported, or in the hub caches) or, where the hub answers,
    a download; offline without them it fails within seconds naming where to put the file. timm adapts the first
    convolution to ``in_chans`` (1 and 4 channels included).
    """
    name = check_backbone(cfg.backbone)
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    weights_file: Path | None = None
    if cfg.pretrained:
        kwargs["pretrained"] = True
        if cfg.pretrained_file:
            weights_file = Path(cfg.pretrained_file).expanduser()
            if not weights_file.is_file():
                raise LocbenchError(
                    f"model.pretrained_file {weights_file} does not exist; give the path of a weights file"
                )
        else:
            weights_file = _local_weights(cfg.backbone)
        if weights_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        backbone = timm.create_model(name, **kwargs)
    except LocbenchError:
        raise
    except Exception as e:  # timm raises many kinds of errors for weights it cannot load
        if not cfg.pretrained:
            raise
        if weights_file is not None:  # a local file that does not fit: "offline?" would mislead
            detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:300]
            what = "model.pretrained_file " if cfg.pretrained_file else ""
            raise LocbenchError(
                f"{what}{weights_file} does not fit {name!r} ({type(e).__name__}: {detail}); "
                f"give a .safetensors/.pth state dict of timm's {name!r} model"
            ) from None
        raise LocbenchError(
            f"could not download pretrained weights for {name!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); {find_weights(cfg.backbone).missing_message()}"
        ) from None
    if weights_file is not None:
        what = "model.pretrained_file " if cfg.pretrained_file else ""
        try:
            check_weights_file(backbone, weights_file, name)
        except LocbenchError as e:
            raise LocbenchError(f"{what}{e}") from None
    if img_size is not None and backbone.pretrained_cfg.get("fixed_input_size") and hasattr(backbone, "set_input_size"):
        # a ViT made for 224 px asserts on any other input size; after loading weights, so theirs are resampled
        backbone.set_input_size(img_size=img_size)
    set_pool(backbone, cfg.pool, name)  # after the weights: a ViT's final norm stays where its weights expect it
    head = HEADS.get(cfg.head)(backbone.num_features, num_classes, hidden=cfg.hidden, dropout=cfg.dropout)
    return LocModel(backbone, head, quirks(name))


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
