"""The loss registry and its factory."""

from __future__ import annotations

import torch
from torch import nn

from locbench.registry import Registry

LOSSES: Registry = Registry("loss")


class WeightedMeanLoss(nn.Module):
    """Base: subclasses compute an elementwise loss (B, C); this applies class weights and takes the mean."""

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.elementwise(logits.float(), targets.float())
        if self.class_weights is not None:
            loss = loss * self.class_weights
        return loss.mean()


def build_loss(cfg, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Build the loss named by ``cfg.name`` (a :class:`locbench.config.LossConfig`)."""
    return LOSSES.get(cfg.name)(cfg, class_weights)
