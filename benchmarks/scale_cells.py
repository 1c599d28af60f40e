"""Segmentation and the cell crop cache at dataset scale: fields/s and peak memory at each worker count.

Each measurement runs in a fresh child process (its own worker pool started from scratch, as a user's command
would) over a farm of real full-size fields (``_common.real_farm``: the four real 2021 fields of 2048-3072 px
hard-linked under new ids, with their HPA masks):

- ``segment``: ``segment_dataset`` (watershed) of every field into an empty folder;
- ``crops``: what a user waits for before training on cells: the cell index (``index_table_cells``, every mask
  read) and then ``build_crop_cache`` (rgby, 128 px) of every cell of the HPA masks, both into an empty cache
  and with the same worker count.

Reported per worker count: wall seconds, fields/s, the steady rate once every worker has returned its first
field (the pool's start-up left out), and the peak memory of the whole process tree (the command, the
forkserver and the workers: the sum of their PSS, sampled every ``SAMPLE_S`` from /proc). ``speedup_1_to_2`` is the
ratio of fields/s (and of steady rates) at 2 workers to 1, from the same run. ``--quick`` uses a few small
synthetic fields instead. Below ``MIN_FIELDS_FOR_POOL`` (16) fields the commands run in one process whatever
the worker count (``pool`` says which): measure at least that many.

    .venv/bin/python benchmarks/scale_cells.py --fields 40 --workers 1 2 [--sizes 10 40] [--steps crops] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, REPO, host, real_farm, table, write_json  # noqa: E402

from locbench.data.pool import MIN_FIELDS_FOR_POOL  # noqa: E402

#: Seconds between two samples of the process tree's memory. Reading a process's PSS (smaps_rollup) costs ~4 ms of
#: CPU: sampling four processes every 50 ms took about a fifth of a core, which on a 2-core machine only the
#: 2-worker run misses (the 1-worker one has a core spare); every 0.5 s it is ~3 % of a core (``sampler_cpu_s``).
SAMPLE_S = 0.5

#: Crop side and stains of the crop measurement (a typical cell-level run).
CROP_SIZE, CROP_STAINS = 128, ("red", "green", "blue", "yellow")

# Run in the child: times one pass and prints its numbers as JSON on the last line.
CHILD = r"""
import json, logging, sys, time
from pathlib import Path

class Arrivals(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.times = []
    def emit(self, record):
        msg = record.getMessage()  # the tasks of the main pass ("(segment)", "(cell crops)"), not the index's
        if msg.startswith("done ") and not msg.endswith("(cell index)"):
            self.times.append(time.perf_counter())

def main():
    step, data, out, workers = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    arrivals = Arrivals()
    pool_log = logging.getLogger("locbench.data.pool")
    pool_log.setLevel(logging.DEBUG)
    pool_log.addHandler(arrivals)
    from locbench.data.formats import load_table
    table = load_table(data)
    if step == "segment":
        from locbench.cells.segment import segment_dataset
        t0 = time.perf_counter()
        segment_dataset(table, out_dir=out, workers=workers, progress=False)
    else:
        from locbench.cells.data import build_crop_cache, index_table_cells
        t0 = time.perf_counter()  # what a user waits for: the cell index (masks read), then the crops
        cells = index_table_cells(table, data / "masks", cache_dir=out, workers=workers, progress=False)
        build_crop_cache(table, cells, data / "masks", stains=tuple(sys.argv[6].split(",")), size=int(sys.argv[5]),
                         margin=0.1, masked=False, cache_dir=out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "arrivals": [t - t0 for t in arrivals.times],
                      "cells": None if step == "segment" else len(cells)}))

if __name__ == "__main__":
    main()
"""


def tree_pss(pid: int, cpu: dict[int, float] | None = None) -> int:
    """Proportional resident bytes (PSS) of ``pid`` and all its descendants: pages shared by forked workers are
    counted once in the sum, not once a process as RSS would. Linux /proc only; gone processes count 0.

    ``cpu`` (pid → CPU seconds so far) is updated for every process of the tree on the way."""
    total, todo, tick = 0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            if cpu is not None:
                stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[p] = (int(stat[11]) + int(stat[12])) / tick  # utime + stime
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def run_child(step: str, data: Path, out: Path, workers: int, script: Path) -> dict[str, Any]:
    """One pass in a fresh process; its JSON plus the peak memory of its process tree."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), step, str(data), str(out), str(workers), str(CROP_SIZE), ",".join(CROP_STAINS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, cpu, own = [0], {}, [0.0]

    def sample() -> None:
        start = time.thread_time()
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(proc.pid, cpu))
            time.sleep(SAMPLE_S)
        own[0] = time.thread_time() - start

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{step} with {workers} workers failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    # CPU of the whole tree (as last seen, up to SAMPLE_S short a process): what the pass costs, whatever the load
    # sampler_cpu_s: what measuring took from the same cores (outside the tree)
    return {**result, "peak_pss_mb": peak[0] / 2**20, "tree_cpu_s": sum(cpu.values()), "sampler_cpu_s": own[0]}


