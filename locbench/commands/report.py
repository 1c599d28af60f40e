"""``locbench report DIR``: statistics, tables and plots over a sweep folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write report.html, report.md and leaderboard.csv for a sweep folder",
        description="Summarise a sweep folder (run folders inside): leaderboard with confidence intervals, paired "
        "comparisons with a baseline (Holm-adjusted), effects of each axis, per-class AP, training curves, "
        "accuracy against cost, and the failed or unfinished runs. Writes DIR/report.html (figures embedded; "
        "the error analysis's thumbnails linked from DIR/explain/), DIR/report.md and DIR/leaderboard.csv.",
    )
    p.add_argument("dir", metavar="DIR", help="sweep folder (or a single run folder)")
    p.add_argument(
        "--metric",
        choices=("map", "macro_f1", "macro_f1_tuned"),
        default="map",
        help="primary metric, on the test part when every run has one, else on validation (default: map)",
    )
    p.add_argument(
        "--baseline",
        metavar="POINT_OR_RUN",
        default=None,
        help="grid point id, run id or axis=value,... to compare against (default: loss=bce, aug=standard, "
        "first backbone if present, else the first grid point)",
    )
    p.add_argument(
        "--point",
        "--cell",  # its name before grid points were called points
        dest="point",
        metavar="POINT_OR_RUN",
        default=None,
        help="grid point or run shown in detail (per-class table, confusion matrices); "
        "default: the point with the highest mean",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=1000,
        help="bootstrap resamples over the scored images (test or validation), single-seed sweeps only (default: 1000)",
    )
    p.add_argument(
        "--explain",
        action="append",
        default=[],
        metavar="POINT_OR_RUN",
        help="also explain this grid point (its best seed) or run: error tables, CAM grids, localization "
        "(repeatable; the highest-mean point is always explained)",
    )
    p.add_argument(
        "--ensemble-top",
        type=int,
        default=None,
        metavar="K",
        help="add a section on the ensemble of the K configurations with the best mean validation score (their "
        "stored probabilities averaged), with its interval and its difference to the best single configuration",
    )
    p.add_argument("--no-explain", action="store_true", help="leave out the error-analysis sections")
    p.add_argument(
        "--no-browse",
        action="store_true",
        help="no image browser for the explained runs (it reads every image of the scored part once for its "
        "thumbnails)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from locbench.errors import LocbenchError
    from locbench.report import build_report

    if args.resamples < 100:
        raise LocbenchError(f"--resamples {args.resamples}: use at least 100 for a stable interval")
    if args.no_explain and args.explain:
        raise LocbenchError("--explain and --no-explain together: give one of them")
    extra = []
    if args.ensemble_top is not None:
        from locbench.report.ensemble import ensemble_section

        if args.ensemble_top < 2:
            raise LocbenchError(f"--ensemble-top {args.ensemble_top}: an ensemble needs at least 2 configurations")
        extra.append(ensemble_section(args.ensemble_top, n_resamples=args.resamples))
    if not args.no_explain:
        from locbench.report.explain_section import error_analysis

        extra.append(error_analysis(runs=args.explain, browse=not args.no_browse))
    out = build_report(
        args.dir,
        metric=args.metric,
        baseline=args.baseline,
        point=args.point,
        n_resamples=args.resamples,
        extra_sections=extra,
    )
    logging.getLogger(__name__).info("report: %s", out)
    print(out)
    return 0
