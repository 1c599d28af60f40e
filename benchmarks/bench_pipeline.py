"""Pipeline efficiency: time per training step of the real ``locbench train`` loop vs a bare loop over tensors.

For each (backbone, image size) the script, in one process and on the same machine state:

1. trains with :func:`locbench.engine.fit.train` on a synthetic dataset (``locbench synth`` fields, cache on,
   the configured loader workers, standard augmentation, BCE, Adam, metrics, checkpoints: everything), and reads
   its ``metrics.jsonl``;
2. times a bare loop over pre-made tensors: the same model (``build_model``), Adam, batch size, input size;
   forward, BCE, backward, step; nothing else (before and after the real run, to see drift from other load).

Three ratios of bare time to pipeline time (1.0 = no overhead):

- ``train loop``: bare step time / the training part of an epoch per step (``seen / train/img_per_s``): the
  cost of loading, moving, augmenting and normalising batches and of the loop's bookkeeping. **The target
  (>= 0.95) applies to this one.**
- ``epoch``: bare / whole epoch per step (training + validation + metrics; validation is extra work the bare
  loop does not do, so this ratio is bounded by steps_train / (steps_train + forward-only val cost)).
- ``run``: bare time of all steps / wall time of ``train()`` (adds one-off start-up: split, cache build,
  channel statistics, GMAC count, checkpoints, summary).

Epoch 1 is left out of the steady-state numbers (it starts the loader workers).

    .venv/bin/python benchmarks/bench_pipeline.py                      # resnet18@128 and test_resnet@64
    .venv/bin/python benchmarks/bench_pipeline.py --config resnet50:256 --epochs 3
    .venv/bin/python benchmarks/bench_pipeline.py --quick             # seconds: checks the script works
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helper

from _common import OUT_DIR, Clock, EpochTimer, host, loadavg, median, table, write_json  # noqa: E402

log = logging.getLogger("bench_pipeline")
DEFAULT_CONFIGS = ("resnet18:128", "test_resnet.r160_in1k:64")


def make_dataset(out: Path, *, images: int, size: int) -> Path:
    """A synthetic Kaggle-2021 layout dataset (``locbench synth``), reused when already there."""
    from locbench.data.synth import synthesize

    if (out / "train.csv").exists():
        return out
    cells = (5, 12) if size >= 128 else (2, 5)  # small fields hold fewer cells
    return synthesize(out, images=images, size=size, seed=0, cells_per_field=cells, overwrite=True)


def run_config(data: Path, *, backbone: str, size: int, epochs: int, batch_size: int, workers: int, tmp: Path):
    from locbench.config import RunConfig

    return RunConfig().replace(
        {
            "data.path": str(data),
            "data.img_size": size,
            "data.workers": workers,
            "data.cache_dir": str(tmp / "cache"),
            "model.backbone": backbone,
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.device": "cpu",
            "log.progress": "lines",
        }
    )


def bare_blocks(cfg, *, num_classes: int, in_chans: int, steps: int, blocks: int, warmup: int = 2) -> list[dict]:
    """``blocks`` timings of ``steps`` bare steps (forward, BCE, backward, Adam) over one pre-made batch."""
    import torch

    from locbench.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bs, size = cfg.train.batch_size, cfg.data.img_size
    x = torch.randn(bs, in_chans, size, size)
    y = (torch.rand(bs, num_classes) < 0.2).float()

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    out = []
    for _ in range(blocks):
        with Clock() as c:
            for _ in range(steps):
                step()
        out.append({"wall": c.wall / steps, "cpu": c.cpu / steps})
    return out


def measure(data: Path, tmp: Path, *, backbone: str, size: int, epochs: int, batch_size: int, workers: int) -> dict:
    """Bare blocks, the full ``train()``, bare blocks again, for one (backbone, size)."""
    from locbench.engine.fit import train

    cfg = run_config(data, backbone=backbone, size=size, epochs=epochs, batch_size=batch_size, workers=workers, tmp=tmp)
    run = tmp / f"run-{backbone}-{size}-{time.monotonic_ns()}"
    in_chans, num_classes = 3, 19
    load0 = loadavg()
    n_train = _train_count(cfg, tmp)
    steps = -(-n_train // batch_size)
    bare = bare_blocks(cfg, num_classes=num_classes, in_chans=in_chans, steps=steps, blocks=3)
    timer = EpochTimer()
    with Clock() as whole:
        train(cfg, run, callbacks=[timer])
    bare += bare_blocks(cfg, num_classes=num_classes, in_chans=in_chans, steps=steps, blocks=3)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # epoch 1 starts the loader workers and warms allocators: steady state is epochs 2+
    tr, ev = timer.train[1:] or timer.train, timer.evaluate[1:] or timer.evaluate
    epoch_wall = [r["time/epoch_s"] for r in (records[1:] or records)]
    bare_wall, bare_cpu = min(b["wall"] for b in bare), median([b["cpu"] for b in bare])
    train_wall, train_cpu = min(c["wall"] for c in tr) / steps, median([c["cpu"] for c in tr]) / steps
    val_wall, val_cpu = min(c["wall"] for c in ev) / steps, median([c["cpu"] for c in ev]) / steps
    epoch_step = min(epoch_wall) / steps
    return {
        "backbone": backbone,
        "img_size": size,
        "batch_size": batch_size,
        "workers": workers,
        "epochs": epochs,
        "train_images": n_train,
        "steps_per_epoch": steps,
        "bare_step_s": bare_wall,
        "bare_step_cpu_s": bare_cpu,
        "bare_blocks": bare,
        "train_step_s": train_wall,
        "train_step_cpu_s": train_cpu,
        "val_per_train_step_s": val_wall,
        "val_per_train_step_cpu_s": val_cpu,
        "epoch_step_s": epoch_step,
        "run_s": whole.wall,
        "run_cpu_s": whole.cpu,
        "ratio_train_loop": bare_wall / train_wall,
        "ratio_train_loop_cpu": bare_cpu / train_cpu,
        "ratio_epoch": bare_wall / epoch_step,
        "ratio_epoch_cpu": bare_cpu / (train_cpu + val_cpu),
        "ratio_run": bare_wall * steps * epochs / whole.wall,
        "ratio_run_cpu": bare_cpu * steps * epochs / whole.cpu,
        "train_epoch_calls": timer.train,
        "evaluate_calls": timer.evaluate,
        "epochs_detail": records,
        "loadavg_before_after": [load0, loadavg()],
    }


def _train_count(cfg, tmp: Path) -> int:
    """Training images of the split ``train()`` will make (same table, seed and fractions)."""
    from locbench.data.formats import table_from_config
    from locbench.data.splits import make_split

    d = cfg.data
    table = table_from_config(d, check_images=False)
    split = make_split(table, seed=d.split_seed, val_frac=d.val_frac, test_frac=d.test_frac, group_col=d.group_col)
    return len(split.parts["train"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", action="append", help="BACKBONE:SIZE (repeatable); default: " + ", ".join(DEFAULT_CONFIGS)
    )
    p.add_argument("--images", type=int, default=400, help="synthetic fields (80%% train)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers", type=int, nargs="+", default=None, help="loader workers, one run each (default: the config's)"
    )
    p.add_argument("--repeats", type=int, default=1, help="measure each config this many times")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared, oversubscribed CPU two OpenMP threads spin against each "
        "other and a step can take 20x longer; 0 keeps torch's default)",
    )
    p.add_argument("--quick", action="store_true", help="tiny run that checks the script works (seconds)")
    p.add_argument("--out", default=str(OUT_DIR / "bench_pipeline.json"))
    args = p.parse_args(argv)
    import torch

    from locbench.config import DataConfig

    if args.threads:
        torch.set_num_threads(args.threads)

    configs = args.config or list(DEFAULT_CONFIGS)
    images, epochs, bs = args.images, args.epochs, args.batch_size
    if args.quick:
        configs, images, epochs, bs = ["test_resnet.r160_in1k:32"], 20, 2, 8
    workers_list = [DataConfig().workers] if args.workers is None else args.workers
    if args.quick:
        workers_list = [0]  # starting worker processes alone takes seconds
    results = []
    with tempfile.TemporaryDirectory(prefix="locbench-bench-pipeline-") as tmp_s:
        tmp = Path(tmp_s)
        by_size: dict[int, Path] = {}
        for spec in configs:
            backbone, size = spec.rsplit(":", 1)
            size = int(size)
            if size not in by_size:
                by_size[size] = make_dataset(tmp / f"synth-{size}", images=images, size=max(64, size))
            for _ in range(args.repeats):
                for workers in workers_list:
                    results.append(
                        measure(
                            by_size[size],
                            tmp,
                            backbone=backbone,
                            size=size,
                            epochs=epochs,
                            batch_size=bs,
                            workers=workers,
                        )
                    )
    report = {"benchmark": "pipeline", "quick": args.quick, "host": host(), "results": results}
    write_json(args.out, report)
    rows = [
        [
            f"{r['backbone']}@{r['img_size']}",
            r["steps_per_epoch"],
            r["workers"],
            1000 * r["bare_step_s"],
            1000 * r["train_step_s"],
            1000 * r["epoch_step_s"],
            r["ratio_train_loop"],
            r["ratio_train_loop_cpu"],
            r["ratio_epoch"],
            r["ratio_epoch_cpu"],
            r["ratio_run"],
            r["ratio_run_cpu"],
        ]
        for r in results
    ]
    print(
        table(
            [
                "config",
                "steps/ep",
                "workers",
                "bare ms",
                "train ms",
                "epoch ms",
                "bare/train",
                "(cpu)",
                "bare/epoch",
                "(cpu)",
                "bare/run",
                "(cpu)",
            ],
            rows,
        )
    )
    print(f"load average {report['host']['loadavg']}; JSON: {args.out}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
