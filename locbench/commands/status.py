"""`locbench status DIR`: runs done / running / failed / pending of a sweep, with an ETA."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="how far a sweep has got")
    p.add_argument("sweep_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.sweep.status import format_status, sweep_status

    print(format_status(sweep_status(args.sweep_dir)))
    return 0
