"""Cost growth: cache build time and peak memory against the number of fields; report time against runs.

- Cache: synthetic 512 px fields (a few dozen drawn by ``locbench synth``, hard-linked under new ids up to
  each count: decoding costs the same per file), ``build_cache`` from scratch in a fresh child process per
  count, which reports its wall time and its peak resident memory. Decoding workers (forkserver processes, not
  counted there) each hold one chunk of 16 fields at a time, whatever the count.
  A least-squares line through the counts extrapolates to the full Kaggle-2021 train set (21,806 fields).
- Report: ``locbench.report.build_report`` on fake sweep folders (tests/report_fixtures.py, written to the
  run-folder contract) with more and more runs (seeds × a 2 × 2 × 2 grid).

    .venv/bin/python benchmarks/bench_scaling.py                       # 250, 1000, 2000 fields; 8-96 runs
    .venv/bin/python benchmarks/bench_scaling.py --quick              # seconds: checks the script works
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, REPO, host, linked_dataset, load_module, table, write_json  # noqa: E402

log = logging.getLogger("bench_scaling")
FULL_2021 = 21_806


def _child(data: str, cache_dir: str, size: int, channels: str, workers: int) -> None:
    """Build one cache in this fresh process and print its time and peak memory as JSON."""
    import resource

    from locbench.data.cache import build_cache
    from locbench.data.formats import load_table

    tbl = load_table(data, check_images=False)
    t0 = time.perf_counter()
    cache = build_cache(tbl, channels=channels, size=size, cache_dir=cache_dir, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    nbytes = (Path(cache.path) / "pixels.npy").stat().st_size
    print(json.dumps({"fields": len(tbl), "build_s": dt, "rss_mb": own, "bytes": nbytes}))


def cache_growth(counts: list[int], *, size: int, channels: str, workers: int, src_size: int, tmp: Path) -> list:
    rows = []
    for n in counts:
        data = linked_dataset(tmp / f"fields-{n}", unique=min(n, 32), total=n, size=src_size, workers=workers)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(data),
            str(tmp / f"cache-{n}"),
            str(size),
            channels,
            str(workers),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        log.warning("cache %s", rows[-1])
    return rows


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (a + b x)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - b * mx, b


def report_growth(seed_counts: list[int], *, n_val: int, resamples: int, tmp: Path) -> list:
    from locbench.report import build_report

    fixtures = load_module(REPO / "tests" / "report_fixtures.py", "report_fixtures")
    rows = []
    for k in seed_counts:
        root = fixtures.make_sweep(tmp / f"sweep-{k}", seeds=tuple(range(k)), n_val=n_val, problems=False)
        runs = sum(1 for p in root.iterdir() if (p / "status").exists())
        t0 = time.perf_counter()
        build_report(root, n_resamples=resamples)
        rows.append(
            {"runs": runs, "seeds": k, "n_val": n_val, "resamples": resamples, "report_s": time.perf_counter() - t0}
        )
        log.warning("report %s", rows[-1])
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[250, 1000, 2000], help="fields per cache build")
    p.add_argument("--src-size", type=int, default=512, help="side of the synthetic fields")
    p.add_argument("--img-size", type=int, default=256, help="cache side")
    p.add_argument("--channels", default="green")
    p.add_argument("--workers", type=int, default=2, help="cache decoding processes")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 3, 6, 12], help="seeds of the fake sweeps (8 runs each)")
    p.add_argument("--n-val", type=int, default=1000, help="validation images per fake run")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (single-seed sweeps)")
    p.add_argument("--quick", action="store_true", help="tiny counts: checks the script works")
    p.add_argument("--out", default=str(OUT_DIR / "bench_scaling.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.counts, args.src_size, args.img_size, args.workers = [8, 16], 64, 32, 1
        args.seeds, args.n_val, args.resamples = [1], 40, 20
    with tempfile.TemporaryDirectory(prefix="locbench-bench-scaling-") as tmp_s:
        tmp = Path(tmp_s)
        cache = cache_growth(
            args.counts,
            size=args.img_size,
            channels=args.channels,
            workers=args.workers,
            src_size=args.src_size,
            tmp=tmp,
        )
        reports = report_growth(args.seeds, n_val=args.n_val, resamples=args.resamples, tmp=tmp)
    xs = [float(r["fields"]) for r in cache]
    fits = {}
    for key in ("build_s", "rss_mb", "bytes"):
        a, b = fit_line(xs, [float(r[key]) for r in cache])
        fits[key] = {"intercept": a, "per_field": b, "at_21806": a + b * FULL_2021}
    ra, rb = fit_line([float(r["runs"]) for r in reports], [r["report_s"] for r in reports])
    result = {
        "benchmark": "scaling",
        "quick": args.quick,
        "host": host(),
        "cache": {"img_size": args.img_size, "src_size": args.src_size, "channels": args.channels, "rows": cache},
        "cache_fit": fits,
        "report": reports,
        "report_fit": {"intercept": ra, "per_run": rb},
    }
    write_json(args.out, result)
    print(f"cache build: {args.src_size} px fields -> {args.img_size} px {args.channels}, {args.workers} workers")
    rows = [[r["fields"], r["build_s"], r["fields"] / r["build_s"], r["rss_mb"], r["bytes"] / 1e6] for r in cache]
    rows.append(
        [
            "21,806 (fit)",
            fits["build_s"]["at_21806"],
            float("nan"),
            fits["rss_mb"]["at_21806"],
            fits["bytes"]["at_21806"] / 1e6,
        ]
    )
    print(table(["fields", "build s", "fields/s", "peak RSS MB", "cache MB"], rows))
    print("\nreport generation")
    print(table(["runs", "val images/run", "seconds"], [[r["runs"], r["n_val"], r["report_s"]] for r in reports]))
    print(f"\nload average {result['host']['loadavg']}; JSON: {args.out}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
    else:
        main()
