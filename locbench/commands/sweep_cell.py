"""`locbench sweep-cell RUN_DIR`: run one prepared sweep cell (used by the sweep runner's worker processes)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("sweep-cell", help="(internal) run one prepared cell of a sweep folder")
    p.add_argument("run_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.sweep.runner import die_with_parent, run_cell

    die_with_parent()
    return 0 if run_cell(args.run_dir) == "done" else 1
