"""What the model sees: uint8 batches turned into normalised float tensors on the device."""

from __future__ import annotations

import torch
from torch import nn

from locbench.augment import Augmentation
from locbench.engine.data import to_unit


class Normalize(nn.Module):
    """Per-stain (channel) standardisation with the training data's mean and std."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TrainInputs:
    """A loader's training batch to the model's input on ``device``: [0, 1] floats, augmented, normalised, in the
    chosen memory layout.

    When a stain fills several channels (``green`` mode feeds one stain three times) and the augmentation acts on
    each stain alone (:attr:`Augmentation.per_stain`), each distinct stain is augmented and normalised once and then
    repeated: a third of the work (bench_pipeline.py: 8% of a small model's step at 64 px), same draws, same pixels.
    """

    def __init__(
        self,
        channels: list[str],
        augment: Augmentation,
        mean: list[float],
        std: list[float],
        device: torch.device,
        channels_last: bool,
    ) -> None:
        self.augment, self.device, self.channels_last = augment, device, channels_last
        distinct = list(dict.fromkeys(channels))
        self.pick = self.repeat = None
        if len(distinct) < len(channels) and augment.per_stain:
            first = [channels.index(c) for c in distinct]
            self.pick = torch.tensor(first, device=device)
            self.repeat = torch.tensor([distinct.index(c) for c in channels], device=device)
            mean, std = [mean[i] for i in first], [std[i] for i in first]
        self.normalize = Normalize(mean, std).to(device)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.pick is not None:
            x = x.index_select(1, self.pick)
        x = to_unit(x)
        y = y.to(self.device, non_blocking=True)
        x, y = self.augment(x, y, generator)
        x = self.normalize(x)
        if self.repeat is not None:
            x = x.index_select(1, self.repeat)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y
