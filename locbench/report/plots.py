"""Report figures as PNG bytes (matplotlib's object API with the Agg canvas: no global pyplot state)."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from locbench.figures import place_labels

DPI = 110


def _figure(w: float, h: float, *, layout: str | None = "constrained"):
    fig = Figure(figsize=(w, h), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _err(lo: Sequence[float], hi: Sequence[float], mean: Sequence[float]) -> np.ndarray:
    """Asymmetric error bars; zero where there is no interval.

    A bootstrap percentile interval on a tiny validation set can exclude the point estimate (e.g. mAP 0.260 with
    interval [0.266, 0.590]); matplotlib refuses negative bar lengths, so those sides are drawn as zero.
    """
    m, lo_, hi_ = (np.asarray(a, dtype=np.float64) for a in (mean, lo, hi))
    return np.clip(np.nan_to_num(np.vstack([m - lo_, hi_ - m]), nan=0.0), 0.0, None)


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *, title: str, cbar: str) -> bytes:
    """A heatmap (grid points x classes in the report) with the value written in each square (blank where NaN)."""
    n_r, n_c = matrix.shape
    fig = _figure(max(6.0, 0.42 * n_c + 3.5), max(2.5, 0.32 * n_r + 2.4))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    # Full names: the constrained layout makes room for them (a cut name is a name nobody can read).
    ax.set_xticks(range(n_c), list(cols), rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n_r), rows, fontsize=8)
    if n_r * n_c <= 900:
        for i in range(n_r):
            for j in range(n_c):
                v = matrix[i, j]
                if math.isfinite(v):
                    ax.text(
                        j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black"
                    )
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.8)
    return _png(fig)


def curves(series: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], keys: Sequence[tuple[str, str]]) -> bytes:
    """One panel per metric key (three to a row): the per-epoch mean over seeds of every grid point.

    Args:
        series: grid point label -> metric key -> (epochs, mean values).
        keys: (metric key, panel title) pairs, e.g. ``("val/map", "val mAP")``.
    """
    # The legend goes under the panels in three columns, so dozens of grid points still fit without clipping.
    rows = math.ceil(len(series) / 3)
    ncol = min(len(keys), 3)
    nrow = math.ceil(len(keys) / ncol)
    fig = _figure(4.2 * ncol, 3.0 * nrow + 0.2 + 0.17 * rows)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        ax.axis("off")
    colors = _colors(len(series))
    for ax, (key, title) in zip(axes, keys, strict=False):
        for (label, s), color in zip(series.items(), colors, strict=True):
            if key in s:
                ep, val = s[key]
                ax.plot(ep, val, color=color, lw=1.4, marker="o", ms=2.5, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    found: dict[str, Any] = {}  # every grid point once, though a loss panel shows only the points of its loss
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(lab, h)
    handles, labels = list(found.values()), list(found)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    return _png(fig)


def pareto(panels: Sequence[tuple[str, Sequence[dict]]], *, ylabel: str) -> bytes:
    """Accuracy against cost, one panel per cost; the Pareto front (no other grid point is both cheaper and better)
    is drawn in red, joined by a line and labelled (other points would overlap; they are in the leaderboard).

    Args:
        panels: (x-axis label, points) pairs; a point is a dict with ``label``, ``x``, ``y``, ``lo``, ``hi`` and,
            for a measured cost, ``xlo`` and ``xhi`` (its spread, drawn as a horizontal bar).
    """
    fig = _figure((6.0 if len(panels) < 3 else 4.4) * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (xlabel, points) in zip(axes, panels, strict=True):
        pts = [p for p in points if math.isfinite(p["x"]) and math.isfinite(p["y"])]
        front = pareto_front([(p["x"], p["y"]) for p in pts])
        others = [p for i, p in enumerate(pts) if i not in front]
        if others:
            _errorbar(ax, others, fmt="o", color="#7f9fbf", ms=4, lw=0.8, alpha=0.8, label="other configurations")
        if front:
            fp = [pts[i] for i in front]
            _errorbar(ax, fp, fmt="o--", color="#d62728", ms=6, lw=1, label="Pareto front")
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(x=0.15)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(ylabel)
    for ax, (xlabel, points) in zip(axes, panels, strict=True):
        pts = [p for p in points if math.isfinite(p["x"]) and math.isfinite(p["y"])]
        front = [pts[i] for i in pareto_front([(p["x"], p["y"]) for p in pts])]
        key = place_labels(
            ax,
            [p["x"] for p in front],
            [p["y"] for p in front],
            [p["label"] for p in front],
            avoid=[(p["x"], p["y"]) for p in pts if p not in front],
            fontsize=7,
            color="#8b1a1a",
        )
        if key:  # labels with no free spot: numbered on the plot, named under it
            ax.set_xlabel(xlabel + "\n" + "; ".join(key), fontsize=9)
    return _png(fig)


def _errorbar(ax: Any, points: Sequence[dict], **style: Any) -> None:
    """Points (``x``, ``y``, ``lo``, ``hi``) with their interval as error bars (caps 2 pt), drawn in ``style``."""
    ys, xs = [p["y"] for p in points], [p["x"] for p in points]
    lo, hi = [p["lo"] for p in points], [p["hi"] for p in points]
    xerr = None
    if any("xlo" in p for p in points):  # a measured cost (time) with its spread over seeds
        xerr = _err([p.get("xlo", p["x"]) for p in points], [p.get("xhi", p["x"]) for p in points], xs)
    ax.errorbar(xs, ys, yerr=_err(lo, hi, ys), xerr=xerr, capsize=2, **style)


def pareto_front(xy: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower-or-equal x and higher-or-equal y, one strictly), sorted by x."""
    idx = []
    for i, (x, y) in enumerate(xy):
        if not any((x2 <= x and y2 >= y and (x2 < x or y2 > y)) for j, (x2, y2) in enumerate(xy) if j != i):
            idx.append(i)
    return sorted(idx, key=lambda i: xy[i][0])


