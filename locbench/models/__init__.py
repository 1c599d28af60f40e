"""Models: a thin factory over ``timm.create_model`` plus a classification head."""

from locbench.models.factory import HEADS, LocModel, build_model, count_params, measure_gmacs
from locbench.models.quirks import Quirks, quirks

__all__ = ["HEADS", "LocModel", "Quirks", "build_model", "count_params", "measure_gmacs", "quirks"]
