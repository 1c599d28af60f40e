"""Fault injection: kill ``locbench train``, ``locbench sweep``, a sweep worker and ``locbench cache`` with SIGKILL,
SIGINT (Ctrl-C) or SIGTERM at random points, re-run the same command to completion, and count what was lost or
corrupted.

Each kill point starts a fresh command as a subprocess, waits until its work has begun (the run folder, the sweep
plan or the cache folder appears), sleeps a random delay drawn over the length of that work (measured on an
uninterrupted reference run) and sends SIGKILL; a third of the points instead kill the process in the middle of
writing a chosen file (a checkpoint, ``summary.json``, the cache's progress files), through the ``child`` mode
below. Then it checks the folder and re-runs the same command without a kill:

- files corrupted: a JSON, JSON-lines, YAML, ``.npz`` or ``.safetensors`` file in a run or cache folder (not a
  ``.*.tmp`` scratch file) that does not parse, or a checkpoint whose checksum fails without being skipped;
- runs lost: a run that was finished at the kill whose files changed (bytes or mtime) or vanished, or a re-run
  that could not finish;
- results differ: a re-run whose validation numbers (or cache pixels) differ from the uninterrupted reference;
- wrong states (SIGINT/SIGTERM only): a run left ``failed``, or ``running`` without ``interrupted by SIG...`` in
  ``status.json`` (the signal was not handled), or an exit code other than 128 + signum while work was under way.

Kill points take the targets in turn, and for each target SIGKILL, SIGINT and SIGTERM in turn.

Prints one line per kill point, then ``kill points tried / runs lost / files corrupted``, and writes
``benchmarks/out/fault_injection.json``.

    .venv/bin/python benchmarks/fault_injection.py --kills 64
    .venv/bin/python benchmarks/fault_injection.py --quick          # 3 kill points, for the test suite

``child`` mode runs one locbench command with a kill planted in it (used by the driver and by
tests/reliability)::

    python benchmarks/fault_injection.py child --die-on-write epoch-0002.safetensors -- train --data ...
    python benchmarks/fault_injection.py child --die-in locbench.engine.optim:clip_gradients@6 -- train ...

``--die-on-write NAME[@N]`` kills the process half-way through the N-th atomic write of a file named NAME (the
temporary file holds half the bytes; the final name is never touched); ``--die-in MODULE:FUNC[@N]`` kills it on
the N-th call of that module-level function. ``--signal INT|TERM`` sends that signal instead of SIGKILL.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TARGETS = ("train", "sweep", "worker", "cache")
#: The signals sent: kill -9, Ctrl-C and `kill` (the last two are handled: the run is left interrupted).
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
ORDER = ("KILL", "INT", "TERM")
#: Files to kill in the middle of writing (train) and the number of the write, chosen at random.
TRAIN_WRITES = (
    ("epoch-0002.safetensors", 1),
    ("epoch-0002.json", 1),
    ("best.safetensors", 2),
    ("val.npz", 1),
    ("summary.json", 1),
    ("thresholds.json", 1),
    ("status", 2),
)
TRAIN_CALLS = (
    "locbench.engine.optim:clip_gradients@2",
    "locbench.engine.optim:clip_gradients@6",
    "locbench.engine.fit:finish_run@1",
)
#: Cache builds of 40 fields run 3 chunks; _save_progress runs at the start, in a finally, and before `complete`.
CACHE_CALLS = (
    "locbench.data.cache:_fill_chunk@2",
    "locbench.data.cache:_fill_chunk@3",
    "locbench.data.cache:_save_progress@2",
    "locbench.data.cache:_save_progress@3",
)
CACHE_WRITES = (("meta.json", 1), ("done.npy", 2), ("bad.json", 3), ("complete", 1))
#: Run settings: a test_* timm model, 32 px, 3 epochs of 4 steps; a run takes about a second after start-up.
TINY = {
    "model.backbone": "test_resnet",
    "model.hidden": 32,
    "data.img_size": 32,
    "data.workers": 0,
    "train.epochs": 3,
    "train.batch_size": 8,
    "train.device": "cpu",
    "optim.lr": 0.001,
    "log.progress": "lines",
}


# ---------------------------------------------------------------------------------------------- child mode


def install_kill_hooks(die_on_write: str | None = None, die_in: str | None = None, sig: int = signal.SIGKILL) -> None:
    """Plant a signal (SIGKILL unless ``sig``) in this process: half-way through writing a file, or on a call of a
    function. SIGINT and SIGTERM are handled by locbench: the write or call is interrupted where it stands."""
    if die_on_write:
        import locbench.store.atomic as atomic

        name, _, nth = die_on_write.partition("@")
        count = {"n": 0}
        original = atomic.atomic_write

        def atomic_write(path, writer):
            if Path(path).name == name:
                count["n"] += 1
                if count["n"] == int(nth or 1):

                    def half(f):
                        buf = io.BytesIO()
                        writer(buf)
                        data = buf.getvalue()
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                        os.kill(os.getpid(), sig)

                    return original(path, half)
            return original(path, writer)

        # atomic_write_bytes/text/json look atomic_write up at call time: every atomic write goes through this
        atomic.atomic_write = atomic_write
    if die_in:
        target, _, nth = die_in.partition("@")
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        original_fn = getattr(module, func_name)
        calls = {"n": 0}

        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == int(nth or 1):
                os.kill(os.getpid(), sig)
            return original_fn(*args, **kwargs)

        setattr(module, func_name, wrapper)


def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="fault_injection.py child")
    p.add_argument("--die-on-write", default=None)
    p.add_argument("--die-in", default=None)
    p.add_argument("--signal", default="KILL", choices=sorted(SIGNALS), help="the signal planted (default KILL)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    install_kill_hooks(a.die_on_write, a.die_in, SIGNALS[a.signal])
    from locbench.cli import main

    return main(args)


def child_command(
    locbench_args: list[str], *, die_on_write: str | None = None, die_in: str | None = None, sig: str = "KILL"
) -> list:
    """The argv of a child process running ``locbench ARGS`` with the given kill (signal ``sig``) planted."""
    cmd = [PY, str(Path(__file__).resolve()), "child"]
    if sig != "KILL":
        cmd += ["--signal", sig]
    if die_on_write:
        cmd += ["--die-on-write", die_on_write]
    if die_in:
        cmd += ["--die-in", die_in]
    return cmd + ["--", "-q", *locbench_args]


def child_env() -> dict[str, str]:
    # one intra-op thread: the same numbers in every process, and no spinning threads on a shared CPU
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


# ---------------------------------------------------------------------------------------------- checks


def corrupt_files(folder: Path) -> list[str]:
    """Files under ``folder`` that fail to parse, and checkpoints whose checksum fails (scratch .tmp files aside).

    A checkpoint with a bad checksum counts only if ``latest_good`` would not skip it (it is never used then).
    """
    import numpy as np
    import yaml
    from safetensors import safe_open

    bad = []
    if not folder.exists():
        return bad
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or ".attempts" in p.parts or ".submitit" in p.parts:
            continue
        try:
            if p.suffix == ".json" or p.name == "complete":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                from locbench.store.atomic import read_jsonl

                read_jsonl(p)  # a torn last line is tolerated by design; a torn middle line raises
            elif p.suffix == ".yaml":
                yaml.safe_load(p.read_text())
            elif p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    [z[k] for k in z.files]
            elif p.suffix == ".npy" and p.name != "pixels.npy":
                np.load(p, allow_pickle=False)
            elif p.suffix == ".safetensors":
                with safe_open(str(p), "np") as f:
                    [f.get_tensor(k) for k in f.keys()]
            elif p.name == "status":
                if p.read_text().strip() not in ("running", "done", "failed", "diverged"):
                    raise ValueError(f"status {p.read_text()!r}")
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile, yaml.YAMLError, Exception) as e:
            bad.append(f"{p.relative_to(folder)}: {type(e).__name__}: {str(e)[:80]}")
    for ckpt_dir in folder.rglob("checkpoints"):
        bad += _bad_checkpoints(ckpt_dir, folder)
    return bad


def _bad_checkpoints(ckpt_dir: Path, root: Path) -> list[str]:
    from locbench.engine import checkpoint as ckpt

    bad = []
    newest_good = ckpt.latest_good(ckpt_dir)
    for _, stem in ckpt.epoch_checkpoints(ckpt_dir):
        meta = json.loads(stem.with_suffix(".json").read_text())
        blob = stem.with_suffix(".safetensors")
        ok = blob.exists() and hashlib.sha256(blob.read_bytes()).hexdigest() == meta.get("sha256")
        skipped = newest_good is None or stem != newest_good[0]
        if not ok and not skipped:
            bad.append(f"{stem.relative_to(root)}: checksum fails but it would be used")
    best = ckpt_dir / "best.json"
    if best.exists() and ckpt.verify(ckpt_dir / "best") is None:
        bad.append(f"{(ckpt_dir / 'best').relative_to(root)}: best checkpoint fails its checksum")
    return bad


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file of a run folder."""
    return {
        str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def result_numbers(run_dir: Path) -> dict[str, Any] | None:
    """What must not depend on interruptions: validation metrics, best epoch, thresholds, stored probabilities."""
    import numpy as np

    try:
        s = json.loads((run_dir / "summary.json").read_text())
        th = json.loads((run_dir / "thresholds.json").read_text())
        with np.load(run_dir / "predictions" / "val.npz") as z:
            probs = hashlib.sha256(np.ascontiguousarray(z["probs"]).tobytes()).hexdigest()
    except (OSError, ValueError, KeyError):
        return None
    history = [
        {k: v for k, v in r.items() if not k.startswith(("time/", "train/img"))}
        for r in _read_lines(run_dir / "metrics.jsonl")
    ]
    return {"val": s["val"], "best_epoch": s["best_epoch"], "thresholds": th, "probs": probs, "history": history}


def _read_lines(path: Path) -> list[dict]:
    from locbench.store.atomic import read_jsonl

    return read_jsonl(path)


def _reason(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "status.json").read_text()).get("reason", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def status_of(run_dir: Path) -> str | None:
    try:
        return (run_dir / "status").read_text().strip() or None
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------- driver


class Bench:
    def __init__(self, work: Path, seed: int, log) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.log = log
        self.data = work / "data"
        self.cache_dir = work / "cache"
        self.ref: dict[str, Any] = {}
        self.window: dict[str, float] = {}

    # -- commands

    def _sets(self, extra: dict[str, Any] | None = None) -> list[str]:
        out = []
        for k, v in {**TINY, "data.cache_dir": str(self.cache_dir), **(extra or {})}.items():
            out += ["--set", f"{k}={v}"]
        return out

    def train_args(self, out: Path, resume: bool = False) -> list[str]:
        return ["train", "--data", str(self.data), "--out", str(out), *self._sets(), *(["--resume"] if resume else [])]

    def sweep_args(self, out: Path, workers: int = 1) -> list[str]:
        return ["sweep", str(self.work / "sweep.yaml"), "--out", str(out), "--workers", str(workers)]

    def cache_args(self, cache_dir: Path) -> list[str]:
        return ["cache", "--data", str(self.data), "--img-size", "48", "--channels", "rgby", "--workers", "0",
                "--cache-dir", str(cache_dir)]  # fmt: skip

    def run(self, args: list[str], **kill) -> subprocess.CompletedProcess:
        return subprocess.run(child_command(args, **kill), env=child_env(), capture_output=True, text=True)

    # -- setup

    def setup(self) -> None:
        from locbench.data.synth import synthesize

        synthesize(self.data, images=40, size=64, seed=0, cells_per_field=(3, 6))
        sweep = {
            "name": "fi",
            "config": {k.split(".")[0]: {} for k in TINY},
            "grid": {"loss.name": ["bce", "focal"]},
            "seeds": [0],
        }
        for k, v in {**TINY, "data.path": str(self.data), "data.cache_dir": str(self.cache_dir)}.items():
            section, key = k.split(".")
            sweep["config"][section][key] = v
        sweep["config"]["train"]["epochs"] = 2
        import yaml

        (self.work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        # references: uninterrupted runs, timed from the moment their work starts
        t = self._timed(self.train_args(self.work / "ref-train"), self.work / "ref-train" / "status")
        self.window["train"] = t
        self.ref["train"] = result_numbers(self.work / "ref-train")
        t = self._timed(self.sweep_args(self.work / "ref-sweep"), self.work / "ref-sweep" / "plan.json")
        self.window["sweep"] = t
        self.window["sweep run"] = t / 2  # two runs (grid points), one after the other
        self.ref["sweep"] = {p.name: result_numbers(p) for p in (self.work / "ref-sweep").iterdir() if p.is_dir()}
        self.ref["sweep"] = {k: v for k, v in self.ref["sweep"].items() if v is not None}
        t = self._timed(self.cache_args(self.work / "ref-cache"), self.work / "ref-cache")
        self.window["cache"] = t
        self.ref["cache"] = _cache_digest(self.work / "ref-cache")
        self.log(f"reference runs: work windows {', '.join(f'{k} {v:.1f}s' for k, v in self.window.items())}")

    def _timed(self, args: list[str], marker: Path) -> float:
        proc = subprocess.Popen(child_command(args), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = _wait_for(marker, proc)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"reference run failed: {' '.join(args)}\n{err.decode()[-2000:]}")
        return max(0.2, time.monotonic() - (started or time.monotonic()))

    # -- one kill point

    def kill_point(self, k: int, target: str, sig: str = "KILL") -> dict[str, Any]:
        folder = self.work / f"k{k:03d}-{target}-{sig}"
        shutil.rmtree(folder, ignore_errors=True)
        pinpoint = target in ("train", "cache") and self.rng.random() < 1 / 3
        rec: dict[str, Any] = {"k": k, "target": target, "signal": sig, "lost": 0, "corrupted": [], "differs": False}
        rec["wrong"] = []
        signum = SIGNALS[sig]
        if target == "train":
            args, marker, rerun = self.train_args(folder), folder / "status", self.train_args(folder, resume=True)
        elif target in ("sweep", "worker"):
            args = self.sweep_args(folder, workers=2 if target == "worker" else 1)
            marker, rerun = folder / "plan.json", args
        else:
            args, marker, rerun = self.cache_args(folder), folder, self.cache_args(folder)
        kill: dict[str, str] = {}
        if pinpoint and target == "train":
            if self.rng.random() < 0.7:
                name, nth = self.rng.choice(TRAIN_WRITES)
                kill = {"die_on_write": f"{name}@{nth}"}
            else:
                kill = {"die_in": self.rng.choice(TRAIN_CALLS)}
        elif pinpoint and self.rng.random() < 0.5:
            kill = {"die_in": self.rng.choice(CACHE_CALLS)}
        elif pinpoint:
            name, nth = self.rng.choice(CACHE_WRITES)
            kill = {"die_on_write": f"{name}@{nth}"}
        proc = subprocess.Popen(child_command(args, **kill, sig=sig), env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        if kill:
            rec["point"] = next(iter(kill.values()))
            proc.communicate()
        else:
            started = _wait_for(marker, proc)
            if target == "worker":
                # a random moment within one sweep run's training, from the moment a worker holds its run folder
                victim = _running_worker(folder, timeout=600, proc=proc)
                delay = self.rng.uniform(0, 0.9 * self.window["sweep run"])
                rec["point"] = f"worker +{delay:.2f}s"
                time.sleep(delay)
                if victim is not None and not _alive(victim):  # that run finished first: take the next one
                    victim = _running_worker(folder, timeout=600, proc=proc)
                    rec["point"] += " (next worker)"
                try:
                    if victim is not None:
                        os.kill(victim, signum)
                except ProcessLookupError:  # it ended in between
                    victim = None
                if victim is None:
                    rec["point"] += " (no worker running)"
                proc.communicate()
                rec["killed"] = victim is not None
            else:
                delay = self.rng.uniform(0, 0.9 * self.window[target])
                rec["point"] = f"+{delay:.2f}s"
                if started is not None:
                    time.sleep(max(0.0, delay - (time.monotonic() - started)))
                if proc.poll() is None:
                    proc.send_signal(signum)
                else:
                    rec["point"] += " (finished first)"
                    if started is not None:  # the machine got faster: draw later kills from what it takes now
                        self.window[target] = max(0.2, time.monotonic() - started)
                proc.communicate()
        runs = [] if target == "cache" or not folder.exists() else [folder] if target == "train" else [
            p for p in folder.iterdir() if p.is_dir() and (p / "sweep_point.json").exists()
        ]  # fmt: skip
        if target != "worker":
            # a handled signal ends the command with 128 + signum (130 SIGINT, 143 SIGTERM) while it works; before
            # the command starts (imports) or once it has finished (interpreter exit) the default action applies
            expect = -signum if sig == "KILL" else 128 + signum
            rec["killed"] = proc.returncode == expect
            unfinished = [r.name for r in runs if status_of(r) not in (None, "done")]
            if proc.returncode == -signum and sig != "KILL" and unfinished:
                rec["wrong"].append(f"exit {proc.returncode} with {unfinished} unfinished: the signal was not handled")
            elif proc.returncode not in (expect, -signum, 0):
                rec["wrong"].append(f"exit {proc.returncode} (expected {expect})")
        if sig != "KILL":
            # SIGINT/SIGTERM: never `failed`; the run stopped is left interrupted (status running + the signal named)
            for r in runs:
                reason = _reason(r)
                if status_of(r) not in (None, "running", "done"):
                    rec["wrong"].append(f"{r.name}: status {status_of(r)}")
                elif status_of(r) == "running" and not reason.startswith("interrupted by SIG"):
                    rec["wrong"].append(f"{r.name}: running, reason {reason!r}: the signal was not handled")
        # state at the kill
        rec["corrupted"] += corrupt_files(folder)
        finished = {}
        if target in ("sweep", "worker") and folder.exists():
            finished = {p.name: snapshot(p) for p in folder.iterdir() if p.is_dir() and status_of(p) == "done"}
        if target == "cache":
            rec["half_used"] = _half_cache_used(folder)
        # re-run the same command to completion
        res = self.run(rerun)
        ok = res.returncode == 0
        if not ok:
            rec["lost"] += 1
            rec["error"] = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        rec["corrupted"] += corrupt_files(folder)
        if target == "train" and ok:
            rec["differs"] = result_numbers(folder) != self.ref["train"]
        elif target in ("sweep", "worker") and ok:
            for name, before in finished.items():
                if snapshot(folder / name) != before:
                    rec["lost"] += 1
                    rec.setdefault("changed", []).append(name)
            got = {p.name: result_numbers(p) for p in folder.iterdir() if p.is_dir() and p.name in self.ref["sweep"]}
            rec["differs"] = got != self.ref["sweep"]
            rec["finished_at_kill"] = len(finished)
        elif target == "cache" and ok:
            rec["differs"] = _cache_digest(folder) != self.ref["cache"] or rec.get("half_used", False)
        return rec


def _cache_digest(cache_root: Path) -> str | None:
    import numpy as np

    folders = [p for p in cache_root.iterdir() if (p / "complete").is_file()] if cache_root.exists() else []
    if len(folders) != 1:
        return None
    return hashlib.sha256(np.ascontiguousarray(np.load(folders[0] / "pixels.npy")).tobytes()).hexdigest()


def _half_cache_used(cache_root: Path) -> bool:
    """True if a cache folder is marked complete although rows are missing (a half-built cache passed as done)."""
    import numpy as np

    for p in cache_root.iterdir() if cache_root.exists() else []:
        if (p / "complete").is_file():
            done = np.load(p / "done.npy")
            bad = json.loads((p / "bad.json").read_text())
            if int(done.sum()) + len(bad) != len(done):
                return True
    return False


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 300.0) -> float | None:
    """Wait until ``marker`` exists (the command's work has begun); None if the process ended first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if marker.exists():
            return time.monotonic()
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_worker(sweep_dir: Path, timeout: float, proc: subprocess.Popen | None = None) -> int | None:
    """The pid of a sweep worker training a sweep run right now (from the run folder's lock file); None if none
    starts within ``timeout`` seconds or the sweep process ``proc`` ends first."""
    from locbench.store.lock import FileLock

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and (proc is None or proc.poll() is None):
        for lock in sweep_dir.glob("*/.lock"):
            if FileLock(lock).held_elsewhere():
                try:
                    return int(lock.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
        time.sleep(0.05)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=64, help="kill points (default 64: kill -9, SIGINT, SIGTERM)")
    p.add_argument(
        "--quick", action="store_true", help="3 kill points (train SIGINT, sweep SIGTERM, cache kill -9), for tests"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "out" / "fault_injection.json"))
    a = p.parse_args(argv)
    if a.quick:
        points = [("train", "INT"), ("sweep", "TERM"), ("cache", "KILL")]
    else:  # every target in turn, and for each target kill -9, SIGINT and SIGTERM in turn
        points = [(TARGETS[k % len(TARGETS)], ORDER[k // len(TARGETS) % len(ORDER)]) for k in range(a.kills)]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="locbench-fi-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)

    bench = Bench(work, a.seed, log)
    try:
        bench.setup()
        records = []
        for k, (target, sig) in enumerate(points):
            rec = bench.kill_point(k, target, sig)
            records.append(rec)
            log(
                f"[{k + 1:>3}/{len(points)}] {target:<6} {sig:<4} {rec['point']:<38} killed={rec['killed']!s:<5} "
                f"lost={rec['lost']} corrupted={len(rec['corrupted'])} differs={rec['differs']} "
                f"wrong={len(rec['wrong'])}"
                + (
                    f"  {rec.get('error') or ''}{rec['corrupted'][:2] or ''}{rec['wrong'][:2] or ''}"
                    if rec["lost"] or rec["corrupted"] or rec["wrong"]
                    else ""
                )
            )
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    lost = sum(r["lost"] for r in records)
    corrupted = sum(len(r["corrupted"]) for r in records)
    differs = sum(bool(r["differs"]) for r in records)
    wrong = sum(len(r["wrong"]) for r in records)
    summary = {
        "kill_points": len(records),
        "runs_lost": lost,
        "files_corrupted": corrupted,
        "results_differ": differs,
        "wrong_states": wrong,
        "killed_mid_work": sum(bool(r["killed"]) for r in records),
        "by_target": {t: sum(r["target"] == t for r in records) for t in TARGETS},
        "by_signal": {s: sum(r["signal"] == s for r in records) for s in ORDER},
        "table": {
            f"{t} {s}": {
                "points": sum(r["target"] == t and r["signal"] == s for r in records),
                "killed_mid_work": sum(bool(r["killed"]) for r in records if r["target"] == t and r["signal"] == s),
            }
            for t in TARGETS
            for s in ORDER
        },
        "seconds": round(time.monotonic() - t0, 1),
        "seed": a.seed,
        "records": records,
    }
    if not a.quick:
        from locbench.store.atomic import atomic_write_json

        atomic_write_json(a.json, summary)
    print(f"kill points tried / runs lost / files corrupted: {len(records)} / {lost} / {corrupted}")
    print(f"re-runs whose results differ from the uninterrupted reference: {differs}")
    print(f"wrong exit codes or states after SIGINT/SIGTERM (e.g. a run marked failed): {wrong}")
    return 0 if lost == 0 and corrupted == 0 and differs == 0 and wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
