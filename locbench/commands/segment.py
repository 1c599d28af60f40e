"""``locbench segment``: cell instance masks for every field of a dataset, optionally compared to other masks."""

from __future__ import annotations

import argparse
import math

from locbench.commands._common import add_data_args, add_force_arg, out_path, table_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment cells into instance masks (cached); compare them to reference masks",
        description="Write one 16-bit instance mask per field to OUT/{ID}.png. Re-running reuses masks whose "
        "images are unchanged. With --compare-to, print the agreement with another mask folder.",
    )
    p.add_argument("--backend", default="watershed", help="segmenter: watershed (default), hpacellseg, cellpose")
    p.add_argument("--out", required=True, type=out_path, help="mask folder to write (and reuse)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes, one field each at a time (default: one per CPU). A killed run resumes: finished fields "
        "are kept",
    )
    p.add_argument("--weights", default=None, help="model weights (hpacellseg: folder; cellpose: model file)")
    p.add_argument("--device", default=None, help="device for the model backends (default cpu)")
    p.add_argument(
        "--compare-to",
        default=None,
        metavar="MASKDIR",
        help="reference masks ({ID}.png or {ID}_predictedmask.png) to compare with",
    )
    p.add_argument("--iou", type=float, default=0.5, help="IoU a matched cell needs in --compare-to (default 0.5)")
    p.add_argument(
        "--overlay",
        default=None,
        type=out_path,
        metavar="DIR",
        help="also write DIR/{ID}.png: the composite with every cell outlined in white (and the --compare-to "
        "masks in cyan)",
    )
    p.add_argument(
        "--overlay-size", type=int, default=1024, help="longer side of each overlay in pixels at most (default 1024)"
    )
    add_force_arg(p)
    add_data_args(p, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from locbench.cells.segment import MANIFEST, compare_mask_dirs, segment_dataset
    from locbench.store.outputs import check_output, data_inputs

    # a mask folder of an earlier `locbench segment` is reused (its manifest says so); any other is not written over
    own = (Path(args.out) / MANIFEST).is_file()
    reads = [*data_inputs(args.data), args.weights]  # --compare-to is only read (it may be --out itself)
    check_output(args.out, reads=reads, reusable=own, force=args.force, folder=True)
    if args.overlay:
        check_output(
            args.overlay, reads=[*reads, args.out, args.compare_to], force=args.force, folder=True, what="--overlay"
        )
    options = {}
    if args.weights:
        options["weights"] = args.weights
    if args.device:
        options["device"] = args.device
    table = table_from_args(args)
    result = segment_dataset(table, backend=args.backend, out_dir=args.out, workers=args.workers, options=options)
    print(f"{len(result.ids)} fields: {result.computed} segmented, {result.reused} reused -> {result.masks_dir}")
    if args.compare_to:
        rows, total = compare_mask_dirs(result.masks_dir, args.compare_to, list(result.ids), iou_threshold=args.iou)
        print(format_agreement(rows, total))
    if args.overlay:
        from locbench.cells.overlay import write_overlays

        written = write_overlays(
            table, result.masks_dir, args.overlay, ids=list(result.ids), reference_dir=args.compare_to,
            size=args.overlay_size,
        )  # fmt: skip
        colours = "cells outlined in white" + (", reference masks in cyan" if args.compare_to else "")
        print(f"{len(written)} overlays ({colours}) -> {args.overlay}")
    return 0


def format_agreement(rows: list[dict], total: dict) -> str:
    """A plain-text table of per-field agreement and the pooled totals."""
    head = f"{'field':<40} {'truth':>6} {'pred':>6} {'found':>6} {'missed':>6} {'extra':>6} {'IoU':>6}"
    lines = [head, "-" * len(head)]
    for r in [*rows, {"id": "all", **total}]:
        iou = "-" if math.isnan(r["matched_iou_mean"]) else f"{r['matched_iou_mean']:.3f}"
        lines.append(
            f"{r['id']:<40} {r['n_truth']:>6} {r['n_pred']:>6} {r['found']:>6} {r['missed']:>6} {r['extra']:>6} "
            f"{iou:>6}"
        )
    return "\n".join(lines)
