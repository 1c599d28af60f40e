"""Backbone names: the study's presets, their timm names, and the check that a name is a timm model."""

from __future__ import annotations

import difflib

import timm

from locbench.errors import LocbenchError

#: timm names for the study's presets where they differ (the study's code actually used nfnet_f1 for "NFNet").
BACKBONE_ALIASES = {"nfnet_l0": "eca_nfnet_l0"}
STUDY_BACKBONES = ("nfnet_l0", "resnet50", "inception_v3", "efficientnet_b0", "efficientnet_b3", "efficientnet_b5")


def timm_name(name: str) -> str:
    """The timm model name of backbone ``name`` (a study alias or a timm name)."""
    return BACKBONE_ALIASES.get(name, name)


def check_backbone(name: str) -> str:
    """Return the timm name of ``name``; unknown names raise with close matches."""
    resolved = timm_name(name)
    if timm.is_model(resolved):
        return resolved
    close = difflib.get_close_matches(resolved, timm.list_models(), n=8, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise LocbenchError(
        f"unknown backbone {name!r}: not a timm model.{hint} List them with `locbench list backbones [PATTERN]`; "
        f"study presets: {', '.join(STUDY_BACKBONES)}"
    )
