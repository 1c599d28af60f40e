"""Watershed cell segmentation against the HPA model's masks on the real Kaggle 2021 fields.

Prints per-field agreement (cells found / missed / extra, mean IoU of matched cells at IoU >= 0.5) and the time
per field, writes a competition submission from the watershed masks (each cell gets its image's train.csv
labels at confidence 1.0), checks that every mask string decodes back to its cell, and saves the numbers as JSON.

    .venv/bin/python benchmarks/bench_segmentation.py [--data DIR] [--out DIR] [--backend watershed]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from locbench.cells.metric import CellInstances, cell_map, compare_masks, pool_agreement
from locbench.cells.segment import make_segmenter, mask_path, read_mask, read_stains, write_mask
from locbench.cells.submission import (
    make_row,
    parse_prediction_string,
    read_submission,
    validate_submission,
    write_submission,
)
from locbench.commands.segment import format_agreement
from locbench.data.formats import load_table
from locbench.store.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hpa-real" / "kaggle2021"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kaggle 2021 folder with train/ and masks/")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "segmentation")
    p.add_argument("--backend", default="watershed")
    p.add_argument("--iou", type=float, default=0.5)
    args = p.parse_args(argv)
    if not (args.data / "train.csv").is_file():
        print(f"no dataset at {args.data}; pass --data", file=sys.stderr)
        return 2

    table = load_table(args.data)
    segmenter = make_segmenter(args.backend)
    masks_dir = args.out / f"masks-{args.backend}"
    rows, timings, sub_rows, preds, truths = [], [], [], {}, {}
    for i, image_id in enumerate(table.ids):
        stains = read_stains(table.paths(i))
        t0 = time.perf_counter()
        mask = segmenter.segment(stains)
        timings.append(time.perf_counter() - t0)
        write_mask(masks_dir / f"{image_id}.png", mask)
        truth = read_mask(mask_path(args.data / "masks", image_id))
        rows.append({"id": image_id, **compare_masks(mask, truth, iou_threshold=args.iou)})
        labels = np.flatnonzero(table.targets[i])
        scores = {cell: {int(c): 1.0 for c in labels} for cell in np.unique(mask) if cell}
        sub_rows.append(make_row(image_id, mask, scores))
        # Weak-label check of cell_map: every cell carries its image's labels, so the score measures only how
        # many cells the segmentation reproduces at IoU >= 0.6 (the HPA masks score 1.0 against themselves).
        weak = table.targets[i].astype(float)
        preds[image_id] = CellInstances.from_mask(mask, np.tile(np.where(weak > 0, 1.0, np.nan), (mask.max(), 1)))
        truths[image_id] = CellInstances.from_mask(truth, np.tile(weak, (truth.max(), 1)))
    total = pool_agreement(rows)
    print(f"{args.backend} vs HPA masks ({args.data}), IoU >= {args.iou}; fields {mask.shape[1]}x{mask.shape[0]}")
    print(format_agreement(rows, total))
    score = cell_map(preds, truths, num_classes=table.num_classes, class_names=table.scheme.classes)
    print(f"cell mAP@0.6 of watershed cells with weak labels vs HPA cells with weak labels: {score['map']:.3f}")
    print(f"time per field: mean {np.mean(timings):.2f} s, max {np.max(timings):.2f} s (segment only, 1 process)")

    # Submission from the watershed masks, then decode every string and compare with its mask.
    sub_path = write_submission(args.out / "submission.csv", sub_rows)
    check = validate_submission(sub_path, num_classes=table.num_classes, ids=table.ids)
    mismatches = 0
    for row in read_submission(sub_path):
        mask = read_mask(masks_dir / f"{row.image_id}.png")
        for _, _, decoded in parse_prediction_string(row):
            cells = np.unique(mask[decoded])
            mismatches += not (len(cells) == 1 and np.array_equal(decoded, mask == cells[0]))
    print(
        f"submission {sub_path}: {check['images']} images, {check['cells']} cells, {check['triples']} triples, "
        f"{sub_path.stat().st_size / 1024:.0f} KiB; masks not decoding back to their cell: {mismatches}"
    )
    atomic_write_json(
        args.out / "bench_segmentation.json",
        {
            "backend": args.backend,
            "iou_threshold": args.iou,
            "fields": rows,
            "total": total,
            "seconds_per_field": timings,
            "weak_label_cell_map": score["map"],
            "submission": {**check, "decode_mismatches": mismatches},
        },
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
