"""Dataset scale: `locbench cache` and `locbench predict` over thousands of real full-size fields, measured against
the bare model and the bare decoder on the same machine in the same run.

The fields are the real Kaggle-2021 ones (2048-3072 px, four stains, ``../shared/data/hpa-real/kaggle2021``)
hard-linked under new ids (``_common.real_farm``): decoding costs the same per file whether or not files share
their bytes. For each dataset size (``--fields``) and each loader worker count (``--workers``):

- ``cache``: ``locbench cache`` (rgby, ``--img-size``) into an empty cache folder, at the largest size only;
- ``predict``: ``locbench predict`` of a ``--backbone`` run at ``--img-size`` (trained for one step on 8 of the
  fields: the weights do not change the time), ``--device cpu``.

Each command runs as its own process, timed from start to exit (start-up included); its peak memory is the largest
sum, over the process and its children (loader workers), of resident memory (RSS, shared pages counted in every
process) and of proportional memory (PSS, shared pages split between them), sampled from /proc every 0.1 s. CPU
seconds are the children's user + system time (``getrusage``). ``loop s`` is predict's own streaming loop (from its
last progress line): the wall time without start-up (imports, reading the run, building the model).

In this process, on the same fields: ``bare decode`` is the project's image reader alone (``read_field_raw``:
decode the four stains and resize to ``--img-size``, one field after another, one process), and ``bare forward``
the same backbone (``pretrained=False``, 4 stains in, 19 classes) on random tensors of the predict batch and size,
``ceil(N / batch)`` batches, torch with ``--threads`` threads (the predict processes get the same).

Target (issue 18): predict wall <= 1.1 x (bare forward + bare decode) at >= 2,000 fields; peak memory flat from
500 to 2,000 fields. When ``benchmarks/scale_cells.py`` exists, its ``measure()`` (segmentation and cell crops)
runs on the same fields in the same run.

    .venv/bin/python benchmarks/bench_scale.py                          # 500 and 2,000 fields, 1 and 2 workers
    .venv/bin/python benchmarks/bench_scale.py --fields 100,300         # a reduced run
    .venv/bin/python benchmarks/bench_scale.py --quick                  # a few fields, for the test suite
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, REAL, REPO, host, load_module, real_farm, table, write_json  # noqa: E402

#: Classes of the 2021 scheme (the farm's labels); stains read by cache and predict.
CLASSES = 19
STAINS = "rgby"
#: Fields the predict run is trained on (one step; its weights do not change the time).
TRAIN_FIELDS = 8


# ------------------------------------------------------------------------------------------- memory of a process tree


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def rss_pss_kb(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of one process in kB (0, 0 when it is gone)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


class PeakMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process tree every ``every`` seconds until :meth:`stop`."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.rss_kb = self.pss_kb = 0
        self.most_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = tree(self.pid)
            sizes = [rss_pss_kb(p) for p in pids]
            self.rss_kb = max(self.rss_kb, sum(s[0] for s in sizes))
            self.pss_kb = max(self.pss_kb, sum(s[1] for s in sizes))
            self.most_processes = max(self.most_processes, len(pids))
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; its wall seconds, children's CPU seconds and peak summed RSS / PSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = PeakMemory(proc.pid)
    mem.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    mem.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    resumed = re.search(r"(\d+) of \d+ \w+ already done", err)
    return {
        "resumed_from": int(resumed.group(1)) if resumed else 0,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": mem.rss_kb / 1024,
        "peak_pss_mb": mem.pss_kb / 1024,
        "processes": mem.most_processes,
        "log_tail": err.strip().splitlines()[-3:],
    }


def kill_and_resume(cmd: list[str], out: Path, *, n: int, env: dict[str, str]) -> dict:
    """``cmd`` (a predict writing ``out``) killed with SIGKILL, with its loader workers, once a third of its ``n``
    rows (at least one batch) are kept in its partial file; then the same command again: how many rows it found
    done, and its record."""
    from locbench.store.partial import HEADER_BYTES, partial_path

    partial = partial_path(out)
    out.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kept = 0
    while proc.poll() is None:
        kept = (partial.stat().st_size - HEADER_BYTES) // (4 * CLASSES) if partial.exists() else 0
        if kept >= max(1, n // 3):
            os.killpg(proc.pid, signal.SIGKILL)  # the session this Popen started: predict and its loader workers
            break
        time.sleep(0.05)
    proc.wait()
    if out.exists():
        raise RuntimeError(f"predict finished before it could be killed ({kept} of {n} rows kept)")
    return {"killed_with_rows": kept, **measured(cmd, env)}


def loop_seconds(record: dict, n: int) -> float | None:
    """The streaming loop's own seconds (start-up left out), from predict's last progress line
    (``N fields in 3m20s (12.3 fields/s)``); None when it is not there."""
    for line in reversed(record["log_tail"]):
        m = re.search(r"(\d+) fields in \S+ \(([\d.]+) fields/s\)", line)
        if m and int(m.group(1)) == n and float(m.group(2)) > 0:
            return n / float(m.group(2))
    return None


# ----------------------------------------------------------------------------------------------------- the parts


def locbench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "locbench", *args]


def child_env(threads: int) -> dict[str, str]:
    return dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0"
    )


def make_run(work: Path, *, backbone: str, size: int, batch: int, env: dict[str, str]) -> Path:
    """A finished run of ``backbone`` at ``size`` px whose predict batch is ``batch`` (twice the training batch)."""
    data = real_farm(work / "farm_train", total=TRAIN_FIELDS, masks=False)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    args = ["train", "--data", str(data), "--out", str(run), "--backbone", backbone, "--img-size", str(size)]
    args += ["--channels", STAINS, "--epochs", "1", "--batch-size", str(max(1, batch // 2)), "--device", "cpu"]
    args += ["--workers", "0", "--set", "data.val_frac=0.5", "--set", "data.test_frac=0"]
    args += ["--set", "train.max_steps=1"]
    args += ["--set", f"data.cache_dir={work / 'cache_train'}", "--set", "log.progress=lines"]
    res = subprocess.run(locbench_cmd("-q", *args), env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"training the run to predict with failed:\n{res.stderr[-3000:]}")
    return run


def bare_decode(data: Path, *, size: int) -> dict:
    """The project's reader alone: every field of ``data`` decoded and resized, one after another."""
    from locbench.data import images as imio
    from locbench.data.channels import resolve_channels
    from locbench.data.formats import load_table

    tbl = load_table(data)
    channels = resolve_channels(STAINS)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(tbl)):
        imio.read_field_raw(tbl.sources(i), channels, size, resize_policy="pad", refuse_upscale=True)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "fields": len(tbl)}


