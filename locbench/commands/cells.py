"""``locbench cells evaluate|predict RUN_DIR``: cell-level scores and 2021 submissions (also reached through
``locbench evaluate --level cell`` and ``locbench predict --level cell``, which share these flags)."""

from __future__ import annotations

import argparse


def add_cell_args(p: argparse.ArgumentParser) -> None:
    """The cell-level flags shared by ``cells``, ``evaluate --level cell`` and ``predict --level cell``."""
    g = p.add_argument_group("cell level")
    g.add_argument(
        "--masks",
        default=None,
        help="predicted cells: auto (the dataset's masks/, else segment), segment (the run's cell.backend), "
        "or a mask folder (default: the run's cell.masks)",
    )
    g.add_argument("--image-run", default=None, help="an image-level run folder whose field probabilities to blend")
    g.add_argument("--blend", type=float, default=None, help="weight of --image-run (default the run's cell.blend)")
    g.add_argument(
        "--negative", choices=["max", "none"], default=None, help="Negative rule (default the run's cell.negative)"
    )


def add_parser(sub) -> None:
    p = sub.add_parser("cells", help="cell-level evaluation (HPA 2021 metric) and competition submissions")
    actions = p.add_subparsers(dest="cells_command", metavar="ACTION", required=True)

    e = actions.add_parser("evaluate", help="score a run per cell with the HPA 2021 metric (IoU 0.6)")
    e.add_argument("run_dir")
    e.add_argument("--data", help="another dataset of the same class scheme (default: the run's own data)")
    e.add_argument("--split", default="val", help="val, test or all (default val)")
    e.add_argument("--truth-masks", default=None, help="true cell masks (default DATA/masks; labels DATA/cells.csv)")
    e.add_argument("--device", default="auto")
    e.add_argument("--workers", type=int, default=None)
    e.add_argument("--out", help="metrics JSON (default RUN_DIR/eval/cell_<split>.json)")
    add_cell_args(e)
    e.set_defaults(func=run_evaluate)

    s = actions.add_parser("predict", help="write a 2021 competition submission (ID,ImageWidth,ImageHeight,...)")
    s.add_argument("run_dir")
    s.add_argument("--data", required=True, help="dataset folder, CSV, or a folder of {id}_{stain}.png images")
    s.add_argument("--out", required=True, help="submission CSV")
    s.add_argument("--min-confidence", type=float, default=None, help="leave out triples below this confidence")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=None)
    add_cell_args(s)
    s.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from locbench.infer import evaluate

    result = evaluate(
        args.run_dir,
        level="cell",
        data=args.data,
        split=args.split,
        masks=args.masks,
        truth_masks=args.truth_masks,
        image_run=args.image_run,
        blend=args.blend,
        negative=args.negative,
        device=args.device,
        workers=args.workers,
        out=args.out,
    )
    print_cell_evaluation(result)
    return 0


def print_cell_evaluation(result: dict) -> None:
    """The per-class table of a cell-level evaluation and where it was written."""
    from locbench.cells.scoring import format_cell_metrics

    print(format_cell_metrics(result))
    print(
        f"\n{result['n_pred_cells']} predicted cells in {result['n_fields']} fields ({result['split']}); "
        f"metrics written to {result['path']}"
    )


def run_predict(args: argparse.Namespace) -> int:
    from locbench.infer import predict

    result = predict(
        args.run_dir,
        level="cell",
        data=args.data,
        out=args.out,
        masks=args.masks,
        image_run=args.image_run,
        blend=args.blend,
        negative=args.negative,
        min_confidence=args.min_confidence,
        device=args.device,
        workers=args.workers,
    )
    print_cell_submission(result)
    return 0


def print_cell_submission(result: dict) -> None:
    """Where a cell-level submission was written and what it holds."""
    print(
        f"submission written to {result['path']}: {result['images']} images, {result['cells']} cells, "
        f"{result['triples']} triples (validated)"
    )
