"""``locbench preview DATA``: a grid of fields as RGB composites with their ids and class names; optionally each
stain in its own panel, a per-image contrast stretch (the default for 16-bit fields) or the green protein stain
alone."""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
from pathlib import Path

from locbench.commands._common import add_data_args, table_from_args

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("preview", help="render fields as RGB composites in a captioned grid")
    add_data_args(p, positional=True)
    p.add_argument("--n", type=int, default=6, help="number of fields (default 6)")
    p.add_argument("--ids", nargs="+", default=None, help="these fields instead of a random sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    p.add_argument("--size", type=int, default=384, help="pixels per field in the grid (default 384)")
    p.add_argument("--out", default="preview.png", help="image to write (default preview.png)")
    p.add_argument(
        "--panels", action="store_true", help="one row per field: the composite, then each stain alone in grey"
    )
    p.add_argument("--green", action="store_true", help="show the green (protein) stain alone instead of the composite")
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="outline every cell of these instance masks ({ID}.png or {ID}_predictedmask.png, e.g. from "
        "`locbench segment`) in white over the composite",
    )
    p.add_argument(
        "--stretch",
        choices=("auto", "on", "off"),
        default="auto",
        help="per-image contrast stretch of each stain (its 0.5th-99.8th percentiles to black-white); auto "
        "(default): on for 16-bit fields, off for 8-bit ones",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from locbench.errors import BadInputError

    table = table_from_args(args)
    if args.ids:
        row = {fid: i for i, fid in enumerate(table.ids)}
        unknown = [fid for fid in args.ids if fid not in row]
        if unknown:
            raise BadInputError(f"{len(unknown)} --ids are not in {table.csv_path}", unknown, "check the ids")
        indices = [row[fid] for fid in args.ids]
    else:
        rng = np.random.default_rng(args.seed)
        indices = sorted(rng.choice(len(table), size=min(args.n, len(table)), replace=False).tolist())
    out = render_preview(
        table,
        indices,
        args.out,
        size=args.size,
        resize_policy=args.resize or "pad",
        stretch={"auto": None, "on": True, "off": False}[args.stretch],
        panels=args.panels,
        green_only=args.green,
        masks=args.masks,
    )
    print(f"preview of {len(indices)} fields written to {out}")
    return 0


#: What each stain shows in HPA images (titles of the per-stain panels).
STAIN_ROLES = {"red": "microtubules", "green": "protein", "blue": "nucleus", "yellow": "ER"}


def render_preview(
    table,
    indices: list[int],
    out: str | os.PathLike,
    *,
    size: int = 384,
    resize_policy: str = "pad",
    stretch: bool | None = None,
    panels: bool = False,
    green_only: bool = False,
    masks: str | os.PathLike | None = None,
) -> Path:
    """Draw fields ``indices`` of ``table`` in a captioned grid and save it (atomically).

    Args:
        table: The dataset.
        indices: Rows of ``table`` to draw.
        out: The image to write (format from its suffix).
        size: Pixels per field.
        resize_policy: How a non-square field becomes square (``pad`` or ``crop``).
        stretch: Per-image contrast stretch of each stain (see ``data.channels.display_planes``); ``None``: for
            16-bit fields only.
        panels: One row per field: the composite (or the green stain), then every stain alone in grey.
        green_only: The green (protein) stain alone in place of the composite.
        masks: A folder of instance masks: every cell outlined in white (see ``cells.overlay``).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    from locbench.cells.overlay import overlay_rgb
    from locbench.cells.segment import mask_path, read_mask
    from locbench.data.channels import composite_rgb, display_planes
    from locbench.data.images import read_field_raw, read_field_stains
    from locbench.errors import BadInputError
    from locbench.store.atomic import atomic_write_bytes

    if masks is not None:
        missing = [table.ids[i] for i in indices if mask_path(masks, table.ids[i]) is None]
        if missing:
            raise BadInputError(f"{len(missing)} field(s) have no mask in {masks}", missing, "segment them first")

    stains = list(table.stains)
    if panels:
        rows, cols = len(indices), 1 + len(stains)
        fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 3.3 * rows), squeeze=False)
    else:
        cols = min(3, len(indices))
        rows = (len(indices) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(indices):
        raw = read_field_raw(table.sources(i), stains, size, resize_policy=resize_policy)
        stretched = stretch if stretch is not None else raw.dtype.itemsize > 1
        planes = dict(zip(stains, display_planes(raw, stretch=stretched), strict=True))
        shown = {"green": planes["green"]} if green_only and "green" in planes else planes
        ax = axes[k, 0] if panels else axes.flat[k]
        if masks is None:
            ax.imshow(composite_rgb(shown))
        else:  # outlines are drawn on the field as it is (not padded), scaled to the panel
            full = read_field_stains(table.sources(i), list(shown))
            ax.imshow(overlay_rgb(full, read_mask(mask_path(masks, table.ids[i])), size=size, stretch=stretched))
        what = "green stain alone" if shown is not planes else "composite"
        if masks is not None:
            what += ", cells outlined"
        if stretched:
            what += ", contrast stretched"
        names = _names(table, i)
        labels = textwrap.wrap(", ".join(names) or "no label", 44)
        caption = "\n".join([*textwrap.wrap(table.ids[i], 44), what, *labels])  # wrapped: never wider than a panel
        ax.set_title(caption, fontsize=7)
        if panels:
            for ax, stain in zip(axes[k, 1:], stains, strict=True):
                ax.imshow(planes[stain], cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_title(f"{stain} ({STAIN_ROLES.get(stain, stain)})", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def _names(table, i: int) -> list[str]:
    return [name for name, on in zip(table.scheme.classes, table.targets[i], strict=True) if on]
