"""A model's outputs over a loader, without augmentation: the training loop's validation pass."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from locbench.engine.data import to_unit


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    normalize: nn.Module,
    loss_fn: nn.Module | None,
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool,
) -> dict[str, Any]:
    """Probabilities, targets and mean loss over a loader (no augmentation)."""
    model.eval()
    probs, targets = [], []
    total = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    for x, y in loader:
        x = normalize(to_unit(x.to(device, non_blocking=True)))
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        logits = logits.float()
        if loss_fn is not None:
            total += loss_fn(logits, y).double() * x.shape[0]
        n += x.shape[0]
        probs.append(torch.sigmoid(logits))
        targets.append(y)
    return {
        "probs": torch.cat(probs).cpu().numpy().astype(np.float32),
        "targets": torch.cat(targets).cpu().numpy().astype(np.uint8),
        "loss": (total / max(n, 1)).item(),
    }
