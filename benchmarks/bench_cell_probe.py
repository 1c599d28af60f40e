"""Cell-level probes: embedding each cell's crop against pooling each cell from its whole field (model.pool=cell_mask).

On a synthetic dataset with per-cell truth (``locbench synth``: 300 fields of 256 px, all four stains, its own masks
and cells.csv), two sweeps of the same grid, 2 tiny timm backbones x 3 seeds (each seed its own split), a linear
head, run one after the other in this process through ``locbench.sweep.run_sweep``, each with its own empty cache
folder (what each approach has to prepare is counted):

- ``crops``: ``model.pool: mean`` on every cell's crop (``--crop-size``, pixels outside the cell zeroed:
  ``cell.masked``), cut once into the crop cache, embedded once per split;
- ``cell_mask``: ``model.pool: cell_mask``: the whole field at ``--size`` (the image cache), one backbone pass per
  field per split, each cell the mean of the feature map under its mask.

Reports each sweep's wall and CPU time and per backbone the test cell mAP over seeds (per-cell truth; mean,
Student-t 95% interval over seeds from locbench.report.stats) and the paired cell_mask - crops difference. JSON to
benchmarks/out/bench_cell_probe.json.

    .venv/bin/python benchmarks/bench_cell_probe.py [--images 300] [--size 256] [--crop-size 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, Clock, ci_text, host, over_seeds, paired_over_seeds, table, write_json  # noqa: E402

POOLS = ("crops", "cell_mask")


def sweep_spec(pool: str, args: argparse.Namespace, data: Path, cache: Path) -> dict:
    """The sweep of one way to embed cells: backbone x seeds."""
    return {
        "name": f"bench-cells-{pool}",
        "config": {
            "data": {
                "path": str(data),
                "channels": "rgby",
                "img_size": args.size if pool == "cell_mask" else args.crop_size,
                "workers": 0,
                "cache_dir": str(cache),
                "test_frac": 0.2,
            },
            "model": {"mode": "probe", "head": "linear", "pool": "cell_mask" if pool == "cell_mask" else "mean"},
            "augment": {"name": "none"},
            "train": {"level": "cell", "epochs": args.epochs, "batch_size": 64, "device": "cpu"},
            "cell": {"masked": True},
            "optim": {"lr": 1e-2},
            "log": {"progress": "lines"},
        },
        "grid": {"model.backbone": args.backbones},
        "seeds": list(range(args.seeds)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-cell-probe"), help="data, caches and sweeps")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=256, help="synthetic field side, and the cell_mask model input")
    p.add_argument("--crop-size", type=int, default=64, help="model input side of the crop probes")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--backbones", nargs="+", default=["test_vit", "test_resnet"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--quick", action="store_true", help="a tiny version for the tests (24 fields, 64 px, 2 seeds)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_cell_probe.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.crop_size, args.epochs, args.seeds = 24, 64, 32, 2, 2
        args.work = args.out.parent / "bench-cell-probe-quick"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from locbench.data.synth import synthesize
    from locbench.sweep.grid import expand
    from locbench.sweep.runner import run_sweep

    torch.set_num_threads(args.threads)
    work = args.work
    data = work / f"synth-{args.images}-{args.size}"
    if not (data / "train.csv").is_file():
        synthesize(data, images=args.images, size=args.size, edition="2021", seed=0, overwrite=True)
    load_before = host()["loadavg"]
    sweeps, results = {}, {}
    for pool in POOLS:
        cache = work / f"cache-{pool}"
        shutil.rmtree(cache, ignore_errors=True)  # each approach pays for what it prepares
        sweep = expand(sweep_spec(pool, args, data, cache), where=f"bench {pool}")
        out = work / f"sweep-{pool}"
        shutil.rmtree(out, ignore_errors=True)
        with Clock() as clock:
            counts = run_sweep(sweep, out)
        if counts != {"done": len(sweep.points)}:
            print(f"bench_cell_probe: {pool} sweep did not finish every run: {counts}", file=sys.stderr)
            return 1
        runs: dict[str, dict[int, float]] = {}
        for point in sweep.points:
            summary = json.loads((out / point.run_id / "summary.json").read_text())
            runs.setdefault(point.axes["model.backbone"], {})[point.seed] = summary["test"]["map"]
        embed_s = [json.loads(f.read_text())["seconds"] for f in sorted((cache / "embeddings").glob("*/complete"))]
        sweeps[pool] = {
            "wall_s": clock.wall,
            "cpu_s": clock.cpu,
            "runs": len(sweep.points),
            "embedding_s": sum(embed_s),
        }
        results[pool] = runs

    points = []
    for backbone in results["crops"]:
        crops, fields = results["crops"][backbone], results["cell_mask"][backbone]
        points.append(
            {
                "backbone": backbone,
                "crops": over_seeds(crops),
                "cell_mask": over_seeds(fields),
                "diff": paired_over_seeds(crops, fields),
            }
        )
    result = {
        "host": host(),
        "loadavg_before": load_before,
        "settings": {
            "images": args.images,
            "field_size": args.size,
            "crop_size": args.crop_size,
            "channels": "rgby",
            "epochs": args.epochs,
            "seeds": args.seeds,
            "backbones": args.backbones,
            "threads": args.threads,
            "quick": args.quick,
        },
        "sweeps": sweeps,
        "crops_over_cell_mask_wall": sweeps["crops"]["wall_s"] / sweeps["cell_mask"]["wall_s"],
        "points": points,
        "metric": "test cell mAP against the per-cell truth (cells.csv), the run's summary.json",
        "interval": "Student-t 95% over seeds (locbench.report.stats.t_interval); diff: paired t over seeds",
    }
    write_json(args.out, result)

    print(
        table(
            ["cells from", "runs", "wall s", "cpu s", "embedding s"],
            [[k, v["runs"], v["wall_s"], v["cpu_s"], v["embedding_s"]] for k, v in sweeps.items()],
            markdown=True,
        )
    )
    print(f"\ncrops / cell_mask: {result['crops_over_cell_mask_wall']:.2f}x wall (load {result['host']['loadavg']})\n")
    print(
        table(
            ["backbone", "crops test cell mAP", "cell_mask test cell mAP", "cell_mask - crops"],
            [[r["backbone"], ci_text(r["crops"]), ci_text(r["cell_mask"]), ci_text(r["diff"])] for r in points],
            markdown=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
