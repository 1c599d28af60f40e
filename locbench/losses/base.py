"""The loss registry and its factory."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from locbench.errors import LocbenchError
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


def class_weights(setting: str | list[float] | None, targets: np.ndarray, num_classes: int) -> torch.Tensor | None:
    """The per-class weights ``loss.class_weights`` asks for: None, ``balanced`` (inverse positive frequency over
    the training ``targets``, mean 1 over the classes present, 0 for absent ones) or one given weight per class."""
    if setting is None:
        return None
    if setting == "balanced":
        pos = targets.sum(0).astype(np.float64)
        w = np.where(pos > 0, len(targets) / np.maximum(pos, 1), 0.0)
        w = w / w[w > 0].mean()
        return torch.tensor(w, dtype=torch.float32)
    if len(setting) != num_classes:
        raise LocbenchError(f"loss.class_weights has {len(setting)} values; the data has {num_classes} classes")
    return torch.tensor(setting, dtype=torch.float32)
