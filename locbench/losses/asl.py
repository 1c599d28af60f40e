"""Asymmetric loss (Ridnik et al. 2021), as a mean over batch and classes.

L+ = (1-p)^γ+ · log p ; L- = p_m^γ- · log(1-p_m), p_m = max(p - m, 0) (probability shifting of easy negatives).
"""

import torch
import torch.nn.functional as F

from locbench.losses.base import LOSSES, WeightedMeanLoss


class AsymmetricLoss(WeightedMeanLoss):
    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, class_weights=None) -> None:
        super().__init__(class_weights)
        self.gamma_neg = gamma_neg
        self.gamma_pos = gamma_pos
        self.clip = clip

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        log_p = F.logsigmoid(logits)
        if self.clip > 0:
            p_m = (p - self.clip).clamp(min=0)
            log_q = torch.log((1 - p_m).clamp(min=1e-8))
        else:
            p_m = p
            log_q = F.logsigmoid(-logits)
        pos = -(1 - p).pow(self.gamma_pos) * log_p
        neg = -p_m.pow(self.gamma_neg) * log_q
        return targets * pos + (1 - targets) * neg


@LOSSES.register("asl", "asymmetric loss (gamma- 4, gamma+ 0, clip 0.05)")
def asl(cfg, class_weights=None) -> AsymmetricLoss:
    return AsymmetricLoss(cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, class_weights)
