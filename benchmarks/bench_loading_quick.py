"""Loading throughput: samples/s from the memory-mapped cache vs decoding the PNGs of each field every time.

Runs ``build_cache`` on a dataset (default: the 101 real Kaggle-2018 fields), then reads every field several
times three ways, all in this one process:

- ``cache``: ``FieldDataset(..., cache=cache)``: a memmap row copy per sample;
- ``decode (FieldDataset)``: ``FieldDataset(..., cache=None)``: PNG decode + INTER_AREA resize per sample;
- ``decode (cv2 loop)``: a bare loop of ``cv2.imread`` of the 4 PNGs + ``cv2.resize``, no locbench code.

Prints a table and writes ``benchmarks/out/bench_loading_quick.json``.

    .venv/bin/python benchmarks/bench_loading_quick.py --img-size 256 --channels rgby
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from locbench.data.cache import build_cache
from locbench.data.channels import resolve_channels
from locbench.data.formats import load_table
from locbench.store.atomic import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hpa-real" / "kaggle2018"


def _rate(fn, n_items: int, repeats: int) -> dict:
    """Best-of-``repeats`` samples/s of ``fn()``, which handles ``n_items`` samples."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"samples_per_s": n_items / best, "ms_per_sample": 1000 * best / n_items, "seconds": times}


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--channels", default="rgby")
    p.add_argument("--workers", type=int, default=None, help="cache build processes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "bench_loading_quick.json"))
    args = p.parse_args()
    # here, not at the top: cache-building worker processes re-import this script, and torch is slow to import
    from locbench.data.dataset import FieldDataset

    table = load_table(args.data)
    channels = resolve_channels(args.channels)
    n, size = len(table), args.img_size
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="locbench-bench-") as tmp:
        t0 = time.perf_counter()
        cache = build_cache(table, channels=channels, size=size, cache_dir=tmp, workers=args.workers, progress=False)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_cache(table, channels=channels, size=size, cache_dir=tmp, workers=args.workers, progress=False)
        reuse_s = time.perf_counter() - t0
        cached = FieldDataset(table, range(n), channels=channels, size=size, cache=cache)
        results["cache"] = _rate(lambda: [cached[k] for k in range(n)], n, args.repeats)
        cache_bytes = (Path(cache.path) / "pixels.npy").stat().st_size

    direct = FieldDataset(table, range(n), channels=channels, size=size)
    results["decode (FieldDataset)"] = _rate(lambda: [direct[k] for k in range(n)], n, args.repeats)

    def cv2_loop() -> None:
        for i in range(n):
            paths = table.paths(i)
            planes = [cv2.imread(str(paths[c]), cv2.IMREAD_UNCHANGED) for c in dict.fromkeys(channels)]
            np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in planes])

    results["decode (cv2 loop)"] = _rate(cv2_loop, n, args.repeats)
    sample = cv2.imread(str(table.paths(0)["green"]), cv2.IMREAD_UNCHANGED)
    report = {
        "data": str(args.data),
        "num_fields": n,
        "source": f"{sample.shape[1]}x{sample.shape[0]} {sample.dtype} {table.paths(0)['green'].suffix}",
        "img_size": size,
        "channels": list(channels),
        "cache_build_s": build_s,
        "cache_build_fields_per_s": n / build_s,
        "cache_reuse_s": reuse_s,
        "cache_bytes": cache_bytes,
        "workers": args.workers,
        "results": results,
        "speedup_cache_vs_decode": results["cache"]["samples_per_s"]
        / results["decode (FieldDataset)"]["samples_per_s"],
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__},
        "note": "single process; the cache file was just written, so its pages are in the OS page cache",
    }
    atomic_write_json(args.out, report)

    print(f"{n} fields of {report['source']} -> {size}px {','.join(channels)}")
    print(
        f"cache build {build_s:.2f} s ({n / build_s:.0f} fields/s), reuse {reuse_s * 1000:.0f} ms, "
        f"{cache_bytes / 1e6:.1f} MB"
    )
    print(f"{'path':<24}{'samples/s':>12}{'ms/sample':>12}")
    for name, r in results.items():
        print(f"{name:<24}{r['samples_per_s']:>12.0f}{r['ms_per_sample']:>12.2f}")
    print(f"cache is {report['speedup_cache_vs_decode']:.0f}x faster than decoding; JSON: {args.out}")


if __name__ == "__main__":
    main()
