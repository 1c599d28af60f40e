"""`locbench evaluate RUN_DIR`: metrics of a run's best model, as JSON and a table."""

from __future__ import annotations

import argparse

from locbench.commands.cells import add_cell_args, print_cell_evaluation


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a finished run on its validation/test part or another dataset")
    p.add_argument("run_dir")
    p.add_argument("--data", help="another dataset of the same class scheme (default: the run's own data)")
    p.add_argument("--split", default="val", help="val, test or all (default val)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", help="metrics JSON (default RUN_DIR/eval/<split>.json)")
    p.add_argument("--level", choices=["image", "cell"], help="cell: the HPA 2021 per-cell metric (default: the run's)")
    p.add_argument("--truth-masks", default=None, help="--level cell: true masks (default DATA/masks + cells.csv)")
    add_cell_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.infer import evaluate, load_run, resolve_level
    from locbench.metrics import format_metrics_table, with_tuned

    run = load_run(args.run_dir)
    level = resolve_level(run, args.level)
    result = evaluate(
        run,
        level=level,
        data=args.data,
        split=args.split,
        device=args.device,
        workers=args.workers,
        out=args.out,
        masks=args.masks,
        truth_masks=args.truth_masks,
        image_run=args.image_run,
        blend=args.blend,
        negative=args.negative,
    )
    if level == "cell":
        print_cell_evaluation(result)
        return 0
    print(format_metrics_table(with_tuned(result["_metrics_at_half"], result["_metrics_tuned"])))
    print(f"\n{result['n_images']} images ({result['split']}); metrics written to {result['path']}")
    return 0
