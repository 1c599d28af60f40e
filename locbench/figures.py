"""Figure helpers shared by the explain figures and the report's plots: point labels that never print over each other.

matplotlib has no label placement; this is a small greedy one written here: each label tries a ring of offsets
around its point, nearest first, and takes the first whose box overlaps no label placed before it and stays
inside the axes. A label with no free spot gets a numbered marker and goes to a key beside the plot, so no text
is ever hidden or cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.transforms import Bbox

#: Offsets in points, tried in this order: right, left, above, below, the diagonals, then further out.
_RING = [
    (dx * r, dy * r)
    for r in (1, 1.6, 2.4, 3.4, 4.6, 6)
    for dx, dy in ((5, 3), (-5, 3), (5, -9), (-5, -9), (0, 9), (0, -15), (12, 10), (-12, 10), (12, -16), (-12, -16))
]


def place_labels(
    ax: Any,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    *,
    avoid: Sequence[tuple[float, float]] = (),
    **text: Any,
) -> list[str]:
    """Annotate each point ``(xs[i], ys[i])`` with ``labels[i]`` without overlaps; return the labels left out.

    The longest labels are placed first (they are the hardest to fit); one placed away from its point gets a thin
    line to it. A label that fits nowhere is drawn as a small number beside its point; the returned list holds
    ``"n: label"`` for each, for the caller to show as a key (e.g. in the figure's legend or caption).

    Args:
        ax: A matplotlib Axes whose figure has a canvas (Agg).
        xs, ys: Data coordinates of the points.
        labels: One text per point.
        avoid: More points (data coordinates) no label may cover; the labelled points and the axes' legend are
            avoided anyway.
        **text: Passed to ``ax.annotate`` (fontsize, color, ...).
    """
    fig = ax.figure
    fig.canvas.draw()  # limits and layout are final: the boxes measured below are the ones saved
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    # Every point keeps a margin free of other points' labels (8 pt: a label right beside a point reads as
    # that point's); a label may come closer to its own point (4 pt, the marker itself).
    near, own = 8.0 * fig.dpi / 72, 4.0 * fig.dpi / 72
    centres = ax.transData.transform(np.asarray([*zip(xs, ys, strict=True), *avoid], dtype=float))
    points = [Bbox.from_extents(px - near, py - near, px + near, py + near) for px, py in centres]
    taken: list[Any] = []
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    left_out: list[str] = []
    order = np.argsort([-len(s) for s in labels], kind="stable")  # long labels first: they are the hardest to fit
    for i in order:
        px, py = centres[i]
        blocked = [*taken, *points[:i], *points[i + 1 :], Bbox.from_extents(px - own, py - own, px + own, py + own)]
        box = _place(ax, xs[i], ys[i], labels[i], blocked, inside, renderer, text)
        if box is None:
            # no free spot: a number, itself placed without overlap where it can be, and the name in the key
            k = str(len(left_out) + 1)
            box = _place(ax, xs[i], ys[i], k, blocked, inside, renderer, text)
            if box is None:
                ann = ax.annotate(k, (xs[i], ys[i]), xytext=(3, 3), textcoords="offset points", in_layout=False, **text)
                box = ann.get_window_extent(renderer)
            left_out.append(f"{k}: {labels[i]}")
        taken.append(box)
    return left_out


def _place(ax: Any, x: float, y: float, label: str, blocked: list, inside: Any, renderer: Any, text: dict) -> Any:
    """Annotate at the first offset of the ring whose box is inside the axes and overlaps nothing in ``blocked``;
    the box of the label placed (None when no offset is free)."""
    for dx, dy in _RING:
        ha = "left" if dx >= 0 else "right"
        where = {"xytext": (dx, dy), "textcoords": "offset points", "ha": ha, "in_layout": False}
        ann = ax.annotate(label, (x, y), **where, **text)
        box = ann.get_window_extent(renderer)
        fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
        if fits and not any(box.overlaps(t) for t in blocked):
            if abs(dx) > 5 or abs(dy) > 15:  # away from its point: a thin line shows whose label it is
                ann.remove()
                line = {"arrowstyle": "-", "lw": 0.4, "color": "0.55", "shrinkA": 1, "shrinkB": 3}
                ax.annotate(label, (x, y), **where, arrowprops=line, **text)
            return box
        ann.remove()
    return None