def bare_forward(*, backbone: str, n: int, batch: int, size: int) -> dict:
    """``backbone`` alone on random [0, 1] tensors: ``ceil(n / batch)`` batches (the last one short), no grad."""
    import timm
    import torch

    model = timm.create_model(backbone, pretrained=False, num_classes=CLASSES, in_chans=len(STAINS)).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, len(STAINS), size, size, generator=gen)
    with torch.no_grad():
        model(x[: min(batch, 2)])  # the first call allocates
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(math.ceil(n / batch)):
            torch.sigmoid(model(x[: min(batch, n - k * batch)]))
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "fields": n}


def cells_section(work: Path, sizes: list[int], workers: list[int], quick: bool) -> dict | None:
    """Helper E's segmentation and crop measurements (``benchmarks/scale_cells.py``: ``measure(root, n_fields,
    workers, quick)`` at each size, in its own working folder), when the file exists; its table is printed."""
    path = Path(__file__).resolve().parent / "scale_cells.py"
    if not path.is_file():
        print("\nsegment and cell crops: skipped (benchmarks/scale_cells.py is not there)")
        return None
    cells = load_module(path, "scale_cells")
    results = [cells.measure(work / "cells", n, workers, quick) for n in sizes]
    if hasattr(cells, "render"):
        print("\nsegment and cell crops (benchmarks/scale_cells.py)\n")
        print(cells.render(results))
    return {"results": results}


# --------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--fields", default="500,2000", help="dataset sizes, comma-separated (default 500,2000)")
    p.add_argument("--workers", default="1,2", help="loader / cache worker counts (default 1,2)")
    p.add_argument(
        "--cell-fields",
        default="100,400",
        help="dataset sizes for segment and cell crops (default 100,400: watershed costs ~0.4 s a field, so 2,000 "
        "would take most of an hour at 1 worker)",
    )
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64, help="predict batch (the run trains at half of it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, here and in the predict processes")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "bench_scale.json")
    p.add_argument("--quick", action="store_true", help="a few fields at 64 px: seconds, for the test suite")
    args = p.parse_args(argv)
    if args.quick:  # every code path once: two sizes (the memory ratio), one worker count
        args.fields, args.workers, args.img_size, args.batch = "4,12", "2", 64, 4
    sizes = sorted({int(v) for v in args.fields.split(",")})
    workers = sorted({int(v) for v in args.workers.split(",")})
    if not (REAL / "kaggle2021" / "train.csv").is_file():
        print(f"no real fields at {REAL / 'kaggle2021'}: nothing to measure")
        return 1
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    env = child_env(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale."))
    try:
        result = run_all(work, sizes=sizes, workers=workers, args=args, env=env)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, result)
    print(f"\nwritten to {args.out}")
    return 0


