"""`locbench browse RUN_DIR`: a static page to look through a run's images with their predictions."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_force_arg, out_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "browse",
        help="an image browser of a run: thumbnails, true and predicted classes, filters by class and outcome",
        description="Write RUN_DIR/browse/index.html (or --out/index.html) and its thumbnails: every image of the "
        "run's stored predictions as the composite and the green stain, its true and predicted classes with "
        "probabilities, filters by class and by outcome (TP/FP/FN at the run's thresholds), sort by "
        "confidence, pages of 60. A cell-level run shows its fields with every cell outlined in the colour of the "
        "class it is called (white: no call), its cells' true and called classes on click, and filters on cells. "
        "One HTML file and a folder of JPEGs (made once, reused while the fields are unchanged): open it from "
        "disk, no server needed.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `locbench train` (image or cell level)")
    p.add_argument("--data", help="the run's dataset, if it moved (default: data.path of the run's config)")
    p.add_argument(
        "--part",
        choices=["val", "test"],
        default=None,
        help="which stored predictions: test or val (default: the run's test part, val for a run without one)",
    )
    p.add_argument("--out", type=out_path, help="output folder (default RUN_DIR/browse)")
    p.add_argument("--size", type=int, default=160, help="thumbnail side in pixels (default 160)")
    p.add_argument(
        "--cams",
        metavar="METHOD",
        help="also draw class activation maps (gradcam, gradcam++, ...) of each image's three most telling classes, "
        "shown when an image is clicked (runs the model once per image; image-level runs)",
    )
    p.add_argument("--device", default="auto", help="where the maps are computed: auto, cpu, cuda, ... (default auto)")
    add_force_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.explain.browser import write_browser

    page = write_browser(
        args.run_dir,
        data=args.data,
        out=args.out,
        part=args.part,
        size=args.size,
        force=args.force,
        cams=args.cams,
        device=args.device,
    )
    print(f"image browser: {page}\n(open it in a browser; the thumbnails are in {page.parent / 'thumbs'})")
    return 0
