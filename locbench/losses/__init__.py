"""Multi-label losses. Each returns the mean over batch and classes, so that comparing losses is not comparing
learning rates (timm's asymmetric loss returns a sum while its BCE returns a mean)."""

from locbench.losses import asl, bce, focal  # noqa: F401  (register entries)
from locbench.losses.base import LOSSES, build_loss, class_weights

__all__ = ["LOSSES", "build_loss", "class_weights"]