def run_all(work: Path, *, sizes: list[int], workers: list[int], args, env: dict[str, str]) -> dict:
    n_max = sizes[-1]
    farms = {n: real_farm(work / f"farm_{n}", total=n) for n in sizes}
    size, batch = args.img_size, args.batch
    print(
        f"{args.backbone} at {size} px, batch {batch}, {args.threads} torch thread(s); fields {sizes}; "
        f"load {host()['loadavg']}"
    )
    run = make_run(work, backbone=args.backbone, size=size, batch=batch, env=env)
    rows, records = [], []

    # the bare parts first, then each command (the page cache holds the files for all of them alike: the farm is
    # a few distinct files hard-linked many times)
    decode = bare_decode(farms[n_max], size=size)
    forward = bare_forward(backbone=args.backbone, n=n_max, batch=batch, size=size)
    for name, r in (("bare decode (1 process)", decode), ("bare forward", forward)):
        rows.append([name, "-", n_max, r["wall_s"], n_max / r["wall_s"], None, r["cpu_s"], None, None])

    for w in workers:
        cache_dir = work / f"cache_w{w}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cmd = ["cache", "--data", str(farms[n_max]), "--img-size", str(size), "--channels", STAINS]
        r = measured(locbench_cmd(*cmd, "--workers", str(w), "--cache-dir", str(cache_dir)), env)
        records.append({"step": "cache", "workers": w, "fields": n_max, **r})
        shutil.rmtree(cache_dir, ignore_errors=True)
    for n in sizes:
        for w in workers:
            out = work / f"pred_{n}_w{w}.csv"
            out.unlink(missing_ok=True)
            cmd = ["predict", str(run), "--data", str(farms[n]), "--out", str(out), "--device", "cpu"]
            r = measured(locbench_cmd(*cmd, "--workers", str(w)), env)
            lines = out.read_text().count("\n") - 1
            if lines != n:
                raise RuntimeError(f"predict wrote {lines} rows for {n} fields")
            records.append({"step": "predict", "workers": w, "fields": n, **r, "loop_s": loop_seconds(r, n)})
    # kill -9 a third of the way through the largest predict, then the same command: it must continue, not start
    # over, and write the bytes of the uninterrupted run
    w = workers[-1]
    out = work / f"pred_{n_max}_w{w}_killed.csv"
    cmd = ["predict", str(run), "--data", str(farms[n_max]), "--out", str(out), "--device", "cpu", "--workers", str(w)]
    resume = kill_and_resume(locbench_cmd(*cmd), out, n=n_max, env=env)
    resume["same_bytes"] = out.read_bytes() == (work / f"pred_{n_max}_w{w}.csv").read_bytes()
    resume["loop_s"] = loop_seconds(resume, n_max - resume["resumed_from"])
    print(
        f"predict killed (SIGKILL) with {resume['killed_with_rows']} of {n_max} rows kept; the same command found "
        f"{resume['resumed_from']} done, decoded the rest and wrote "
        f"{'the same bytes as' if resume['same_bytes'] else 'OTHER BYTES THAN'} the uninterrupted run"
    )
    for r in records:
        rows.append(
            [r["step"], r["workers"], r["fields"], r["wall_s"], r["fields"] / r["wall_s"], r.get("loop_s"), r["cpu_s"]]
            + [r["peak_rss_mb"], r["peak_pss_mb"]]
        )
    headers = ["step", "workers", "fields", "wall s", "fields/s", "loop s", "CPU s", "peak RSS MB", "peak PSS MB"]
    print()
    print(table(headers, rows))

    bare = forward["wall_s"] + decode["wall_s"]
    targets = {}
    for w in workers:
        pred = {r["fields"]: r for r in records if r["step"] == "predict" and r["workers"] == w}
        loop = pred[n_max]["loop_s"]
        targets[f"predict_w{w}"] = {
            "wall_over_bare_sum": pred[n_max]["wall_s"] / bare,
            "loop_over_bare_sum": loop / bare if loop else None,
            "peak_pss_ratio_largest_over_smallest": pred[n_max]["peak_pss_mb"] / pred[sizes[0]]["peak_pss_mb"],
            "peak_rss_ratio_largest_over_smallest": pred[n_max]["peak_rss_mb"] / pred[sizes[0]]["peak_rss_mb"],
        }
        t = targets[f"predict_w{w}"]
        no_start = "-" if loop is None else f"{t['loop_over_bare_sum']:.3f}"
        pss, rss = t["peak_pss_ratio_largest_over_smallest"], t["peak_rss_ratio_largest_over_smallest"]
        print(
            f"predict, {w} worker(s), {n_max} fields: wall / (bare forward + bare decode) = "
            f"{t['wall_over_bare_sum']:.3f} (target <= 1.1; without start-up {no_start}); "
            f"peak memory {n_max} / {sizes[0]} fields: PSS x{pss:.2f}, RSS x{rss:.2f}"
        )
    print()
    print(table(headers, rows, markdown=True))
    cell_sizes = sizes if args.quick else sorted({int(v) for v in args.cell_fields.split(",")})
    cells = cells_section(work, cell_sizes, workers, args.quick)
    return {
        "host": host(),
        "settings": {
            "backbone": args.backbone,
            "img_size": size,
            "batch": batch,
            "threads": args.threads,
            "stains": STAINS,
            "fields": sizes,
            "workers": workers,
            "quick": args.quick,
        },
        "bare_decode": decode,
        "bare_forward": forward,
        "commands": records,
        "targets": targets,
        "kill_resume": {"workers": w, "fields": n_max, **resume},
        "cells": cells,
    }


if __name__ == "__main__":
    raise SystemExit(main())
