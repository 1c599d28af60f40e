"""`locbench segment` killed with SIGKILL in the middle of a large dataset, then the same command again.

Issue 18 asks that a kill -9 in the middle of ``segment`` over 1,000 fields, followed by the same command, gives
the output of an uninterrupted run and does not redo finished work. On a farm of real full-size fields
(``_common.real_farm``: the real 2021 fields of 2048-3072 px hard-linked under new ids), this script:

1. runs ``locbench segment --data FARM --out full --workers W`` to the end (the reference);
2. runs the same command into ``killed/``, and kills its process group (the command and its worker processes)
   with SIGKILL once a third of the masks are written;
3. notes every mask file there (inode and modification time), and runs the same command again;
4. checks that every mask equals the reference byte for byte, counts the masks written before the kill that were
   not written again (same inode and time), and records how many fields the second run said it reused. A mask
   on disk whose field the command had not yet logged (at most the fields in flight, about two per worker) is
   made again: it is not known to be finished.

Wall seconds of the three commands are recorded as measured (start-up included). Writes
``benchmarks/out/segment_resume.json``.

    .venv/bin/python benchmarks/segment_resume.py                    # 1,000 fields, 2 workers
    .venv/bin/python benchmarks/segment_resume.py --fields 40 --workers 2
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts run from anywhere import their helpers

from _common import OUT_DIR, host, real_farm, write_json  # noqa: E402
from bench_scale import child_env, locbench_cmd, measured  # noqa: E402


def masks_in(folder: Path) -> dict[str, tuple[int, int]]:
    """Mask file name -> (inode, modification time in ns) of every finished mask in ``folder``."""
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.png")}


def said_reused(log_tail: list[str], fields: int) -> int | None:
    """The fields a segment run said it reused: its ``K reused from`` line, or all but the ``segment: N fields in``
    of its last line."""
    for pattern, count in ((r"(\d+) reused from", lambda k: k), (r"segment: (\d+) fields in", lambda n: fields - n)):
        found = [int(m.group(1)) for line in log_tail if (m := re.search(pattern, line))]
        if found:
            return count(found[-1])
    return None


def kill_when(cmd: list[str], folder: Path, *, at: int, env: dict[str, str]) -> int:
    """Run ``cmd`` and kill its whole process group with SIGKILL once ``folder`` holds ``at`` masks; the number
    of masks there after the kill. Raises when the command finished first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        if len(masks_in(folder)) >= at:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"segment ended (exit {proc.returncode}) before it could be killed at {at} masks")
    return len(masks_in(folder))


def run(fields: int, workers: int, work: Path) -> dict:
    farm = real_farm(work / "farm", total=fields, masks=False)
    env = child_env(1)
    cmd = lambda out: locbench_cmd("segment", "--data", str(farm), "--out", str(out), "--workers", str(workers))  # noqa: E731
    full, killed = work / "full", work / "killed"
    print(f"segment of {fields} real fields, {workers} workers: uninterrupted ...", flush=True)
    reference = measured(cmd(full), env)
    print(f"  {reference['wall_s']:.0f} s; now killed at a third ...", flush=True)
    t0 = time.perf_counter()
    kept = kill_when(cmd(killed), killed, at=max(1, fields // 3), env=env)
    before_kill_s = time.perf_counter() - t0
    before = masks_in(killed)
    print(f"  killed with {kept} masks written after {before_kill_s:.0f} s; the same command again ...", flush=True)
    resumed = measured(cmd(killed), env)
    after = masks_in(killed)
    names = sorted(masks_in(full))
    same = sorted(after) == names and all(filecmp.cmp(full / n, killed / n, shallow=False) for n in names)
    untouched = sum(after.get(n) == stamp for n, stamp in before.items())
    result = {
        "host": host(),
        "fields": fields,
        "workers": workers,
        "uninterrupted_s": reference["wall_s"],
        "killed_after_s": round(before_kill_s, 2),
        "masks_at_kill": kept,
        "resumed_s": resumed["wall_s"],
        "resumed_said_reused": said_reused(resumed["log_tail"], fields),
        "masks_kept_untouched": untouched,
        "masks": len(names),
        "identical_to_uninterrupted": same,
        "resumed_log_tail": resumed.get("log_tail"),
    }
    verdict = "identical" if same else "DIFFERENT"
    print(
        f"resumed in {resumed['wall_s']:.0f} s (uninterrupted {reference['wall_s']:.0f} s), saying it reused "
        f"{result['resumed_said_reused']}; of the {kept} masks on disk at the kill, {untouched} were left untouched "
        f"(a mask whose field the command had not yet logged counts as in flight and is made again); all "
        f"{len(names)} masks {verdict} to the uninterrupted run"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "segment_resume.json")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="segment_resume_"))
    try:
        result = run(args.fields, args.workers, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, result)
    in_flight = 2 * args.workers  # at most two fields a worker are queued at a time
    ok = result["identical_to_uninterrupted"] and result["masks_kept_untouched"] >= result["masks_at_kill"] - in_flight
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
