"""GPU throughput: the study's six backbones, bare model vs the full locbench pipeline, in one short run.

For each backbone (eca_nfnet_l0, resnet50, inception_v3, efficientnet_b0, efficientnet_b3, efficientnet_b5) and
size (256, 512):

- bare training throughput (img/s) over random tensors (random init: no internet needed), forward + BCE +
  backward + Adam, in variants ``fp32``, ``bf16`` (autocast), ``bf16_cl`` (autocast + channels_last) and
  ``bf16_cl_fast`` (the same with cudnn.benchmark and non-deterministic kernels: what the engine's
  determinism costs). The engine's own settings are deterministic, so ``bf16``/``bf16_cl`` are the references;
- the full pipeline (``locbench.engine.fit.train`` on a synthetic dataset: cache, loader workers, augmentation
  on the GPU, BCE, metrics, validation, checkpoints) with the engine's defaults (amp auto, channels_last auto):
  training img/s of epoch 2 and its ratio to the matching bare variant.

Few steps per config, warmup excluded; configs left when ``--budget-s`` runs out are recorded as skipped, so
the whole run stays under about 8 minutes. Writes ``benchmarks/out/bench_gpu.json`` and ``bench_gpu.md``.
Without CUDA it runs on the CPU (``--quick`` uses a tiny timm test model: the test suite checks the script).

``--dry-run`` runs every code path of the GPU run on the CPU, on any machine, in well under a minute: tiny timm
stand-ins for the study's families (``test_resnet``; ``test_nfnet``, whose quirks keep the contiguous layout) at
32 px, every variant, and the pipeline with ``train.gpu_paths_on_cpu`` (the engine decides as on CUDA: bf16
autocast, channels_last, loader workers over the cache). Each pipeline row records what the engine ran with.
Pinned memory needs CUDA and is the one part it cannot take. Writes ``bench_gpu_dry_run.json`` / ``.md``.

    bash benchmarks/gpu.sh                          # on the GPU machine
    bash benchmarks/gpu.sh --dry-run                # anywhere, before borrowing one
    .venv/bin/python benchmarks/bench_gpu.py --quick
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, host, linked_dataset, table, write_json  # noqa: E402

log = logging.getLogger("bench_gpu")
STUDY = ("eca_nfnet_l0", "resnet50", "inception_v3", "efficientnet_b0", "efficientnet_b3", "efficientnet_b5")
VARIANTS = ("fp32", "bf16", "bf16_cl", "bf16_cl_fast")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_throughput(
    backbone: str, size: int, variant: str, *, batch_size: int, steps: int, warmup: int, device
) -> dict:
    """Training img/s of one backbone over one random batch (forward, BCE, backward, Adam step)."""
    from contextlib import nullcontext

    import torch

    from locbench.config import ModelConfig
    from locbench.models import build_model

    fast = variant.endswith("_fast")
    torch.backends.cudnn.benchmark = fast
    torch.use_deterministic_algorithms(not fast, warn_only=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone), num_classes=19, in_chans=3).to(device).train()
    channels_last = "_cl" in variant
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, 19, device=device) < 0.2).float()
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if variant.startswith("bf16") else nullcontext()

    def step() -> None:
        with amp:
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"img_per_s": batch_size * steps / dt, "step_ms": 1000 * dt / steps, "peak_mem_mb": peak}


def pipeline_throughput(
    data: Path, tmp: Path, backbone: str, size: int, *, batch_size: int, workers: int, device, gpu_paths: bool = False
):
    """Training img/s of the full ``train()`` (epoch 2 of 2) with the engine's defaults on ``device`` (with
    ``gpu_paths`` on a CPU: the decisions it takes on CUDA), and what it ran with."""
    from locbench.config import RunConfig
    from locbench.engine.callbacks import Callback
    from locbench.engine.fit import train
    from locbench.store.rundir import RunDir

    ran: dict = {}

    class Paths(Callback):
        """What the engine chose: precision, layout, GradScaler, loader workers and pinned memory."""

        def on_fit_start(self, trainer) -> None:
            p = trainer.parts
            ran.update(
                amp=str(p.dtype).removeprefix("torch.") if p.dtype is not None else "off",
                channels_last=p.channels_last,
                grad_scaler=p.scaler is not None,
                loader_workers=p.train_loader.num_workers,
                pin_memory=p.train_loader.pin_memory,
            )

    cfg = RunConfig().replace(
        {
            "data.path": str(data),
            "data.img_size": size,
            "data.workers": workers,
            "data.cache_dir": str(tmp / "cache"),
            "model.backbone": backbone,
            "train.epochs": 2,
            "train.batch_size": batch_size,
            "train.device": str(device),
            "log.progress": "lines",
            "train.gpu_paths_on_cpu": gpu_paths,
        }
    )
    run = tmp / f"run-{backbone}-{size}"
    t0 = time.perf_counter()
    train(cfg, run, callbacks=[Paths()])
    wall = time.perf_counter() - t0
    records = RunDir(run).read_metrics()
    summary = RunDir(run).read_summary()
    return {
        "img_per_s": records[-1]["train/img_per_s"],
        "epoch_s": records[-1]["time/epoch_s"],
        "run_s": wall,
        "peak_mem_mb": summary["cost"]["peak_mem_mb"],
        **ran,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=list(STUDY))
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per bare config")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=640, help="fields of the pipeline's dataset (80%% train)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="pipeline loader workers")
    p.add_argument("--no-pipeline", action="store_true", help="bare throughput only")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    p.add_argument("--quick", action="store_true", help="tiny model, 32 px, 2 steps: checks the script works")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="the GPU run's code paths on the CPU with tiny models (train.gpu_paths_on_cpu), in well under a minute",
    )
    p.add_argument("--out", default=None, help="default benchmarks/out/bench_gpu.json (bench_gpu_dry_run.json)")
    args = p.parse_args(argv)
    import torch

    args.out = args.out or str(OUT_DIR / ("bench_gpu_dry_run.json" if args.dry_run else "bench_gpu.json"))
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if args.quick:
        args.backbones, args.sizes, args.steps, args.warmup = ["test_resnet.r160_in1k"], [32], 2, 1
        args.batch_size, args.images, args.workers = 4, 16, 0
    if args.dry_run:
        # the study's loops (sizes x backbones x variants, a dataset per size), an NFNet's quirks included
        args.backbones, args.sizes, args.steps, args.warmup = ["test_resnet.r160_in1k", "test_nfnet"], [32], 2, 1
        args.batch_size, args.images, args.workers = 4, 16, 2
    if device.type == "cpu" and (args.quick or args.dry_run):
        torch.set_num_threads(1)  # two OpenMP threads on a busy shared CPU spin against each other
    t_start = time.perf_counter()
    bare, pipe = [], []

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    with tempfile.TemporaryDirectory(prefix="locbench-bench-gpu-") as tmp_s:
        tmp = Path(tmp_s)
        datasets: dict[int, Path] = {}
        for size in args.sizes:
            for backbone in args.backbones:
                for variant in args.variants:
                    row = {"backbone": backbone, "img_size": size, "variant": variant, "batch_size": args.batch_size}
                    if left() <= 0:
                        row["skipped"] = "time budget"
                    else:
                        try:
                            row.update(
                                bare_throughput(
                                    backbone,
                                    size,
                                    variant,
                                    batch_size=args.batch_size,
                                    steps=args.steps,
                                    warmup=args.warmup,
                                    device=device,
                                )
                            )
                        except torch.cuda.OutOfMemoryError:
                            row["skipped"] = "out of memory"
                            torch.cuda.empty_cache()
                    bare.append(row)
                    log.warning("bare %s", row)
            if args.no_pipeline:
                continue
            for backbone in args.backbones:
                row = {"backbone": backbone, "img_size": size, "batch_size": args.batch_size}
                if left() <= 0:
                    row["skipped"] = "time budget"
                else:
                    if size not in datasets:
                        unique = min(args.images, 64)
                        datasets[size] = linked_dataset(
                            tmp / f"synth-{size}",
                            unique=unique,
                            total=args.images,
                            size=max(64, size),
                            workers=max(1, args.workers),
                        )
                    try:
                        row.update(
                            pipeline_throughput(
                                datasets[size],
                                tmp,
                                backbone,
                                size,
                                batch_size=args.batch_size,
                                workers=args.workers,
                                device=device,
                                gpu_paths=args.dry_run,
                            )
                        )
                    except torch.cuda.OutOfMemoryError:
                        row["skipped"] = "out of memory"
                        torch.cuda.empty_cache()
                pipe.append(row)
                log.warning("pipeline %s", row)
    # the bare variant of what the engine chose (on CUDA: bf16, channels_last except for NFNets; fp32 on a CPU)
    refs = {("off", False): "fp32", ("bfloat16", False): "bf16", ("bfloat16", True): "bf16_cl"}
    for row in pipe:
        ref = refs.get((row.get("amp"), row.get("channels_last")))
        if "img_per_s" not in row or ref is None:
            continue
        match = [
            b for b in bare if (b["backbone"], b["img_size"], b["variant"]) == (row["backbone"], row["img_size"], ref)
        ]
        if match and "img_per_s" in match[0]:
            row["bare_reference"] = ref
            row["ratio_to_bare"] = row["img_per_s"] / match[0]["img_per_s"]
    report = {
        "benchmark": "gpu",
        "quick": args.quick,
        "dry_run": args.dry_run,
        "device": str(device),
        "host": host(),
        "steps": args.steps,
        "warmup": args.warmup,
        "total_s": time.perf_counter() - t_start,
        "bare": bare,
        "pipeline": pipe,
    }
    write_json(args.out, report)
    md = _markdown(report, args.variants)
    from locbench.store.atomic import atomic_write_text

    atomic_write_text(Path(args.out).with_suffix(".md"), md)
    print(md)
    return report


def _markdown(report: dict, variants) -> str:
    def img_s(rows, **key) -> float | str:
        for r in rows:
            if all(r.get(k) == v for k, v in key.items()):
                return r.get("img_per_s", r.get("skipped", "-"))
        return "-"

    rows = []
    sizes = sorted({r["img_size"] for r in report["bare"]})
    backbones = list(dict.fromkeys(r["backbone"] for r in report["bare"]))
    for size in sizes:
        for bb in backbones:
            pipe = next((r for r in report["pipeline"] if r["backbone"] == bb and r["img_size"] == size), {})
            rows.append(
                [
                    bb,
                    size,
                    *(img_s(report["bare"], backbone=bb, img_size=size, variant=v) for v in variants),
                    pipe.get("img_per_s", pipe.get("skipped", "-")),
                    pipe.get("ratio_to_bare", "-"),
                    pipe.get("peak_mem_mb", "-"),
                    _ran(pipe),
                ]
            )
    head = [
        "backbone",
        "px",
        *(f"bare {v} img/s" for v in variants),
        "pipeline img/s",
        "pipeline/bare",
        "peak MB",
        "pipeline ran",
    ]
    on = report["host"].get("cuda") if report["device"].startswith("cuda") else report["device"]
    dry = " (dry run: the GPU run's code paths with tiny models; not throughput figures)" if report["dry_run"] else ""
    return (
        f"GPU throughput on {on}{dry} (batch {report['bare'][0]['batch_size']}, "
        f"{report['steps']} timed steps, {report['total_s']:.0f} s in all)\n\n"
        + table(head, rows, markdown=True)
        + "\n"
    )


def _ran(row: dict) -> str:
    """What the pipeline's engine chose, in words."""
    if "amp" not in row:
        return "-"
    parts = [row["amp"], "channels_last" if row["channels_last"] else "contiguous"]
    parts += ["GradScaler"] * row["grad_scaler"] + [f"{row['loader_workers']} workers"]
    return ", ".join(parts + ["pinned"] * row["pin_memory"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    main()
