"""Test-time augmentation and ensembles as modules: the mean of sigmoid probabilities over views and models.

:class:`ProbabilityMean` runs every model on every view of a batch (flips, rotations by 90 degrees) and averages the
sigmoid probabilities. It returns the logits of that mean, so a caller that applies ``torch.sigmoid`` to a model's
output (the inference loop, the training loop's test pass) gets the averaged probabilities without knowing it was
wrapped. A view of a square image is one element of the dihedral group of the square (D8: 4 rotations, each with or
without a mirror); a mode averages over a subgroup, so its output is unchanged when the input is flipped (``flips``)
or flipped and rotated (``d8``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Test-time augmentation modes and their forward passes per image: ``none``; ``hflip`` (identity and the left-right
#: mirror); ``flips`` (identity, left-right, up-down, both = a 180 degree rotation); ``d8`` (the 8 symmetries of the
#: square: 4 rotations by 90 degrees, each with and without a mirror).
TTA_PASSES = {"none": 1, "hflip": 2, "flips": 4, "d8": 8}
TTA_MODES = tuple(TTA_PASSES)

#: A view: (mirror left-right, mirror up-down, transpose), applied in that order.
View = tuple[bool, bool, bool]
IDENTITY: View = (False, False, False)
_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (IDENTITY,),
    "hflip": (IDENTITY, (True, False, False)),
    "flips": tuple((h, v, False) for h in (False, True) for v in (False, True)),
    "d8": tuple((h, v, t) for t in (False, True) for h in (False, True) for v in (False, True)),
}


def tta_views(mode: str) -> tuple[View, ...]:
    """The views a mode averages over (see :data:`TTA_PASSES`); raises ValueError naming the modes."""
    if mode not in _VIEWS:
        raise ValueError(f"test-time augmentation {mode!r}: use one of {', '.join(TTA_MODES)}")
    return _VIEWS[mode]


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """``x`` (..., H, W) mirrored and/or transposed as ``view`` says (a transpose needs H == W to keep the shape)."""
    h, v, t = view
    dims = [d for d, on in ((-1, h), (-2, v)) if on]
    if dims:
        x = torch.flip(x, dims)
    return x.transpose(-1, -2) if t else x


class ProbabilityMean(nn.Module):
    """The mean sigmoid probability of ``models`` over ``views`` of the input, returned as logits.

    ``len(models) * len(views)`` forward passes per batch, one after another (memory stays that of one pass).
    The mean is taken in float64 (float32 on MPS, which has no float64) and turned back into logits, so that
    ``sigmoid(output)`` is the mean to float32 precision; a mean of exactly 0 or 1 becomes an infinite logit, whose
    sigmoid is again 0 or 1.
    """

    def __init__(self, models: Sequence[nn.Module], views: Sequence[View] = (IDENTITY,)) -> None:
        super().__init__()
        if not models or not views:
            raise ValueError("ProbabilityMean needs at least one model and one view")
        self.members = nn.ModuleList(models)
        self.views = tuple(views)

    @property
    def passes(self) -> int:
        """Forward passes per batch."""
        return len(self.members) * len(self.views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if x.device.type == "mps" else torch.float64
        total = None
        for view in self.views:
            xv = apply_view(x, view)
            for model in self.members:
                p = torch.sigmoid(model(xv).to(dtype))
                total = p if total is None else total + p
        return torch.logit(total / self.passes).float()


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """``model`` averaged over the views of ``mode`` (:func:`tta_views`); ``none`` returns ``model`` itself, so
    runs without test-time augmentation compute exactly what they did before."""
    views = tta_views(mode)
    return model if mode == "none" else ProbabilityMean([model], views)
