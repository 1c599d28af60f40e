"""Channel modes: which stains a model sees, in which order, and how to show them as an RGB picture."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

import numpy as np

from locbench.errors import LocbenchError

#: The four HPA stains, in the order the Kaggle layouts name them.
STAINS = ("red", "green", "blue", "yellow")

MODES = {
    # The protein channel alone, repeated so that ImageNet 3-channel stems take it unchanged.
    "green": ("green", "green", "green"),
    "rgb": ("red", "green", "blue"),
    "rgby": ("red", "green", "blue", "yellow"),
}


def check_stain_names(names: Mapping[str, str | int | None] | None) -> dict[str, str | int | None]:
    """``data.stains`` checked and completed: every stain left out keeps its own name (``{blue: DAPI}`` →
    ``{red: red, green: green, blue: DAPI, yellow: yellow}``).

    Raises:
        LocbenchError: an unknown stain, an unusable name or a negative index, naming its key ``data.stains.X``.
    """
    names = dict(names or {})
    for stain, name in names.items():
        key = f"config key data.stains.{stain}"
        if stain not in STAINS:
            close = difflib.get_close_matches(str(stain).lower(), STAINS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise LocbenchError(
                f"{key}: {stain!r} is not a stain{hint}; the stains are {', '.join(STAINS)}, each mapped to your "
                "name for it, e.g. {blue: DAPI, green: GFP, red: Tubulin, yellow: Calreticulin}"
            )
        if isinstance(name, str):
            if not name.strip() or any(c in name for c in "/\\\0{}"):
                raise LocbenchError(f"{key}: {name!r} is not usable as a file-name part or an OME channel name")
        elif name is not None and (isinstance(name, bool) or not isinstance(name, int) or name < 0):
            raise LocbenchError(f"{key}: {name!r} must be a name, a channel index >= 0, or null (no such stain)")
    full = {s: names.get(s, s) for s in STAINS}
    taken: dict[str | int, str] = {}
    for stain, name in full.items():
        if name is None:
            continue
        if name in taken:  # two stains from one file or channel is a slip, never a dataset
            raise LocbenchError(
                f"config keys data.stains.{taken[name]} and data.stains.{stain} both name {name!r}; give each stain "
                "its own name (a stain left out keeps its own: set it too, or to null if the dataset lacks it)"
            )
        taken[name] = stain
    return full


def resolve_channels(mode: str | Iterable[str]) -> tuple[str, ...]:
    """Turn a channel mode into the ordered tuple of stains the model receives.

    Args:
        mode: ``green`` (the protein stain repeated 3 times), ``rgb``, ``rgby``, an explicit comma list such as
            ``"green,blue"``, or an iterable of stain names.

    Returns:
        The stains in model-input order; ``len()`` of it is the model's ``in_chans``.
    """
    if isinstance(mode, str):
        key = mode.strip().lower()
        if key in MODES:
            return MODES[key]
        names = [c.strip().lower() for c in key.split(",")]
    else:
        names = [str(c).strip().lower() for c in mode]
    bad = [c for c in names if c not in STAINS]
    if not names or bad:
        raise LocbenchError(
            f"unknown channel mode {mode!r}: {', '.join(repr(b) for b in bad) or 'empty'} is not a stain; "
            f"use one of {', '.join(MODES)} or a comma list of {', '.join(STAINS)}"
        )
    return tuple(names)


def unique_stains(channels: Iterable[str]) -> tuple[str, ...]:
    """The distinct stains of ``channels`` in canonical order (red, green, blue, yellow).

    Canonical order makes ``rgby`` and ``yrgb`` share one cache and one file read per stain.
    """
    wanted = set(channels)
    return tuple(c for c in STAINS if c in wanted)


def composite_rgb(field: Mapping[str, np.ndarray]) -> np.ndarray:
    """Render stains as the HPA viewer does: red, green, blue as such, yellow added to red and green.

    Args:
        field: stain name → 2-D float array in [0, 1]; missing stains count as black.

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    shape = next(iter(field.values())).shape
    zero = np.zeros(shape, np.float32)
    yellow = field.get("yellow", zero)
    rgb = np.stack(
        [field.get("red", zero) + yellow, field.get("green", zero) + yellow, field.get("blue", zero)], axis=-1
    )
    return np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)


#: Percentiles of a stain's pixels that the display stretch maps to black and to full brightness.
STRETCH_PERCENTILES = (0.5, 99.8)


def display_planes(raw: np.ndarray, *, stretch: bool | None = None) -> np.ndarray:
    """Integer stain planes ``(C, H, W)`` as float32 in [0, 1] for a person to look at (never for a model).

    Args:
        raw: Pixels in their own type (uint8 or uint16), one plane per stain.
        stretch: Map each plane's :data:`STRETCH_PERCENTILES` to 0 and 1 (a per-image contrast stretch, so a
            dim 16-bit field that uses a few percent of its range is visible). ``None``: only for 16-bit pixels;
            8-bit fields (HPA's PNGs) are shown as they are, so brightness still compares between fields.
    """
    raw = np.asarray(raw)
    if stretch is None:
        stretch = raw.dtype.itemsize > 1
    if not stretch:
        top = np.iinfo(raw.dtype).max if raw.dtype.kind in "ui" else 1.0
        return np.clip(raw.astype(np.float32) / np.float32(top), 0.0, 1.0)
    out = np.empty(raw.shape, np.float32)
    for k, plane in enumerate(raw.astype(np.float32)):
        lo, hi = np.percentile(plane, STRETCH_PERCENTILES)
        out[k] = np.clip((plane - lo) / (hi - lo), 0.0, 1.0) if hi > lo else 0.0
    return out
