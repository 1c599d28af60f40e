"""`locbench evaluate RUN_DIR`: metrics of a run's best model, as JSON and a table."""

from __future__ import annotations

import argparse

from locbench.commands.cells import add_cell_args, run_level
from locbench.commands.cells import run_evaluate as run_cell_evaluate


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
    if (args.level or run_level(args.run_dir)) == "cell":
        return run_cell_evaluate(args)
    from locbench.engine.infer import evaluate
    from locbench.metrics import format_metrics_table, with_tuned

    result = evaluate(
        args.run_dir, data=args.data, split=args.split, device=args.device, workers=args.workers, out=args.out
    )
    print(format_metrics_table(with_tuned(result["_metrics_at_half"], result["_metrics_tuned"])))
    print(f"\n{result['n_images']} images ({result['split']}); metrics written to {result['path']}")
    return 0
