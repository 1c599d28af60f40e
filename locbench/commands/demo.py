"""`locbench demo`: synthesize data, run the demo sweep, write the report (what `make demo` runs)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole job on synthetic data: synthesize, sweep, report (a few minutes)",
        description="Synthesize an HPA-like dataset, run the shipped sweeps/demo.yaml on it and write "
        "the report. Re-running resumes where it stopped.",
    )
    p.add_argument("--out", default="demo-out", help="folder for data, runs and report (default demo-out)")
    p.add_argument("--images", type=int, default=600, help="synthetic fields (default 600)")
    p.add_argument("--size", type=int, default=128, help="synthetic field size in pixels (default 128)")
    p.add_argument("--sweep", help="another sweep file to run on the synthetic data")
    p.add_argument("--workers", type=int, default=1, help="runs at once")
    p.add_argument("--no-explain", action="store_true", help="leave the error analysis out of the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.sweep.demo import run_demo

    report = run_demo(
        args.out,
        images=args.images,
        size=args.size,
        sweep_file=args.sweep,
        workers=args.workers,
        explain=not args.no_explain,
    )
    print(f"\nreport: {report}\n(open it in a browser; the markdown version is beside it)")
    return 0
