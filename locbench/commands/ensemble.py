"""`locbench ensemble RUN_OR_POINT... --out DIR`: average finished runs' probabilities into a new run folder."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_force_arg, out_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ensemble",
        help="average finished runs (same split) into a run folder that evaluate, predict and report read",
        description="Average the stored validation and test probabilities of finished runs of one split (same "
        "classes, ids, image size, stains, level, test-time augmentation), tune thresholds on the averaged "
        "validation probabilities, and write a normal run folder. The folder refers to its members' folders "
        "(ensemble.json); `locbench predict` runs every member's model and averages, so keep the members where "
        "they are.",
    )
    p.add_argument(
        "members",
        nargs="+",
        metavar="RUN_OR_POINT",
        help="run folders, or SWEEP/POINT_ID for every finished seed of a sweep's grid point",
    )
    p.add_argument("--out", required=True, type=out_path, help="the ensemble's run folder (new, or --force)")
    add_force_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.infer.ensemble import build_ensemble, resolve_members
    from locbench.store.rundir import RunDir

    paths = resolve_members(args.members)
    out = build_ensemble(paths, args.out, force=args.force)
    summary = RunDir(out).read_summary()
    print(f"ensemble of {len(paths)} runs written to {out}")
    print(f"{'run':<60} {'val mAP':>8} {'test mAP':>9}")
    for member in RunDir(out).read_ensemble()["members"]:
        print(f"{member['path'][-60:]:<60} {_num(member['val_map']):>8} {_num(member['test_map']):>9}")
    print(f"{'ensemble':<60} {_num(summary['val']['map']):>8} {_num((summary.get('test') or {}).get('map')):>9}")
    print(
        "thresholds tuned on the averaged validation probabilities; predicting new images runs "
        f"{len(paths)} models (x{len(paths)} forward passes)"
    )
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
