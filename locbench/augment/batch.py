"""Per-sample random transforms applied to a batch in one call (on whatever device the batch is on).

torchvision's v2.RandomAffine draws one set of parameters per call; on a batch tensor that would move every
image the same way. Here each image gets its own flip, angle and shift, applied with one affine_grid /
grid_sample over the batch, which keeps the work on the accelerator instead of in loader workers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomAffineBatch(nn.Module):
    """Random flips, rotation (±``rotate`` degrees) and translation (±``translate`` of the side), per sample."""

    per_stain = True
    """Acts on each stain alone with draws that do not depend on the stains: a stain fed twice can be done once."""

    def __init__(self, *, rotate: float = 20.0, translate: float = 0.1, flip: bool = True) -> None:
        super().__init__()
        self.rotate = rotate
        self.translate = translate
        self.flip = flip

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw per-sample parameters on the CPU (so a CPU generator gives the same numbers on any device)."""
        u = torch.rand(n, 5, generator=generator)
        angle = (u[:, 0] * 2 - 1) * math.radians(self.rotate)
        shift = (u[:, 1:3] * 2 - 1) * self.translate * 2  # grid coordinates span [-1, 1], i.e. 2 per side
        flips = (u[:, 3:5] < 0.5) if self.flip else torch.zeros(n, 2, dtype=torch.bool)
        return {"angle": angle, "shift": shift, "flips": flips}

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        cos, sin = params["angle"].cos(), params["angle"].sin()
        sx = 1 - 2 * params["flips"][:, 0].float()
        sy = 1 - 2 * params["flips"][:, 1].float()
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = -sin * sy
        theta[:, 1, 0] = sin * sx
        theta[:, 1, 1] = cos * sy
        theta[:, :, 2] = params["shift"]
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape[0], generator))


class IntensityJitterBatch(nn.Module):
    """Per-sample, per-channel brightness and contrast jitter for any channel count (ColorJitter refuses 4)."""

    per_stain = False
    """Draws numbers per channel: fed fewer channels, it would draw fewer of them."""

    def __init__(self, *, magnitude: float = 0.2) -> None:
        super().__init__()
        self.magnitude = magnitude

    def sample_params(self, n: int, c: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        u = torch.rand(2, n, c, 1, 1, generator=generator) * 2 - 1
        return {"gain": 1 + self.magnitude * u[0], "offset": 0.5 * self.magnitude * u[1]}

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        gain = params["gain"].to(x.device, x.dtype)
        offset = params["offset"].to(x.device, x.dtype)
        mean = x.mean(dim=(2, 3), keepdim=True)
        return ((x - mean) * gain + mean + offset).clamp(0, 1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape[0], x.shape[1], generator))
