"""Cell-level model against the image-level model copied to its cells, on the HPA 2021 per-cell metric.

On synthetic data with known per-cell truth (``locbench synth``): segmentation agreement of the watershed backend
with the true masks, then one image-level and one cell-level run (same backbone, epochs, split, optimiser),
each scored on the validation fields with the competition metric (mAP over classes, IoU >= 0.6), with the
predicted cells taken from the true masks (oracle segmentation) and from the watershed masks, plus the blend of
the two runs. Prints a table and writes JSON to benchmarks/out/.

    .venv/bin/python benchmarks/bench_cell_vs_image.py [--images 300] [--size 256] [--backbone resnet18]
        [--epochs 2] [--image-size 128] [--crop-size 64] [--work /tmp/bench-cells]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from _common import OUT_DIR, host, table, write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-cells"), help="data, caches and run folders")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=256, help="synthetic field side")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--image-size", type=int, default=128, help="image-level model input side")
    p.add_argument("--crop-size", type=int, default=64, help="cell-level model input side")
    p.add_argument("--channels", default="rgby")
    p.add_argument("--blend", type=float, default=0.5, help="weight of the image run in the blended row")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_cell_vs_image.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from locbench.cells.segment import compare_mask_dirs, segment_dataset
    from locbench.config import load_config
    from locbench.data.formats import load_table
    from locbench.data.synth import synthesize
    from locbench.engine.fit import train
    from locbench.infer.cells import evaluate_cells
    from locbench.store.rundir import RunDir

    work = args.work
    data = work / f"synth-{args.images}-{args.size}"
    if not (data / "train.csv").is_file():
        synthesize(data, images=args.images, size=args.size, edition="2021", seed=0)
    fields = load_table(data)

    # Segmentation agreement with the true masks (the backend's defaults), at the two usual IoU thresholds.
    t0 = time.perf_counter()
    seg = segment_dataset(fields, backend="watershed", out_dir=work / "masks-watershed", workers=2)
    seg_s = time.perf_counter() - t0
    agreement = {}
    for iou in (0.5, 0.6):
        _, total = compare_mask_dirs(seg.masks_dir, data / "masks", list(seg.ids), iou_threshold=iou)
        agreement[str(iou)] = total

    common = {
        "data.path": str(data),
        "data.cache_dir": str(work / "cache"),
        "data.channels": args.channels,
        "data.workers": 0,
        "model.backbone": args.backbone,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.device": "cpu",
        "optim.lr": args.lr,
        "log.progress": "lines",
    }
    tag = f"{args.backbone}-e{args.epochs}"
    runs, train_s = {}, {}
    for level, size in (("image", args.image_size), ("cell", args.crop_size)):
        out = work / "runs" / f"{level}-{tag}-{size}"
        cfg = load_config(overrides={**common, "train.level": level, "data.img_size": size})
        t0 = time.perf_counter()
        if RunDir(out).status() != "done":
            train(cfg, out, resume=RunDir(out).config.is_file())
        train_s[level] = time.perf_counter() - t0
        runs[level] = out

    rows, results = [], {}
    kw = {"device": "cpu", "workers": 0}
    for masks_name, masks in (("true masks", None), ("watershed", str(seg.masks_dir))):
        cases = {
            "image run copied to cells": (runs["image"], {}),
            "cell run": (runs["cell"], {}),
            f"cell + image blend {args.blend}": (runs["cell"], {"image_run": runs["image"], "blend": args.blend}),
        }
        for name, (run, extra) in cases.items():
            slug = f"{name}|{masks_name}"
            out = work / "eval" / (re.sub(r"[^a-z0-9.]+", "-", slug.lower()) + ".json")
            r = evaluate_cells(run, masks=masks, out=out, **kw, **extra)
            results[slug] = {k: r[k] for k in ("map", "n_fields", "n_pred_cells", "n_truth_labels", "masks")}
            results[slug]["per_class_ap"] = {c: v["ap"] for c, v in r["per_class"].items()}
            rows.append([name, masks_name, r["map"], r["n_pred_cells"]])
    print(f"synthetic data: {len(fields)} fields of {args.size} px, {data}")
    print(
        f"watershed vs true masks ({seg_s:.0f} s): "
        + "; ".join(
            f"IoU>={t}: {a['found']}/{a['n_truth']} cells found ({a['recall']:.3f}), {a['extra']} extra, "
            f"matched IoU {a['matched_iou_mean']:.3f}"
            for t, a in agreement.items()
        )
    )
    print(
        f"training ({args.backbone}, {args.epochs} epochs, CPU): image {args.image_size} px {train_s['image']:.0f} s, "
        f"cell {args.crop_size} px crops {train_s['cell']:.0f} s"
    )
    print()
    print(table(["prediction", "cells from", "cell mAP@0.6", "pred cells"], rows))
    result = {
        "host": host(),
        "data": {"path": str(data), "fields": len(fields), "size": args.size},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "segmentation": {"backend": "watershed", "seconds": seg_s, "agreement": agreement},
        "train_seconds": train_s,
        "runs": {k: str(v) for k, v in runs.items()},
        "results": results,
    }
    print(f"\nwritten to {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
