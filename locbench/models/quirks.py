"""What a backbone family asks of the training loop, beyond what timm builds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quirks:
    """A backbone's needs the training loop follows when the config leaves the choice to it (``auto``)."""

    clip_mode: str = "norm"
    """Gradient clipping for ``optim.clip_mode=auto``: ``agc`` (adaptive, per unit) or ``norm`` (global norm)."""
    channels_last: bool = True
    """Whether the channels_last memory layout speeds the model up on CUDA tensor cores."""


#: NFNets train without batch norm, with adaptive gradient clipping as part of their recipe (Brock et al. 2021);
#: their scaled weight standardisation runs slower in the channels_last layout.
_FAMILIES = {"nfnet": Quirks(clip_mode="agc", channels_last=False)}


def quirks(backbone: str) -> Quirks:
    """The quirks of ``backbone`` (a timm name or a study alias such as ``nfnet_l0``); most models have none."""
    for family, q in _FAMILIES.items():
        if family in backbone:
            return q
    return Quirks()
