"""``locbench split``: a seeded, multi-label stratified train/val(/test) or k-fold split, saved as JSON."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_data_args, table_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("split", help="make a stratified train/val(/test) split file")
    add_data_args(p, required=True)
    p.add_argument("--out", required=True, help="split JSON to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-frac", type=float, default=0.2)
    p.add_argument(
        "--test-frac",
        type=float,
        default=0.2,
        help="share held out as the test part, at least 5 fields (default 0.2, as runs; 0: no test part)",
    )
    p.add_argument("--kfold", type=int, default=None, help="number of folds (val = fold --fold)")
    p.add_argument("--fold", type=int, default=None, help="0-based fold used as val with --kfold")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.data.splits import make_split, save_split, split_summary

    table = table_from_args(args)
    split = make_split(
        table,
        seed=args.seed,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        group_col=args.group_col,
        kfold=args.kfold,
        fold=args.fold,
    )
    save_split(split, args.out)
    summary = split_summary(split, table)
    parts = list(summary)
    print(f"split written to {args.out} ({split.method}, seed {split.seed})")
    print(f"{'class':<42}" + "".join(f"{p:>8}" for p in parts))
    print(f"{'fields':<42}" + "".join(f"{summary[p]['num_fields']:>8}" for p in parts))
    for k, name in enumerate(table.scheme.classes):
        label = f"{k:>2} {name}"[:41]
        print(f"{label:<42}" + "".join(f"{summary[p]['class_counts'][name]:>8}" for p in parts))
    return 0
