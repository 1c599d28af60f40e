"""``locbench synth OUT``: write a synthetic HPA-like dataset with known per-cell truth."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _cells(text: str) -> tuple[int, int]:
    """``MIN-MAX`` (or one number) → (min, max)."""
    try:
        parts = [int(v) for v in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(f"--cells {text!r}: expected MIN-MAX with 1 <= MIN <= MAX, e.g. 5-12")
    return parts[0], parts[1]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic HPA-like dataset (Kaggle layout + cell masks + per-cell truth)",
        description="Write a synthetic HPA-like dataset: train.csv, train/{ID}_{red,green,blue,yellow}.png, "
        "masks/{ID}.png, cells.csv (per-cell labels) and synth.json. The same seed gives the same bytes.",
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to create")
    p.add_argument("--images", type=int, default=200, help="number of fields (default 200)")
    p.add_argument("--size", type=int, default=256, help="field side in pixels (default 256)")
    p.add_argument(
        "--format",
        dest="edition",
        choices=("2021", "2018"),
        default="2021",
        help="class scheme and CSV syntax: 2021 (19 classes, ID,Label) or 2018 (28 classes, Id,Target)",
    )
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--noise", type=float, default=0.03, help="camera noise level, 0 = clean (default 0.03)")
    p.add_argument(
        "--intensity-spread",
        type=float,
        default=0.35,
        help="per-cell brightness spread, log-normal sigma (default 0.35)",
    )
    p.add_argument("--background", type=float, default=0.03, help="stain background level (default 0.03)")
    p.add_argument(
        "--cells",
        type=_cells,
        default=None,
        metavar="MIN-MAX",
        help="cells per field (default 5-12, fewer on small fields)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1; output does not depend on it)")
    p.add_argument("--preview", type=int, default=0, metavar="K", help="also write OUT/preview.png of K fields")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.data.synth import synthesize, write_preview

    out = synthesize(
        args.out,
        images=args.images,
        size=args.size,
        edition=args.edition,
        seed=args.seed,
        noise=args.noise,
        intensity_spread=args.intensity_spread,
        cells_per_field=args.cells,
        background=args.background,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    if args.preview > 0:
        log.info("synth: preview written to %s", write_preview(out, args.preview))
    return 0
