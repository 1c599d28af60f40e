"""A label CSV of 1e6 rows whose image files do not exist: how long and how much memory until a clear refusal.

Writes ``train.csv`` with ``--rows`` Kaggle-2021 rows (36-character ids, random labels) next to an empty
``train/`` folder, runs the real command line (``python -m locbench data info DIR``, and with ``--train``
``python -m locbench train`` up to its refusal) in a subprocess, and measures its wall time and peak resident
memory (GNU ``/usr/bin/time``'s maximum resident set size). With ``--present`` it also times a table whose files all
exist (one ``green`` file per row, empty: only existence is checked) so that the check does not slow the
normal case down.

Prints a table and writes ``benchmarks/out/missing_files.json``. The code measured is the one Python imports:
run it with ``PYTHONPATH=<checkout>`` to measure another checkout with the same script.

    .venv/bin/python benchmarks/missing_files.py --rows 1000000 --present --train
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers
from _common import OUT_DIR, host, table, write_json  # noqa: E402

#: What the issue asks of the 1e6-row refusal on the 2-core machine.
LIMIT_S, LIMIT_MB = 20.0, 300.0


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` Kaggle-2021 rows: HPA-like 36-character ids, 1 to 3 labels of the 19 classes."""
    rng = np.random.default_rng(seed)
    hexes = rng.integers(0, 16**8, size=(rows, 4), dtype=np.int64)
    labels = rng.integers(0, 19, size=(rows, 3))
    count = rng.integers(1, 4, size=rows)
    with path.open("w") as f:
        f.write("ID,Label\n")
        for k in range(rows):
            a, b, c, d = hexes[k]
            lab = "|".join(str(x) for x in labels[k, : count[k]])
            f.write(f"{a:08x}-{b & 0xFFFF:04x}-11e8-{c & 0xFFFF:04x}-{d:08x}{k % 10000:04d},{lab}\n")


def measure(args: list[str], *, env: dict[str, str], cwd: Path) -> dict:
    """Run ``python -m locbench ARGS`` under ``/usr/bin/time``: exit code, wall seconds, peak RSS in MB and the start
    of its stderr. (``os.wait4`` of a child forked from this process would count the parent's pages, torch
    included, that the child holds between fork and exec; GNU time forks from a small process.)"""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", sys.executable, "-m", "locbench", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,  # not the checkout: `python -m` puts the current folder first on sys.path, over PYTHONPATH
    )
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    kb = int(err.rsplit("MAXRSS_KB=", 1)[1].split()[0])
    return {
        "command": "locbench " + " ".join(args),
        "exit": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(kb / 1024, 1),
        "stderr_head": err[:3000],
    }


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--present", action="store_true", help="also time a table whose files exist")
    p.add_argument("--train", action="store_true", help="also run `locbench train` up to its refusal")
    p.add_argument("--no-missing", action="store_true", help="skip the missing-files refusal (with --present)")
    p.add_argument("--label", default="", help="what is measured (e.g. 'main before the change'), for the record")
    p.add_argument("--out", default=str(OUT_DIR / "missing_files.json"))
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="locbench-missing-") as tmp:
        data = Path(tmp) / "data"
        (data / "train").mkdir(parents=True)
        t0 = time.perf_counter()
        write_csv(data / "train.csv", args.rows)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        if not args.no_missing:
            results.append({"case": "missing files", **measure(["data", "info", str(data)], env=env, cwd=Path(tmp))})
        if args.train:
            out = Path(tmp) / "run"
            train = ["train", "--data", str(data), "--out", str(out), "--backbone", "test_resnet", "--device", "cpu"]
            results.append({"case": "missing files (train)", **measure(train, env=env, cwd=Path(tmp))})
            results[-1]["run_folder_made"] = out.exists()
        if args.present:
            t0 = time.perf_counter()
            ids = [line.split(",", 1)[0] for line in (data / "train.csv").read_text().splitlines()[1:]]
            for fid in ids:
                os.close(os.open(data / "train" / f"{fid}_green.png", os.O_CREAT | os.O_WRONLY, 0o644))
            print(f"made {len(ids):,} empty files in {time.perf_counter() - t0:.1f} s", flush=True)
            del ids
            present = measure(["data", "info", str(data)], env=env, cwd=Path(tmp))
            results.append({"case": "files present (1 stain)", **present})
    for r in results:
        print(f"--- {r['case']}: exit {r['exit']}; stderr begins:\n{r['stderr_head'][:1200]}")
    print(
        table(
            ["case", "rows", "exit", "wall s", "peak RSS MB"],
            [[r["case"], args.rows, r["exit"], r["wall_s"], r["peak_rss_mb"]] for r in results],
        )
    )
    refusal = results[0]
    ok = None if args.no_missing else refusal["exit"] == 2 and refusal["wall_s"] < LIMIT_S
    ok = ok and refusal["peak_rss_mb"] < LIMIT_MB
    if not args.no_missing:
        print(f"{args.rows:,}-row refusal within {LIMIT_S:.0f} s and {LIMIT_MB:.0f} MB: {'yes' if ok else 'no'}")
    path = write_json(
        args.out, {"label": args.label, "rows": args.rows, "host": host(), "results": results, "within_limits": ok}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
