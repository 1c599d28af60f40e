"""Models: a thin factory over ``timm.create_model`` plus a classification head."""

from locbench.models.backbones import BACKBONE_ALIASES, PRESETS, STUDY_BACKBONES, Preset, check_backbone, timm_name
from locbench.models.factory import HEADS, LocModel, ModelSpec, build_model, count_params, measure_gmacs
from locbench.models.quirks import Quirks, quirks
from locbench.models.tta import TTA_MODES, TTA_PASSES, ProbabilityMean, apply_view, tta_views, with_tta

__all__ = [
    "BACKBONE_ALIASES",
    "HEADS",
    "PRESETS",
    "STUDY_BACKBONES",
    "TTA_MODES",
    "TTA_PASSES",
    "LocModel",
    "ModelSpec",
    "Preset",
    "ProbabilityMean",
    "Quirks",
    "apply_view",
    "build_model",
    "check_backbone",
    "count_params",
    "measure_gmacs",
    "quirks",
    "timm_name",
    "tta_views",
    "with_tta",
]
