"""Backbone names: the study's presets, the transformer and ConvNeXt presets, their timm names, and the check that
a name is a timm model."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm

from locbench.errors import LocbenchError

STUDY_BACKBONES = ("nfnet_l0", "resnet50", "inception_v3", "efficientnet_b0", "efficientnet_b3", "efficientnet_b5")


@dataclass(frozen=True)
class Preset:
    """A short backbone name for a timm model (with the tag of its pretrained weights where that matters)."""

    timm_name: str
    about: str


#: Transformers and ConvNeXts beyond the study, by short name (``model.backbone: dinov2_small``). The DINO and
#: DINOv2 presets pin the tag of their self-supervised weights: with ``model.pretrained`` those are loaded, not the
#: model's default (supervised) ones. ConvNeXt presets are timm's own names.
PRESETS = {
    "vit_tiny": Preset("vit_tiny_patch16_224", "ViT-Ti/16, 5.5M params; ImageNet-21k → 1k supervised weights"),
    "vit_small": Preset("vit_small_patch16_224", "ViT-S/16, 22M params; ImageNet-21k → 1k supervised weights"),
    "vit_base": Preset("vit_base_patch16_224", "ViT-B/16, 86M params; ImageNet-21k → 1k supervised weights"),
    "dino_vit_small": Preset(
        "vit_small_patch16_224.dino", "ViT-S/16 with DINO self-supervised ImageNet weights (the DINO checkpoint layout)"
    ),
    "dino_vit_base": Preset("vit_base_patch16_224.dino", "ViT-B/16 with DINO self-supervised ImageNet weights"),
    "dinov2_small": Preset(
        "vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14, 22M params (patch 14: use img_size 224 or 252)"
    ),
    "dinov2_base": Preset("vit_base_patch14_dinov2.lvd142m", "DINOv2 ViT-B/14, 87M params"),
    "dinov2_small_reg": Preset("vit_small_patch14_reg4_dinov2.lvd142m", "DINOv2 ViT-S/14 with 4 register tokens"),
    "convnext_atto": Preset("convnext_atto", "ConvNeXt-Atto, 3.4M params; ImageNet-1k (cheap enough for a CPU)"),
    "convnext_tiny": Preset("convnext_tiny", "ConvNeXt-T, 28M params; ImageNet-12k → 1k"),
    "convnext_small": Preset("convnext_small", "ConvNeXt-S, 50M params; ImageNet-12k → 1k"),
    "convnext_base": Preset("convnext_base", "ConvNeXt-B, 88M params; ImageNet-22k → 1k"),
}

#: timm names of every preset whose name differs from its timm name (the study's code used nfnet_f1 for "NFNet").
BACKBONE_ALIASES = {
    "nfnet_l0": "eca_nfnet_l0",
    **{name: p.timm_name for name, p in PRESETS.items() if p.timm_name != name},
}


def timm_name(name: str) -> str:
    """The timm model name of backbone ``name`` (a preset or a timm name, possibly with a weights tag)."""
    return BACKBONE_ALIASES.get(name, name)


def check_backbone(name: str) -> str:
    """Return the timm name of ``name``; unknown names raise with close matches."""
    resolved = timm_name(name)
    if timm.is_model(resolved):
        return resolved
    close = difflib.get_close_matches(resolved, [*BACKBONE_ALIASES, *timm.list_models()], n=8, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise LocbenchError(
        f"unknown backbone {name!r}: not a timm model.{hint} List them with `locbench list backbones [PATTERN]`; "
        f"study presets: {', '.join(STUDY_BACKBONES)}; transformer/ConvNeXt presets: {', '.join(PRESETS)}"
    )
