"""Does `locbench train` learn? A synthetic dataset, resnet18, and three reference points on the same split.

Trains (1) locbench's configuration (all four stains, tuned thresholds) and (2) the study's settings (green
channel only, 0.5 threshold) with the same backbone, data, split and epochs, and compares both to a
constant-prevalence baseline (every image gets each class's training prevalence as its score: its AP is the
class's validation prevalence, and its best F1 predicts every image positive).

    python benchmarks/learning_check.py --out benchmarks/out/learning --images 600 --size 128 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def constant_baseline(train_targets: np.ndarray, val_targets: np.ndarray, names: list[str]) -> dict:
    from locbench.metrics import compute_metrics, tune_thresholds

    prev = train_targets.mean(0)
    probs = np.tile(prev, (len(val_targets), 1)).astype(np.float64)
    at_half = compute_metrics(probs, val_targets, class_names=names, thresholds=0.5)
    th = tune_thresholds(probs, val_targets, train_positives=train_targets.sum(0))
    tuned = compute_metrics(probs, val_targets, class_names=names, thresholds=th)
    return {"map": at_half["map"], "macro_f1": at_half["macro_f1"], "macro_f1_tuned": tuned["macro_f1"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="benchmarks/out/learning")
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    import locbench
    from locbench.data.splits import load_split

    out = Path(args.out)
    data = out / "data"
    if not (data / "train.csv").exists():
        locbench.synthesize(data, images=args.images, size=args.size, seed=0, overwrite=True)
    common = {
        "data.path": str(data),
        "data.img_size": args.size,
        "data.cache_dir": str(out / "cache"),
        "data.workers": 0,
        "model.backbone": args.backbone,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "train.seed": 0,
    }
    runs = {
        "locbench (rgby, tuned thresholds)": {"data.channels": "rgby"},
        "study settings (green, 0.5 threshold)": {"data.channels": "green"},
    }
    results = {}
    for name, extra in runs.items():
        run_dir = out / ("rgby" if "rgby" in name else "green")
        if not (run_dir / "summary.json").exists():
            t0 = time.perf_counter()
            locbench.train(locbench.load_config(overrides={**common, **extra}), run_dir, resume=True)
            print(f"{name}: trained in {time.perf_counter() - t0:.0f}s")
        s = json.loads((run_dir / "summary.json").read_text())["val"]
        results[name] = {"map": s["map"], "macro_f1": s["macro_f1"], "macro_f1_tuned": s["macro_f1_tuned"]}
    table = locbench.load_table(data)
    split = load_split(out / "rgby" / "split.json", table)
    tr, va = split.indices(table, "train"), split.indices(table, "val")
    results["constant prevalence baseline"] = constant_baseline(
        table.targets[tr], table.targets[va], list(table.scheme.classes)
    )
    print(
        f"\n{args.images} synthetic fields at {args.size} px, {args.backbone}, {args.epochs} epochs, "
        f"{len(tr)} train / {len(va)} val images\n"
    )
    print(f"{'':40s} {'val mAP':>8s} {'F1@0.5':>8s} {'F1 tuned':>9s}")
    for name, r in results.items():
        print(f"{name:40s} {r['map']:8.3f} {r['macro_f1']:8.3f} {r['macro_f1_tuned']:9.3f}")
    record = {"args": vars(args), "n_train": int(len(tr)), "n_val": int(len(va)), "results": results}
    (out / "learning_check.json").write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
