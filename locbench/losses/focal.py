"""Focal loss (Lin et al. 2017) for multi-label targets, soft targets (CutMix, MixUp) included.

loss = -y·α·(1-p)^γ·log p - (1-y)·(1-α)·p^γ·log(1-p): α weights the positives, as in the paper.
"""

import torch
import torch.nn.functional as F

from locbench.losses.base import LOSSES, WeightedMeanLoss


class FocalLoss(WeightedMeanLoss):
    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, class_weights: torch.Tensor | None = None) -> None:
        super().__init__(class_weights)
        self.alpha = alpha
        self.gamma = gamma

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # log-sigmoid for stability: log p = logsigmoid(x), log(1-p) = logsigmoid(-x)
        log_p = F.logsigmoid(logits)
        log_q = F.logsigmoid(-logits)
        p = log_p.exp()
        pos = -self.alpha * (1 - p).pow(self.gamma) * log_p
        neg = -(1 - self.alpha) * p.pow(self.gamma) * log_q
        return targets * pos + (1 - targets) * neg


@LOSSES.register("focal", "focal loss, alpha weights positives (defaults: alpha 0.25, gamma 2)")
def focal(cfg, class_weights=None) -> FocalLoss:
    return FocalLoss(cfg.focal_alpha, cfg.focal_gamma, class_weights)
