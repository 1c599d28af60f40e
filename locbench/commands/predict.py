"""`locbench predict RUN_DIR --data D --out preds.csv`: probabilities and labels for new images."""

from __future__ import annotations

import argparse

from locbench.commands.cells import add_cell_args, print_cell_submission


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict labels for images with a finished run (tuned thresholds)")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="dataset folder, CSV, or a folder of {id}_{stain}.png images")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument(
        "--format",
        default="csv",
        choices=["csv", "kaggle2018"],
        help="csv: id, labels, names, probabilities; kaggle2018: that competition's submission",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--level", choices=["image", "cell"], help="cell: the 2021 competition submission (default: the run's level)"
    )
    p.add_argument("--min-confidence", type=float, default=None, help="--level cell: drop triples below this")
    add_cell_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.infer import load_run, predict, resolve_level

    run = load_run(args.run_dir)
    level = resolve_level(run, args.level)
    result = predict(
        run,
        level=level,
        data=args.data,
        out=args.out,
        output_format=args.format,
        device=args.device,
        workers=args.workers,
        masks=args.masks,
        image_run=args.image_run,
        blend=args.blend,
        negative=args.negative,
        min_confidence=args.min_confidence,
    )
    if level == "cell":
        print_cell_submission(result)
        return 0
    print(f"predictions written to {result}")
    return 0
