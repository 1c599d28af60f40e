"""Named augmentation presets (`locbench list augmentations`) and batch mixers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

from locbench.augment.batch import IntensityJitterBatch, RandomAffineBatch
from locbench.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")
MIXERS: Registry = Registry("mixer")

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class RandomApplyMixer:
    """Apply a torchvision mixer (CutMix, MixUp) to a batch with probability ``p``; multi-hot targets mix by area
    (CutMix) or weight (MixUp)."""

    def __init__(self, mixer: nn.Module, p: float) -> None:
        self.mixer = mixer
        self.p = p

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # global torch RNG: the engine seeds it per epoch, so mixing is reproducible and resumable
        if x.shape[0] < 2 or float(torch.rand(())) >= self.p:
            return x, y
        return self.mixer(x, y)


@MIXERS.register("cutmix", "CutMix: paste a box from another image, targets mixed by area")
def cutmix(cfg) -> RandomApplyMixer:
    return RandomApplyMixer(v2.CutMix(alpha=cfg.cutmix_beta, num_classes=None), cfg.cutmix_p)


@MIXERS.register("mixup", "MixUp: blend two images, targets blended by the same weight")
def mixup(cfg) -> RandomApplyMixer:
    return RandomApplyMixer(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=None), cfg.mixup_p)


@dataclass
class Augmentation:
    """What the engine applies to a training batch: per-sample transforms, then an optional mixer."""

    transforms: list[nn.Module]
    mixer: Mixer | None = None

    @property
    def per_stain(self) -> bool:
        """Whether a stain fed in several channels can be augmented once and repeated, with the same random draws
        and pixels: every per-sample transform says so (``per_stain``); mixers move whole images alike."""
        return all(t.per_stain for t in self.transforms)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for t in self.transforms:
            x = t(x, generator)
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        return x, y


def _standard(cfg) -> list[nn.Module]:
    out: list[nn.Module] = [RandomAffineBatch(rotate=cfg.rotate, translate=cfg.translate, flip=cfg.flip)]
    if cfg.intensity > 0:
        out.append(IntensityJitterBatch(magnitude=cfg.intensity))
    return out


@AUGMENTATIONS.register("standard", "flips, ±20° rotation, ±10% translation (the study's)")
def standard(cfg) -> Augmentation:
    return Augmentation(_standard(cfg))


@AUGMENTATIONS.register("cutmix", "standard, then CutMix (beta 1, p 0.5) on the batch")
def cutmix_preset(cfg) -> Augmentation:
    return Augmentation(_standard(cfg), MIXERS.get("cutmix")(cfg))


@AUGMENTATIONS.register("mixup", "standard, then MixUp (alpha 0.2, p 0.5) on the batch")
def mixup_preset(cfg) -> Augmentation:
    return Augmentation(_standard(cfg), MIXERS.get("mixup")(cfg))


@AUGMENTATIONS.register("none", "no augmentation")
def none(cfg) -> Augmentation:
    return Augmentation([IntensityJitterBatch(magnitude=cfg.intensity)] if cfg.intensity > 0 else [])


def build_augmentation(cfg) -> Augmentation:
    """Build the preset named by ``cfg.name`` (a :class:`locbench.config.AugmentConfig`)."""
    return AUGMENTATIONS.get(cfg.name)(cfg)