def main_effects(effects: Mapping[str, Mapping[str, tuple[float, float, float]]], *, ylabel: str) -> bytes:
    """One panel per axis: mean metric per level with its interval.

    Args:
        effects: axis label -> level -> (mean, lo, hi).
    """
    n = max(len(effects), 1)
    fig = _figure(min(3.3 * n + 0.6, 14), 3.3)
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, (axis, levels) in zip(axes, effects.items(), strict=False):
        names = list(levels)
        m = [levels[k][0] for k in names]
        ax.errorbar(
            range(len(names)),
            m,
            yerr=_err([levels[k][1] for k in names], [levels[k][2] for k in names], m),
            fmt="o-",
            capsize=4,
            color="#2c7fb8",
            lw=1.4,
        )
        ax.set_xticks(
            range(len(names)), [textwrap.fill(k, 18) for k in names], rotation=20 if len(names) > 3 else 0, fontsize=8
        )
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(axis, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    return _png(fig)


def confusion_grid(classes: Sequence[str], counts: np.ndarray, *, title: str) -> bytes:
    """Small multiples of per-class 2x2 confusion matrices (rows: truth, columns: prediction).

    Args:
        classes: class names.
        counts: ``(C, 2, 2)`` as ``sklearn.metrics.multilabel_confusion_matrix``: [[TN, FP], [FN, TP]].
    """
    n = len(classes)
    ncol = min(6, max(n, 1))
    nrow = math.ceil(n / ncol)
    # A fixed grid: constrained layout over dozens of small axes costs seconds and gains nothing here.
    fig = _figure(1.9 * ncol + 0.4, 2.05 * nrow + 0.8, layout=None)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.04, top=1 - 0.75 / (1.9 * nrow + 0.8), wspace=0.55, hspace=0.75)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        cm = counts[k].astype(np.float64)
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(
                    j,
                    i,
                    f"{int(cm[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rates[i, j] > 0.6 else "black",
                )
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=6)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=6)
        ax.set_title("\n".join(textwrap.wrap(classes[k], 24)), fontsize=7)  # wrapped, never cut
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def cross_confusion(classes: Sequence[str], counts: np.ndarray, *, title: str) -> bytes:
    """A class x class heatmap of false positives: row A, column B counts images where A was predicted but is
    not true while B is true (blank diagonal: a false positive of A never has A in the truth).

    Args:
        classes: class names (rows and columns).
        counts: ``(C, C)`` counts (see :func:`locbench.metrics.cross_confusion`).
    """
    n = len(classes)
    m = np.asarray(counts, dtype=np.float64).copy()
    np.fill_diagonal(m, np.nan)
    fig = _figure(max(6.0, 0.36 * n + 4.0), max(4.5, 0.33 * n + 3.0))
    ax = fig.add_subplot()
    top = max(float(np.nanmax(m, initial=0.0)), 1.0)
    cmap = colormaps["Reds"].with_extremes(bad="#d9dce1")  # the diagonal (impossible) in grey
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=top, aspect="auto")
    ax.set_xticks(range(n), list(classes), rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(n), list(classes), fontsize=8)
    ax.set_xlabel("true class on the image", fontsize=9)
    ax.set_ylabel("falsely predicted class", fontsize=9)
    for i in range(n):
        for j in range(n):
            if i != j and m[i, j] > 0:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > 0.6 * top else "black")  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="images", shrink=0.8)
    return _png(fig)


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
