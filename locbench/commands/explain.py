"""`locbench explain RUN_DIR`: error tables, CAM grids and (synthetic data) the CAM localization check of a run."""

from __future__ import annotations

import argparse

from locbench.commands._common import add_force_arg, out_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="why a run predicts what it does: error tables, class activation maps, localization check",
        description="Error analysis of a finished run from its stored validation predictions (per-class TP/FP/FN, "
        "confused class pairs, hardest images, performance against class frequency), class activation maps of "
        "a few true positives, false positives and false negatives per class (or of --ids) over the RGB "
        "composite of the stains, and on synthetic data the share of CAM mass inside the cells that carry "
        "the class against chance. Writes errors.{json,md,html}, perf_vs_frequency.png, cams/<method>/*.png "
        "and localization.{json,md,png} into --out.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `locbench train` or a sweep")
    p.add_argument("--data", help="the run's dataset, if it moved (default: data.path of the run's config)")
    p.add_argument("--ids", nargs="+", metavar="ID", help="explain these validation images instead of choosing")
    p.add_argument(
        "--classes",
        nargs="+",
        metavar="CLASS",
        help="class names or indices: the classes whose TP/FP/FN images are shown (with --ids: the maps drawn)",
    )
    p.add_argument("--n", type=int, default=8, help="most images to explain in total (default 8)")
    p.add_argument(
        "--method",
        action="append",
        metavar="METHOD",
        help="CAM method: gradcam (default), gradcam++, hirescam, xgradcam, layercam, scorecam, eigencam, "
        "eigengradcam; repeat for several",
    )
    p.add_argument(
        "--localize",
        type=int,
        default=32,
        help="validation images scored by the localization check on synthetic data; 0 = off (default 32)",
    )
    p.add_argument(
        "--part",
        choices=["val", "test"],
        default="val",
        help="which stored predictions to explain: val (default) or test (at the thresholds tuned on validation)",
    )
    p.add_argument("--out", type=out_path, help="output folder (default RUN_DIR/explain)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    add_force_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from locbench.explain.run import explain_run

    methods = args.method or ["gradcam"]
    result = explain_run(
        args.run_dir,
        data=args.data,
        ids=args.ids,
        classes=args.classes,
        n=args.n,
        methods=methods,
        out=args.out,
        device=args.device,
        localize=args.localize,
        force=args.force,
        part=args.part,
    )
    for name, path in result["files"].items():
        print(f"{name:24s} {path}")
    for grid in result["cam_grids"]:
        print(f"CAM grid ({grid['method']}, {grid['class']}, {len(grid['ids'])} images): {grid['path']}")
    loc = result["localization"]
    if loc and loc["overall"]["n"]:
        o = loc["overall"]
        print(
            f"CAM mass inside the carrying cells: {o['mean_share']:.3f} vs chance {o['mean_chance']:.3f} "
            f"({o['n']} image-class pairs; per class in localization.md)"
        )
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"explain output in {result['out']}")
    return 0
