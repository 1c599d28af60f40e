"""End to end against the study: the same model, data, split, size and epochs, trained the notebook's way and
by ``locbench train``, timed side by side in one process.

- ``study``: benchmarks/study_baseline.py: per-item ``cv2.imread`` of the green PNG + resize every epoch,
  torchvision per-sample augmentation in the Dataset, 0 workers, BCE, Adam 1e-4, batch 32, ``.item()`` every
  step, validation every epoch through the same slow loader.
- ``locbench``: :func:`locbench.engine.fit.train` with the study's settings (green, BCE, Adam 1e-4, batch 32,
  standard augmentation) on the same split, its cache built from scratch in a fresh folder (so the one-off
  decode is part of its total), loader workers as configured; it also writes metrics, checkpoints,
  predictions and the threshold-tuned summary, which the notebook does not.

Default: resnet18 at 256 px on the 101 real 512 px Kaggle-2018 fields, 2 epochs (what this CPU can do).

    .venv/bin/python benchmarks/bench_study.py
    .venv/bin/python benchmarks/bench_study.py --quick        # tiny fixture, test model, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, REAL, Clock, EpochTimer, host, table, write_json  # noqa: E402

log = logging.getLogger("bench_study")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REAL / "kaggle2018"))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="locbench loader workers (default: the config's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny fixture, test model, 32 px: checks the script works")
    p.add_argument("--out", default=str(OUT_DIR / "bench_study.json"))
    args = p.parse_args(argv)
    import torch
    from study_baseline import study_loader, study_train

    from locbench.config import RunConfig
    from locbench.data.formats import table_from_config
    from locbench.data.splits import make_split, save_split
    from locbench.engine.fit import train
    from locbench.models import build_model

    if args.quick:
        args.backbone, args.img_size, args.epochs, args.batch_size, args.workers = "test_resnet", 32, 2, 4, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        "data.path": args.data,
        "data.img_size": args.img_size,
        "model.backbone": args.backbone,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.device": "cpu",
        "log.progress": "lines",
    }
    if args.workers is not None:
        overrides["data.workers"] = args.workers
    with tempfile.TemporaryDirectory(prefix="locbench-bench-study-") as tmp_s:
        tmp = Path(tmp_s)
        if args.quick:  # a dozen small synthetic fields (the tiny real fixture is too small to split)
            from locbench.data.synth import synthesize

            args.data = overrides["data.path"] = str(
                synthesize(tmp / "synth", images=12, size=64, edition="2018", cells_per_field=(2, 5))
            )
        overrides["data.cache_dir"] = str(tmp / "cache")
        cfg = RunConfig().replace(overrides)
        tbl = table_from_config(cfg.data)
        split = make_split(tbl, seed=0, val_frac=cfg.data.val_frac, test_frac=0.0, group_col=None)
        save_split(split, tmp / "split.json")
        cfg = cfg.replace({"data.split": str(tmp / "split.json")})
        parts = {k: split.indices(tbl, k) for k in ("train", "val")}

        torch.manual_seed(0)
        model = build_model(cfg.model, num_classes=len(tbl.scheme.classes), in_chans=3)
        train_loader = study_loader(tbl, parts["train"], size=args.img_size, train=True, batch_size=args.batch_size)
        val_loader = study_loader(tbl, parts["val"], size=args.img_size, train=False, batch_size=args.batch_size)
        with Clock() as study_clock:
            study = study_train(model, train_loader, val_loader, epochs=args.epochs)

        run = tmp / "run"
        timer = EpochTimer()  # the real loop's training steps and validation, clocked per epoch for CPU time
        with Clock() as lb_clock:
            train(cfg, run, callbacks=[timer])
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lb_epochs = [r["time/epoch_s"] for r in records]
    lb_cpu = [t["cpu"] + e["cpu"] for t, e in zip(timer.train, timer.evaluate, strict=True)]
    study_epochs, study_cpu = study["epoch_s"], study["epoch_cpu_s"]
    # epoch 2+ is the steady state (epoch 1 of locbench starts workers; the study has nothing to start)
    k = 1 if len(lb_epochs) > 1 else 0
    result = {
        "backbone": args.backbone,
        "img_size": args.img_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_images": len(parts["train"]),
        "val_images": len(parts["val"]),
        "study": {
            "epoch_s": study_epochs,
            "epoch_cpu_s": study_cpu,
            "total_s": study_clock.wall,
            "cpu_s": study_clock.cpu,
        },
        "locbench": {"epoch_s": lb_epochs, "epoch_cpu_s": lb_cpu, "total_s": lb_clock.wall, "cpu_s": lb_clock.cpu},
        "speedup_epoch": min(study_epochs[k:]) / min(lb_epochs[k:]),
        "speedup_epoch_cpu": min(study_cpu[k:]) / min(lb_cpu[k:]),
        "speedup_total": study_clock.wall / lb_clock.wall,
        "speedup_total_cpu": study_clock.cpu / lb_clock.cpu,
    }
    report = {"benchmark": "study", "quick": args.quick, "data": args.data, "host": host(), "result": result}
    write_json(args.out, report)
    rows = [
        [
            "study notebook",
            *(f"{w:.2f} / {c:.2f}" for w, c in zip(study_epochs, study_cpu, strict=True)),
            study_clock.wall,
            study_clock.cpu,
        ],
        [
            "locbench train",
            *(f"{w:.2f} / {c:.2f}" for w, c in zip(lb_epochs, lb_cpu, strict=True)),
            lb_clock.wall,
            lb_clock.cpu,
        ],
    ]
    heads = ["pipeline", *(f"epoch {e + 1} s (wall / cpu)" for e in range(len(lb_epochs))), "total s", "cpu s"]
    print(f"{args.backbone} at {args.img_size} px, {len(parts['train'])} train / {len(parts['val'])} val fields")
    print(table(heads, rows))
    print(
        f"locbench is {result['speedup_epoch']:.2f}x faster per steady epoch "
        f"({result['speedup_epoch_cpu']:.2f}x in CPU time), {result['speedup_total']:.2f}x in total "
        f"wall time ({result['speedup_total_cpu']:.2f}x in CPU time); JSON: {args.out}"
    )
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
