"""`locbench sweep-point RUN_DIR`: train one prepared run of a sweep (used by the sweep runner's worker processes).

``sweep-cell`` is the same command under the name an older locbench's workers call."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep-point",
        aliases=["sweep-cell"],
        help="(internal) train one prepared grid point and seed of a sweep folder",
    )
    p.add_argument("run_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.sweep.runner import die_with_parent, run_point

    die_with_parent()
    return 0 if run_point(args.run_dir) == "done" else 1
