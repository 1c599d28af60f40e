"""``locbench preview DATA``: a grid of fields as RGB composites with their ids and class names."""

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
    out = render_preview(table, indices, args.out, size=args.size, resize_policy=args.resize or "pad")
    print(f"preview of {len(indices)} fields written to {out}")
    return 0


def render_preview(
    table, indices: list[int], out: str | os.PathLike, *, size: int = 384, resize_policy: str = "pad"
) -> Path:
    """Draw fields ``indices`` of ``table`` as HPA-style composites in a grid and save it (atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    from locbench.data.channels import composite_rgb
    from locbench.data.images import read_field
    from locbench.store.atomic import atomic_write_bytes

    cols = min(3, len(indices))
    rows = (len(indices) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices, strict=False):
        stains = table.stains
        pixels = read_field(table.sources(i), stains, size, resize_policy=resize_policy)
        ax.imshow(composite_rgb(dict(zip(stains, pixels, strict=True))))
        names = _names(table, i)
        caption = table.ids[i] + "\n" + "\n".join(textwrap.wrap(", ".join(names), 44))
        ax.set_title(caption, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def _names(table, i: int) -> list[str]:
    return [name for name, on in zip(table.scheme.classes, table.targets[i], strict=True) if on]
