"""Optimiser, learning-rate schedule, weight averaging (EMA) and gradient clipping of the training loop."""

from __future__ import annotations

import math

import torch
from timm.utils import adaptive_clip_grad
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from locbench.config import OptimConfig
from locbench.models.quirks import Quirks


def build_optimizer(ocfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov momentum 0.9) over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if ocfg.name == "adam":
        return torch.optim.Adam(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    if ocfg.name == "adamw":
        return torch.optim.AdamW(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    return torch.optim.SGD(params, lr=ocfg.lr, momentum=0.9, nesterov=True, weight_decay=ocfg.weight_decay)


def build_scheduler(
    ocfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``optim.warmup_epochs``, then constant or cosine to zero; stepped once per step."""
    total = steps_per_epoch * epochs
    warmup = int(ocfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if ocfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_ema(ocfg: OptimConfig, model: nn.Module) -> AveragedModel | None:
    """An exponential moving average of the weights (and buffers) when ``optim.ema`` is on."""
    if not ocfg.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ocfg.ema_decay), use_buffers=True)


def clip_gradients(ocfg: OptimConfig, model: nn.Module, quirks: Quirks) -> None:
    """Clip the gradients as ``optim.clip_grad`` says; ``clip_mode=auto`` follows the model's quirks (AGC for
    NFNets, the global norm otherwise). Called on every step, also when clipping is off."""
    if ocfg.clip_grad is None:
        return
    mode = quirks.clip_mode if ocfg.clip_mode == "auto" else ocfg.clip_mode
    if mode == "agc":
        adaptive_clip_grad(model.parameters(), clip_factor=ocfg.clip_grad)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg.clip_grad)
