"""Loading: samples/s delivered to the training loop, the study's way vs locbench's, on real HPA fields.

Three loaders, each iterated batch by batch as a training loop would (batch 32, green channel, 256 px):

- ``study``: the notebook's Dataset (benchmarks/study_baseline.py): per item ``cv2.imread`` of the green PNG,
  BGR→RGB, resize, ``ToTensor``; a DataLoader with 0 workers. No augmentation (locbench augments later, on the
  device, so leaving it out here makes the study look faster, not slower).
- ``locbench raw``: ``FieldDataset(cache=None)`` (PNG decode + INTER_AREA resize per item) through the engine's
  ``make_loader`` with its worker processes.
- ``locbench cache``: ``FieldDataset`` over the memory-mapped cache through ``make_loader``, with the
  configured workers and with 0.

On the 101 real 512 px Kaggle-2018 fields and the 4 real 2048 px Kaggle-2021 fields (repeated, so that a pass
is long enough to time). Each loader runs one untimed pass (starts workers, fills the OS page cache), then
``--repeats`` timed passes; the best pass counts (least disturbed by other processes on a shared machine). Wall
time and CPU time (this process + its worker processes) are both reported: on a busy shared CPU the CPU-time
ratio is the steadier one.

    .venv/bin/python benchmarks/bench_loading.py
    .venv/bin/python benchmarks/bench_loading.py --quick      # the tiny test fixture, seconds
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, REAL, REPO, Clock, host, table, write_json  # noqa: E402

log = logging.getLogger("bench_loading")


def _pass(loader) -> int:
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return n


def time_loader(loader, repeats: int) -> dict:
    """Best-of-``repeats`` samples/s of full passes over ``loader`` after one untimed pass."""
    _pass(loader)
    runs = []
    for _ in range(repeats):
        with Clock() as c:
            n = _pass(loader)
        runs.append({"wall": c.wall, "cpu": c.cpu, "samples": n})
    best = min(runs, key=lambda r: r["wall"])
    cpu = min(r["cpu"] for r in runs)
    return {
        "samples_per_s": best["samples"] / best["wall"],
        "ms_per_sample": 1000 * best["wall"] / best["samples"],
        "cpu_ms_per_sample": 1000 * cpu / best["samples"],
        "runs": runs,
    }


def bench_dataset(data: Path, *, size: int, repeat_to: int, workers: int, repeats: int, tmp: Path) -> dict:
    """All loaders on one dataset; fields are repeated until a pass has at least ``repeat_to`` samples."""
    import numpy as np
    from study_baseline import study_loader

    from locbench.data.cache import build_cache
    from locbench.data.channels import resolve_channels
    from locbench.data.dataset import FieldDataset
    from locbench.data.formats import load_table
    from locbench.engine.data import make_loader

    tbl = load_table(data)
    channels = resolve_channels("green")
    reps = max(1, -(-repeat_to // len(tbl)))
    idx = np.tile(np.arange(len(tbl)), reps)
    bs = 32
    cache = build_cache(tbl, channels=channels, size=size, cache_dir=tmp, workers=workers, progress=False)
    loaders = {
        "study (cv2 per item, 0 workers)": study_loader(tbl, idx, size=size, train=False, batch_size=bs),
        f"locbench raw ({workers} workers)": make_loader(
            FieldDataset(tbl, idx, channels=channels, size=size), batch_size=bs, workers=workers
        ),
        f"locbench cache ({workers} workers)": make_loader(
            FieldDataset(tbl, idx, channels=channels, size=size, cache=cache), batch_size=bs, workers=workers
        ),
        "locbench cache (0 workers)": make_loader(
            FieldDataset(tbl, idx, channels=channels, size=size, cache=cache), batch_size=bs, workers=0
        ),
    }
    results = {name: time_loader(loader, repeats) for name, loader in loaders.items()}
    del loaders  # stops the persistent workers
    sample = tbl.paths(0)["green"]
    import cv2

    img = cv2.imread(str(sample), cv2.IMREAD_UNCHANGED)
    study = results["study (cv2 per item, 0 workers)"]
    for r in results.values():
        r["speedup_vs_study"] = r["samples_per_s"] / study["samples_per_s"]
        r["cpu_speedup_vs_study"] = study["cpu_ms_per_sample"] / r["cpu_ms_per_sample"]
    return {
        "data": str(data),
        "fields": len(tbl),
        "samples_per_pass": len(idx),
        "source": f"{img.shape[1]}x{img.shape[0]} {img.dtype}",
        "img_size": size,
        "results": results,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=[str(REAL / "kaggle2018"), str(REAL / "kaggle2021")])
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--repeat-to", type=int, default=128, help="repeat fields until a pass has this many samples")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the config's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="the tiny test fixture at 32 px: checks the script works")
    p.add_argument("--out", default=str(OUT_DIR / "bench_loading.json"))
    args = p.parse_args(argv)
    from locbench.config import DataConfig

    data, size, repeat_to, repeats = args.data, args.img_size, args.repeat_to, args.repeats
    workers = DataConfig().workers if args.workers is None else args.workers
    if args.quick:
        data, size, repeat_to, repeats, workers = [str(REPO / "tests/fixtures/hpa2018_tiny")], 32, 8, 1, 0
    datasets = []
    with tempfile.TemporaryDirectory(prefix="locbench-bench-loading-") as tmp:
        for d in data:
            datasets.append(
                bench_dataset(Path(d), size=size, repeat_to=repeat_to, workers=workers, repeats=repeats, tmp=Path(tmp))
            )
    report = {"benchmark": "loading", "quick": args.quick, "host": host(), "datasets": datasets}
    write_json(args.out, report)
    for d in datasets:
        print(f"\n{d['fields']} fields of {d['source']} ({d['samples_per_pass']} per pass) -> {d['img_size']} px green")
        rows = [
            [
                name,
                r["samples_per_s"],
                r["ms_per_sample"],
                r["cpu_ms_per_sample"],
                r["speedup_vs_study"],
                r["cpu_speedup_vs_study"],
            ]
            for name, r in d["results"].items()
        ]
        print(table(["loader", "samples/s", "ms/sample", "cpu ms/sample", "x study", "x study (cpu)"], rows))
    print(f"\nload average {report['host']['loadavg']}; JSON: {args.out}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
