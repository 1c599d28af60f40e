"""Augmentation: per-sample transforms applied to whole batches on the device, and batch mixers.

Per-sample transforms (flips, rotation, translation, intensity jitter) draw their random parameters apart from
applying them and work on any channel count. Batch mixers (CutMix, MixUp) are kept apart from them. Both run on
the training batches only; validation images are never augmented.
"""

from locbench.augment.presets import AUGMENTATIONS, MIXERS, Augmentation, build_augmentation

__all__ = ["AUGMENTATIONS", "MIXERS", "Augmentation", "build_augmentation"]
