"""`locbench predict RUN_DIR --data D --out preds.csv`: probabilities and labels for new images."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_data_args, out_path
from locbench.commands._level import add_cell_args, add_tta_arg, run_at_level


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict labels for images with a finished run (tuned thresholds)")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, type=out_path, help="output CSV (not an existing file without --force)")
    p.add_argument(
        "--format",
        default="csv",
        choices=["csv", "kaggle2018"],
        help="csv: id, labels, names, probabilities; kaggle2018: that competition's submission",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader processes that decode the next images while the model runs (default: the run's data.workers)",
    )
    p.add_argument(
        "--level", choices=["image", "cell"], help="cell: the 2021 competition submission (default: the run's level)"
    )
    p.add_argument("--min-confidence", type=float, default=None, help="--level cell: drop triples below this")
    add_tta_arg(p)
    add_cell_args(p)
    # --data: a dataset folder, its CSV, or a folder of {id}_{stain}.png images (laid out as the run's, or as the
    # data options say)
    add_data_args(p, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.infer import predict

    return run_at_level(
        args,
        predict,
        show_image=lambda path: print(f"predictions written to {path}"),
        show_cell=show_cell,
        tta=args.tta,
        output_format=args.format,
        min_confidence=args.min_confidence,
    )


def show_cell(result: dict) -> None:
    """Where a cell-level submission was written and what it holds."""
    print(
        f"submission written to {result['path']}: {result['images']} images, {result['cells']} cells, "
        f"{result['triples']} triples (validated)"
    )