def _summary(n_fields: int, workers: int, raw: dict[str, Any]) -> dict[str, Any]:
    arrivals = raw["arrivals"]  # one per finished task; a task may hold several fields (crops)
    per_task = n_fields / max(1, len(arrivals))
    steady = None
    if len(arrivals) > workers:
        # once every worker has returned a first task, the pool is started: the rate from there on
        steady = (len(arrivals) - workers) * per_task / (raw["wall"] - arrivals[workers - 1])
    return {
        "workers": workers,
        "pool": workers > 1 and n_fields >= MIN_FIELDS_FOR_POOL,  # fewer fields run in the command's process
        "wall_s": raw["wall"],
        "fields_per_s": n_fields / raw["wall"],
        "steady_fields_per_s": steady,
        "peak_pss_mb": raw["peak_pss_mb"],
        "tree_cpu_s": raw["tree_cpu_s"],
        "sampler_cpu_s": raw["sampler_cpu_s"],
        "cells": raw["cells"],
    }


def _farm(root: Path, n_fields: int, quick: bool) -> tuple[Path, str]:
    if quick:
        from locbench.data.synth import synthesize

        data = root / f"synth-{n_fields}"
        if not (data / "train.csv").is_file():
            synthesize(data, images=n_fields, size=128, seed=0)
        return data, "synthetic 128 px"
    return real_farm(root / "farm", total=n_fields), "real 2021 fields, 2048-3072 px (hard-linked)"


STEPS = ("segment", "crops")


def measure(
    root: Path, n_fields: int, workers: list[int], quick: bool, steps: tuple[str, ...] = STEPS, repeats: int = 1
) -> dict:
    """Fields/s and peak memory (process tree) of ``segment`` and of the crop cache at each worker count.

    Args:
        root: working folder (the field farm and the outputs, removed after each pass).
        n_fields: fields to process.
        workers: worker counts to measure (1 and 2 give ``speedup_1_to_2``).
        quick: small synthetic fields instead of the real ones (for the test suite).
        steps: which passes to measure (default both).
        repeats: passes per worker count, the worker counts taking turns; the fastest is reported (on a machine
            shared with other jobs the fastest pass is the least disturbed one), every wall time in ``walls_s``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data, source = _farm(root, n_fields, quick)
    script = root / "_scale_cells_child.py"
    script.write_text(CHILD)
    result: dict[str, Any] = {"n_fields": n_fields, "source": source, "host": host(), "segment": [], "crops": []}
    for step in steps:
        passes: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
        for _ in range(max(1, repeats)):
            for w in workers:
                out = root / f"out-{step}-{w}"
                shutil.rmtree(out, ignore_errors=True)
                try:
                    passes[w].append(_summary(n_fields, w, run_child(step, data, out, w, script)))
                finally:
                    shutil.rmtree(out, ignore_errors=True)
        for w in workers:
            best = min(passes[w], key=lambda r: r["wall_s"])
            result[step].append({**best, "walls_s": [r["wall_s"] for r in passes[w]]})
        by = {r["workers"]: r for r in result[step]}
        if 1 in by and 2 in by:
            steady = [by[w]["steady_fields_per_s"] for w in (1, 2)]
            result[f"{step}_speedup_1_to_2"] = {
                "wall": by[2]["fields_per_s"] / by[1]["fields_per_s"],
                "steady": steady[1] / steady[0] if all(steady) else None,
            }
    result["host_after"] = host()["loadavg"]
    return result


def render(results: list[dict]) -> str:
    """One table row per (step, fields, workers)."""
    rows = []
    for res in results:
        for step in ("segment", "crops"):
            for r in res[step]:
                speed = res.get(f"{step}_speedup_1_to_2", {}) if r["workers"] == 2 else {}
                rows.append(
                    [
                        step,
                        res["n_fields"],
                        r["workers"],
                        r["wall_s"],
                        r["fields_per_s"],
                        r["steady_fields_per_s"],
                        r["peak_pss_mb"],
                        speed.get("wall"),
                        speed.get("steady"),
                    ]
                )
    head = ["step", "fields", "workers", "wall s", "fields/s", "steady fields/s", "peak MB", "x (1->2)", "x steady"]
    return table(head, rows, markdown=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--fields", type=int, default=40, help="fields at the largest size (default 40)")
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="field counts to measure (default: --fields)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    p.add_argument("--root", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="passes to measure (default both)")
    p.add_argument("--repeats", type=int, default=1, help="passes per worker count, fastest kept (default 1)")
    p.add_argument("--quick", action="store_true", help="a few small synthetic fields (for the test suite)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "scale_cells.json")
    args = p.parse_args(argv)
    sizes = args.sizes or ([16] if args.quick else [args.fields])
    with tempfile.TemporaryDirectory(prefix="scale-cells-") as tmp:
        root = args.root or Path(tmp)
        results = [measure(root, n, args.workers, args.quick, tuple(args.steps), args.repeats) for n in sizes]
    report = {"results": results}
    print(render(results))
    write_json(args.out, report)
    print(f"-> {args.out}")
    return report


if __name__ == "__main__":
    main()
