"""Binary cross-entropy on logits (the study's loss)."""

import torch
import torch.nn.functional as F

from locbench.losses.base import LOSSES, WeightedMeanLoss


class BCELoss(WeightedMeanLoss):
    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@LOSSES.register("bce", "binary cross-entropy on logits (the study's)")
def bce(cfg, class_weights=None) -> BCELoss:
    return BCELoss(class_weights)
