"""Frozen-backbone probes against fine-tuning: the same grid, the same epochs, wall time and test mAP.

On a synthetic dataset (``locbench synth``: 600 fields, 128 px, all four stains), two sweeps of the same grid,
2 tiny timm backbones x 3 head settings (linear head at lr 1e-3 and 1e-2, MLP head at lr 1e-3) x 3 seeds (each seed
its own split), run one after the other in this process through ``locbench.sweep.run_sweep``:

- ``probe``: ``model.mode: probe``: each split's embeddings are computed once per backbone (the embedding cache,
  started empty, so the embedding pass is counted), then only the head trains;
- ``finetune``: ``model.mode: finetune`` with the default standard augmentation (a probe cannot augment).

The image cache is built before either is timed (both read it). Reports each sweep's wall and CPU time, the ratio,
the embedding pass's share, and per grid point the test mAP over seeds (mean, Student-t 95% interval over seeds
from locbench.report.stats) and the paired probe - finetune difference. JSON to benchmarks/out/bench_probe.json.

    .venv/bin/python benchmarks/bench_probe.py [--images 600] [--size 128] [--epochs 6] [--quick]
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


def sweep_spec(mode: str, args: argparse.Namespace, data: Path, cache: Path) -> dict:
    """The sweep of one mode: backbone x setting (head, lr) x seeds."""
    return {
        "name": f"bench-{mode}",
        "config": {
            "data": {
                "path": str(data),
                "channels": "rgby",
                "img_size": args.img_size,
                "workers": 0,
                "cache_dir": str(cache),
                "test_frac": 0.2,
            },
            "model": {"mode": mode, "hidden": 128},
            "augment": {"name": "none" if mode == "probe" else "standard"},
            "train": {"epochs": args.epochs, "batch_size": 32, "device": "cpu"},
            "log": {"progress": "lines"},
        },
        "grid": {"model.backbone": args.backbones, "model.head": ["linear", "mlp"], "optim.lr": [1e-3, 1e-2]},
        "exclude": [{"model.head": "mlp", "optim.lr": 1e-2}],
        "seeds": list(range(args.seeds)),
    }


def setting_of(axes: dict) -> str:
    return f"{axes['model.head']}-lr{float(axes['optim.lr']):.0e}".replace("e-0", "e-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-probe"), help="data, caches and sweep folders")
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--size", type=int, default=128, help="synthetic field side")
    p.add_argument("--img-size", type=int, default=128, help="model input side")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--backbones", nargs="+", default=["test_vit", "test_resnet"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--quick", action="store_true", help="a tiny version for the tests (40 fields, 32 px, 1 seed)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_probe.json")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size, args.img_size, args.epochs, args.seeds = 40, 64, 32, 2, 2
        args.work = args.out.parent / "bench-probe-quick"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from locbench.data.synth import synthesize
    from locbench.engine.data import prepare_cache
    from locbench.sweep.grid import expand
    from locbench.sweep.runner import run_sweep

    torch.set_num_threads(args.threads)
    work = args.work
    data = work / f"synth-{args.images}-{args.size}"
    if not (data / "train.csv").is_file():
        synthesize(data, images=args.images, size=args.size, edition="2021", seed=0, overwrite=True)
    cache = work / "cache"
    shutil.rmtree(cache / "embeddings", ignore_errors=True)  # the probes pay for their embedding pass
    load_before = host()["loadavg"]

    sweeps, results = {}, {}
    for mode in ("probe", "finetune"):
        sweep = expand(sweep_spec(mode, args, data, cache), where=f"bench {mode}")
        prepare_cache(sweep.points[0].config)  # the image cache: shared, built before timing
        out = work / f"sweep-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        with Clock() as clock:
            counts = run_sweep(sweep, out)
        if counts != {"done": len(sweep.points)}:
            print(f"bench_probe: {mode} sweep did not finish every run: {counts}", file=sys.stderr)
            return 1
        runs = {}
        for point in sweep.points:
            summary = json.loads((out / point.run_id / "summary.json").read_text())
            key = f"{point.axes['model.backbone']}/{setting_of(point.axes)}"
            runs.setdefault(key, {})[point.seed] = summary["test"]["map"]
        sweeps[mode] = {"wall_s": clock.wall, "cpu_s": clock.cpu, "runs": len(sweep.points)}
        results[mode] = runs
    embed_s = [json.loads(f.read_text())["seconds"] for f in sorted((cache / "embeddings").glob("*/complete"))]
    sweeps["probe"]["embedding_passes"] = len(embed_s)
    sweeps["probe"]["embedding_s"] = sum(embed_s)
    ratio = sweeps["finetune"]["wall_s"] / sweeps["probe"]["wall_s"]

    points = []
    for key in results["probe"]:
        probe, fine = results["probe"][key], results["finetune"][key]
        points.append(
            {
                "point": key,
                "probe": over_seeds(probe),
                "finetune": over_seeds(fine),
                "diff": paired_over_seeds(fine, probe),
            }
        )
    result = {
        "host": host(),
        "loadavg_before": load_before,
        "settings": {
            "images": args.images,
            "field_size": args.size,
            "img_size": args.img_size,
            "channels": "rgby",
            "epochs": args.epochs,
            "seeds": args.seeds,
            "backbones": args.backbones,
            "head_settings": list(results["probe"]),
            "threads": args.threads,
            "quick": args.quick,
        },
        "sweeps": sweeps,
        "finetune_over_probe_wall": ratio,
        "finetune_over_probe_cpu": sweeps["finetune"]["cpu_s"] / sweeps["probe"]["cpu_s"],
        "points": points,
        "interval": "Student-t 95% over seeds (locbench.report.stats.t_interval); diff: paired t over seeds",
    }
    write_json(args.out, result)

    print(
        table(
            ["sweep", "runs", "wall s", "cpu s", "embedding s"],
            [
                [
                    "probe",
                    sweeps["probe"]["runs"],
                    sweeps["probe"]["wall_s"],
                    sweeps["probe"]["cpu_s"],
                    sweeps["probe"]["embedding_s"],
                ],
                [
                    "finetune",
                    sweeps["finetune"]["runs"],
                    sweeps["finetune"]["wall_s"],
                    sweeps["finetune"]["cpu_s"],
                    None,
                ],
            ],
            markdown=True,
        )
    )
    print(
        f"\nfine-tuning / probing: {ratio:.1f}x wall, {result['finetune_over_probe_cpu']:.1f}x CPU "
        f"(load average {result['host']['loadavg']})\n"
    )
    print(
        table(
            ["backbone/setting", "probe test mAP", "finetune test mAP", "probe - finetune"],
            [[r["point"], ci_text(r["probe"]), ci_text(r["finetune"]), ci_text(r["diff"])] for r in points],
            markdown=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
