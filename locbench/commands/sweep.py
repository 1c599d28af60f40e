"""`locbench sweep SWEEP.yaml --out DIR`: every run of a grid (each point and seed), resumable, locally or on SLURM."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_data_args, data_overrides, out_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run every grid point of a sweep file, for each seed (resumable; local or SLURM)",
        description="Run every grid point of a sweep, for each seed, into DIR/<run_id>/. Re-running the same "
        "command skips finished runs and resumes interrupted ones.",
    )
    p.add_argument("sweep_file", help="a sweep YAML (`locbench list configs` lists the shipped ones)")
    p.add_argument("--out", required=True, type=out_path, help="sweep folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every run")
    p.add_argument("--workers", type=int, default=1, help="runs at once (one GPU each where several)")
    p.add_argument(
        "--executor",
        default="inline",
        choices=["inline", "local", "slurm"],
        help="inline: this process; local: submitit's local executor; slurm: a SLURM job array",
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed and diverged runs again")
    p.add_argument("--no-wait", action="store_true", help="local/slurm: return once the jobs are submitted")
    g = p.add_argument_group("SLURM (also settable in the sweep file's executor: section)")
    g.add_argument("--partition")
    g.add_argument("--gpus-per-node", type=int)
    g.add_argument("--timeout-min", type=int)
    g.add_argument("--mem-gb", type=int)
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--array-parallelism", type=int)
    p.add_argument("--report", action="store_true", help="write the report when the sweep is finished")
    p.add_argument("--yes", action="store_true", help="start a sweep of more than 500 runs without asking")
    add_data_args(p)  # for every run, over the sweep file's data section (--set wins)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.config import parse_set
    from locbench.sweep.grid import load_sweep
    from locbench.sweep.runner import run_sweep

    slurm = {
        k: getattr(args, k)
        for k in ("partition", "gpus_per_node", "timeout_min", "mem_gb", "cpus_per_task", "array_parallelism")
        if getattr(args, k) is not None
    }
    extra = {**data_overrides(args, path=False), **parse_set(args.set)}
    sweep = load_sweep(args.sweep_file, data=args.data, extra=extra)
    if not args.yes:
        confirm_size(sweep)
    counts = run_sweep(
        sweep,
        args.out,
        workers=args.workers,
        executor=args.executor,
        retry_failed=args.retry_failed,
        slurm=slurm,
        wait=not args.no_wait,
    )
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if args.report:
        from locbench.report import build_report
        from locbench.sweep.tracking import log_sweep_report

        report = build_report(args.out)
        print(f"report: {report}")
        log_sweep_report(args.out, [report.with_name(n) for n in ("report.html", "report.md", "leaderboard.csv")])
    bad = counts.get("failed", 0) + counts.get("diverged", 0)
    return 1 if bad else 0


def confirm_size(sweep) -> None:
    """A sweep of more than :data:`~locbench.sweep.grid.CONFIRM_RUNS` runs starts only when the user says so: asked
    on a terminal, refused (naming its size and ``--yes``) otherwise."""
    import sys

    from locbench.errors import LocbenchError
    from locbench.sweep.grid import CONFIRM_RUNS

    n = len(sweep.points)
    if n <= CONFIRM_RUNS:
        return
    size = f"sweep {sweep.name} has {n} runs ({len({p.point_id for p in sweep.points})} grid points x "
    size += f"{len(sweep.seeds)} seeds), more than {CONFIRM_RUNS}"
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"{size}; start them? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return
        raise LocbenchError(f"{size}; not started (add --yes to start without asking)")
    raise LocbenchError(f"{size}; add --yes to start them (check the grid for a typo first)")
