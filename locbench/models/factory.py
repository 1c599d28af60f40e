"""Backbones straight from timm (any model name), heads from a small registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import timm
import torch
from timm.models import load_state_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from locbench.errors import LocbenchError
from locbench.models.backbones import check_backbone
from locbench.models.quirks import Quirks, quirks
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

    With ``cfg.pretrained`` the ImageNet weights come from ``cfg.pretrained_file`` when given, else from timm's
    local cache or a download; timm adapts the first convolution to ``in_chans`` (1 and 4 channels included).
    """
    name = check_backbone(cfg.backbone)
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    if cfg.pretrained:
        kwargs["pretrained"] = True
        if cfg.pretrained_file:
            path = Path(cfg.pretrained_file).expanduser()
            if not path.is_file():
                raise LocbenchError(f"model.pretrained_file {path} does not exist; give the path of a weights file")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        backbone = timm.create_model(name, **kwargs)
    except LocbenchError:
        raise
    except Exception as e:  # timm raises many kinds of errors for missing weights offline
        if not cfg.pretrained:
            raise
        if cfg.pretrained_file:  # a local file that does not fit: "offline?" would mislead
            detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:300]
            raise LocbenchError(
                f"model.pretrained_file {cfg.pretrained_file} does not fit {name!r} ({type(e).__name__}: {detail}); "
                f"give a .safetensors/.pth state dict of timm's {name!r} model"
            ) from None
        raise LocbenchError(
            f"could not load pretrained weights for {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Offline? Download the weights elsewhere (e.g. `timm.create_model(name, pretrained=True)` on a machine "
            "with internet fills ~/.cache/huggingface; copy that folder over) or save them as a file and pass "
            "--set model.pretrained_file=PATH (a .safetensors/.pth state dict of the timm model), "
            "or train from scratch without --pretrained."
        ) from None
    if cfg.pretrained and cfg.pretrained_file:
        _check_file_matches(backbone, Path(cfg.pretrained_file).expanduser(), name)
    if img_size is not None and backbone.pretrained_cfg.get("fixed_input_size") and hasattr(backbone, "set_input_size"):
        # a ViT made for 224 px asserts on any other input size; after loading weights, so theirs are resampled
        backbone.set_input_size(img_size=img_size)
    head = HEADS.get(cfg.head)(backbone.num_features, num_classes, hidden=cfg.hidden, dropout=cfg.dropout)
    return LocModel(backbone, head, quirks(name))


def _check_file_matches(backbone: nn.Module, path: Path, name: str) -> None:
    """timm loads pretrained weights non-strictly once the classifier is dropped (num_classes=0), so a file made
    for another model would leave the backbone at random init without an error: refuse such a file."""
    keys = set(load_state_dict(str(path)))
    own = [k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in keys]
    if len(missing) > len(own) // 2:
        raise LocbenchError(
            f"model.pretrained_file {path} does not hold {name} weights: {len(missing)} of {len(own)} backbone "
            f"tensors are not in it (e.g. {missing[0]}); give a state dict of timm's {name!r} model"
        )
    if missing:
        log.warning("%s lacks %d of %d %s tensors; they keep their random init", path, len(missing), len(own), name)


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
