"""Composite fluorescence images for display and grids of CAM overlays with their captions."""

from __future__ import annotations

import io
import logging
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from skimage.transform import resize

from locbench.data.channels import STAINS, composite_rgb
from locbench.errors import LocbenchError
from locbench.explain.cam import compute_cams
from locbench.store.atomic import atomic_write

log = logging.getLogger(__name__)


def rgb_composite(image: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """Blend stain channels into an RGB picture: red, green, blue as themselves, yellow into red + green.

    A channel name that repeats (``green`` mode feeds the protein stain three times) is drawn once, so a
    green-only image shows green, not white.

    Args:
        image: ``(C, H, W)`` float array in [0, 1] (a torch tensor is accepted too).
        channels: ``C`` stain names from ``red``, ``green``, ``blue``, ``yellow`` (see ``resolve_channels``).

    Returns:
        ``(H, W, 3)`` float32 in [0, 1] (sums clipped at 1).

    Raises:
        LocbenchError: on a channel-count mismatch or an unknown stain name.
    """
    arr = _to_numpy(image).astype(np.float32, copy=False)
    if arr.ndim != 3 or arr.shape[0] != len(channels):
        raise LocbenchError(
            f"rgb_composite got an image of shape {arr.shape} for channels {tuple(channels)}; expected "
            f"({len(channels)}, H, W)"
        )
    planes: dict[str, np.ndarray] = {}
    for plane, name in zip(arr, channels, strict=True):
        if name not in STAINS:
            raise LocbenchError(f"unknown stain {name!r} in channels {tuple(channels)}; use {', '.join(STAINS)}")
        planes.setdefault(name, np.clip(plane, 0.0, 1.0))  # a repeated stain is drawn once
    return composite_rgb(planes)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class CamPanel:
    """One class's CAM for one image, with what the caption says about it."""

    cam: np.ndarray
    """``(h, w)`` map in [0, 1]; resized to the image when drawn."""
    class_name: str
    prob: float | None = None
    """The model's probability for this class, if known."""
    outcome: str | None = None
    """``TP``, ``FP``, ``FN`` or ``TN`` at the run's threshold (see :func:`outcome`)."""
    threshold: float | None = None
    """The class's tuned threshold, if known: the caption compares the probability with it."""


@dataclass(frozen=True)
class CamRow:
    """One image of a CAM grid: the composite picture then one overlay per explained class."""

    image_id: str
    rgb: np.ndarray
    """``(H, W, 3)`` float in [0, 1], e.g. from :func:`rgb_composite`."""
    panels: Sequence[CamPanel] = field(default_factory=tuple)
    caption: str = ""
    """Extra text under the image id (e.g. its true classes)."""


def outcome(prob: float, target: int | bool, threshold: float) -> str:
    """``TP``/``FP``/``FN``/``TN`` for one class of one image; positive means ``prob >= threshold``."""
    pred = prob >= threshold
    return ("T" if bool(pred) == bool(target) else "F") + ("P" if pred else "N")


def render_cam_grid(
    rows: Sequence[CamRow],
    out_path: str | os.PathLike,
    *,
    alpha: float = 0.45,
    cmap: str = "jet",
    panel_inches: float = 2.2,
    dpi: int = 100,
) -> Path:
    """Write a PNG grid: one row per image, the composite first, then each class's CAM over it.

    Captions: the image id (and ``caption``) above the composite; class, probability against the threshold and
    TP/FP/FN/TN above each overlay. One colour bar under the grid gives the scale of the maps.

    Args:
        rows: The images to show, top to bottom.
        out_path: The PNG to write (atomically).
        alpha: Opacity of the CAM over the image.
        cmap: A matplotlib colormap name (``jet``, ``inferno``, ...).
        panel_inches: Size of one panel.
        dpi: Output resolution.

    Returns:
        The path written.

    Raises:
        LocbenchError: when ``rows`` is empty.
    """
    if not rows:
        raise LocbenchError(f"no images to draw into {out_path}; pick at least one image to explain")
    n_cols = 1 + max(len(r.panels) for r in rows)
    fig = Figure(figsize=(panel_inches * n_cols, (panel_inches + 0.45) * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), n_cols, squeeze=False))
    for r, row in enumerate(rows):
        rgb = np.clip(np.asarray(row.rgb, dtype=np.float32), 0.0, 1.0)
        for ax in axes[r]:
            ax.set_axis_off()
        axes[r, 0].imshow(rgb, interpolation="nearest")
        axes[r, 0].set_title(
            _wrap(row.image_id + (f"\n{row.caption}" if row.caption else ""), panel_inches), fontsize=7
        )
        for j, panel in enumerate(row.panels, start=1):
            ax = axes[r, j]
            ax.imshow(rgb, interpolation="nearest")
            cam = np.asarray(panel.cam, dtype=np.float32)
            if np.nanmax(cam, initial=0.0) > 0:  # an all-zero map (no evidence) would tint the image one colour
                ax.imshow(_resize(cam, rgb.shape[:2]), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            ax.set_title(
                _wrap(panel.class_name + _details(panel), panel_inches),
                fontsize=7,
                color=_OUTCOME_COLOR.get(panel.outcome or "", "black"),
            )
    # One scale for every panel: each map is scaled to its own maximum, so colours compare places within a map.
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap),
        ax=axes,
        location="bottom",
        shrink=min(0.6, 3.0 / n_cols + 0.2),
        aspect=30,
        pad=0.01,
    )
    bar.set_label("class activation, each map scaled to its own maximum (1); no colour: a zero map", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(out_path, lambda f: f.write(buf.getvalue()))


def _wrap(text: str, inches: float) -> str:
    """Each line of a caption wrapped to the width of its panel (7-point text: about 14 characters an inch)."""
    width = max(12, int(14 * inches))
    return "\n".join(part for line in text.split("\n") for part in (textwrap.wrap(line, width) or [""]))


def _details(panel: CamPanel) -> str:
    """The caption's second line: probability against threshold, then the outcome ("p 0.480 < 0.483: FN")."""
    if panel.prob is None:
        return f"\n{panel.outcome}" if panel.outcome else ""
    if panel.threshold is None:
        text = f"p={panel.prob:.2f}"
    elif panel.threshold > 1:  # an untrainable class: its threshold is above every probability
        text = f"p {panel.prob:.3f}, never predicted"
    else:
        text = f"p {panel.prob:.3f} {'≥' if panel.prob >= panel.threshold else '<'} {panel.threshold:.3f}"
    return "\n" + text + (f": {panel.outcome}" if panel.outcome else "")


# Errors in red, hits in green: the eye finds the failures first.
_OUTCOME_COLOR = {"TP": "darkgreen", "FP": "firebrick", "FN": "firebrick", "TN": "dimgray"}


def _resize(cam: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == tuple(hw):
        return cam

    return resize(cam, hw, order=1, mode="edge", anti_aliasing=False, preserve_range=True).astype(np.float32)


def cam_rows(
    ids: Sequence[str],
    display: np.ndarray,
    channels: Sequence[str],
    cams: np.ndarray,
    class_indices: Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    probs: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
) -> list[CamRow]:
    """Assemble :class:`CamRow` objects from a batch and the output of :func:`~locbench.explain.compute_cams`.

    Args:
        ids: ``B`` image ids.
        display: ``(B, C, H, W)`` images in [0, 1] for display (the raw stains, before model normalisation).
        channels: The ``C`` stain names.
        cams: ``(B, K, h, w)`` maps from ``compute_cams``.
        class_indices: ``B`` lists of the ``K`` classes the maps explain.
        class_names: All class names of the scheme.
        probs: Optional ``(B, num_classes)`` probabilities, for the captions.
        targets: Optional ``(B, num_classes)`` 0/1 truth; with ``probs`` and ``thresholds`` gives TP/FP/FN/TN.
        thresholds: Optional ``(num_classes,)`` thresholds.

    Returns:
        One row per image.
    """
    rows = []
    for i, image_id in enumerate(ids):
        panels = []
        for j, c in enumerate(class_indices[i]):
            prob = float(probs[i, c]) if probs is not None else None
            out = None
            if probs is not None and targets is not None and thresholds is not None:
                out = outcome(prob, targets[i, c], float(thresholds[c]))
            thr = float(thresholds[c]) if thresholds is not None else None
            panels.append(CamPanel(cam=cams[i, j], class_name=class_names[c], prob=prob, outcome=out, threshold=thr))
        truth = "" if targets is None else "true: " + ", ".join(class_names[c] for c in np.flatnonzero(targets[i]))
        rows.append(
            CamRow(image_id=str(image_id), rgb=rgb_composite(display[i], channels), panels=panels, caption=truth)
        )
    return rows


def classes_to_explain(
    probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, *, k: int = 3
) -> list[list[int]]:
    """Pick ``k`` classes per image worth a CAM: errors and hits first, then the most probable others.

    Order per image: missed positives (FN) and false alarms (FP), then true positives, then the remaining
    classes by probability, so every image gets exactly ``k`` classes (what ``compute_cams`` needs).

    Args:
        probs: ``(B, C)`` probabilities.
        targets: ``(B, C)`` 0/1 truth.
        thresholds: ``(C,)`` thresholds.
        k: Classes per image (at most ``C``).

    Returns:
        ``B`` lists of ``k`` class indices.
    """
    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(targets).astype(bool)
    pred = probs >= np.asarray(thresholds, dtype=np.float64)[None, :]
    k = min(k, probs.shape[1])
    out = []
    for p, t, y in zip(probs, truth, pred, strict=True):
        # Rank: errors (0), hits (1), the rest (2); inside a rank, higher probability first.
        rank = np.where(t != y, 0, np.where(t & y, 1, 2))
        order = np.lexsort((-p, rank))
        out.append([int(c) for c in order[:k]])
    return out


def explain_images(
    model,
    images,
    display: np.ndarray,
    ids: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    class_names: Sequence[str],
    channels: Sequence[str],
    out_png: str | os.PathLike,
    *,
    method: str = "gradcam",
    k: int = 3,
    target_layer=None,
) -> tuple[np.ndarray, list[list[int]]]:
    """CAMs of a batch for its most telling classes, drawn to a PNG grid: the whole ``explain`` figure step.

    Args:
        model: The run's model (``nn.Module``, logits out).
        images: ``(B, C, H, W)`` float tensor preprocessed for the model.
        display: ``(B, C, H, W)`` the same images in [0, 1] for display.
        ids: ``B`` image ids.
        probs: ``(B, num_classes)`` stored probabilities of these images.
        targets: ``(B, num_classes)`` 0/1 truth.
        thresholds: ``(num_classes,)`` the run's thresholds.
        class_names: The scheme's class names.
        channels: The ``C`` stain names.
        out_png: Where to write the grid.
        method: CAM method (see :data:`locbench.explain.cam.METHODS`).
        k: Classes per image (see :func:`classes_to_explain`).
        target_layer: Optional explicit layer.

    Returns:
        ``(cams (B, k, H, W), class_indices)``, e.g. for :func:`~locbench.explain.localization_report`.
    """
    chosen = classes_to_explain(probs, targets, thresholds, k=k)
    cams = compute_cams(model, images, chosen, method=method, target_layer=target_layer)
    rows = cam_rows(
        ids, display, channels, cams, chosen, class_names, probs=probs, targets=targets, thresholds=thresholds
    )
    render_cam_grid(rows, out_png)
    return cams, chosen
