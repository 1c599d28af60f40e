"""Train every run of a sweep (a grid point and a seed) into DIR/<run_id>/, resumably, locally or through submitit
(SLURM or local).

Re-running the same command finishes what is left: finished runs are not touched, interrupted ones resume from
their last good checkpoint, failed and diverged ones are left alone unless ``retry_failed``. One run's failure
is recorded in its folder (status, traceback) and the sweep goes on with the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
import torch
import yaml

from locbench.config import from_dict
from locbench.data.formats import table_from_config
from locbench.data.splits import make_config_split, save_split
from locbench.engine.data import check_part_sizes, prepare_cache
from locbench.engine.fit import train
from locbench.errors import Interrupted, LocbenchError, signal_name
from locbench.models.weights import require_weights
from locbench.store.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir
from locbench.store.lock import FileLock
from locbench.store.rundir import RunDir
from locbench.sweep.grid import Point, Sweep, load_sweep
from locbench.sweep.slurm import QueueWatcher, submitit_logs_once
from locbench.sweep.tracking import check_sweep_mlflow, finish_sweep_run, start_sweep_run, sweep_parent_run

log = logging.getLogger(__name__)

EXECUTORS = ("inline", "local", "slurm")
#: Set for inline worker processes: the pid of the `locbench sweep` that started them.
PARENT_ENV = "LOCBENCH_SWEEP_PID"


def run_sweep(
    sweep: str | Path | Sweep,
    out: str | Path,
    *,
    data: str | None = None,
    overrides: dict[str, Any] | None = None,
    workers: int = 1,
    executor: str = "inline",
    retry_failed: bool = False,
    slurm: dict[str, Any] | None = None,
    wait: bool = True,
) -> dict[str, int]:
    """Run (or finish) a sweep into ``out``; returns the count of runs per final state.

    Args:
        sweep: a sweep file or an expanded :class:`Sweep`.
        out: the sweep folder; one run folder per grid point and seed inside.
        data: dataset for every run (overrides the file's data.path).
        overrides: dotted config overrides for every run.
        workers: runs at once (inline: >1 trains each run in its own process, one GPU each where several).
        executor: ``inline`` (this machine, no submitit), ``local`` (submitit's local executor) or ``slurm``.
        retry_failed: run failed and diverged runs again (a diverged run's old folder is kept aside).
        slurm: submitit parameters for ``slurm`` (partition, gpus_per_node, timeout_min, mem_gb, cpus_per_task,
            array_parallelism), over the sweep file's ``executor:`` section.
        wait: wait for submitted jobs (local/slurm); without it, return after submission.
    """
    if executor not in EXECUTORS:
        raise LocbenchError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, data=data, extra=overrides)
    check_pretrained_weights(sweep)
    check_sweep_mlflow(sweep)
    out = ensure_writable_dir(Path(out), what="sweep folder --out")
    lock = FileLock(out / ".sweep.lock")
    if not lock.acquire(blocking=False):
        raise LocbenchError(
            f"another `locbench sweep` is running on {out} right now; wait for it, or watch it with "
            f"`locbench status {out}`"
        )
    try:
        points = _prepare(sweep, out)
        todo = _select(points, out, retry_failed)
        log.info(
            "sweep %s: %d runs (%d grid points x %d seeds); %d to run, %d already done",
            sweep.name,
            len(points),
            len({c.point_id for c in points}),
            len(sweep.seeds),
            len(todo),
            sum(RunDir(out / c.run_id).state() == "done" for c in points),
        )
        if todo:
            start_sweep_run(sweep, out)
            _build_shared_caches(todo)
            if executor == "inline":
                _run_inline(todo, out, workers)
            else:
                params = {**sweep.executor, **(slurm or {})}
                _run_submitit(todo, out, executor, params, wait)
    finally:
        lock.release()
    counts = Counter(RunDir(out / c.run_id).state() for c in points)
    log.info("sweep %s: %s", sweep.name, ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    finish_sweep_run(sweep, out, dict(counts))
    return dict(counts)


def check_pretrained_weights(sweep: Sweep) -> None:
    """Before anything is created or trained: every backbone that a run starts from pretrained weights has them on
    this machine (imported or in the hub caches); where the hub answers, missing ones are downloaded now, so that
    workers without internet find them. Otherwise one error lists every missing file and where to put it."""
    backbones: dict[str, None] = {}
    for point in sweep.points:
        m = point.config.model
        if not m.pretrained:
            continue
        if m.pretrained_file:
            if not Path(m.pretrained_file).expanduser().is_file():
                raise LocbenchError(
                    f"sweep {sweep.name}: model.pretrained_file {m.pretrained_file} (run {point.run_id}) does not "
                    "exist; give the path of a weights file"
                )
            continue
        backbones.setdefault(m.backbone)
    lookups = require_weights(list(backbones), what=f"sweep {sweep.name} (nothing was started)")
    for lk in lookups:
        log.info("pretrained weights of %s: %s (%s)", lk.backbone, lk.found, lk.source)


def _prepare(sweep: Sweep, out: Path) -> list[Point]:
    """Write the plan and one split file per split seed; point every run at its split file."""
    plan = {
        "name": sweep.name,
        "description": sweep.description,
        "grid": sweep.grid,
        "seeds": sweep.seeds,
        "runs": [{"run_id": c.run_id, "point_id": c.point_id, "axes": c.axes, "seed": c.seed} for c in sweep.points],
    }
    atomic_write_json(out / "plan.json", plan)
    if sweep.path is not None and sweep.path.exists():
        atomic_write_text(out / "sweep.yaml", sweep.path.read_text())
    points = []
    tables: dict[tuple, Any] = {}
    for point in sweep.points:
        d = point.config.data
        if d.split is None:
            key = (
                d.path,
                d.format,
                d.pattern,
                d.id_col,
                d.label_col,
                d.split_seed,
                d.val_frac,
                d.test_frac,
                d.group_col,
            )
            digest = hashlib.sha256(json.dumps(key[1:]).encode()).hexdigest()[:6]
            split_path = out / "splits" / f"split-seed{d.split_seed}-{digest}.json"
            if not split_path.exists():
                tkey = key[:5]
                if tkey not in tables:
                    tables[tkey] = table_from_config(d)
                check_part_sizes(d, tables[tkey])
                save_split(make_config_split(d, tables[tkey]), split_path)
            point = replace(point, config=point.config.replace({"data.split": str(split_path.resolve())}))
        points.append(point)
    for point in points:  # only now that every split is made: a fraction that leaves a part empty makes no run folder
        run = RunDir(out / point.run_id)
        run.root.mkdir(parents=True, exist_ok=True)
        record = point.record(sweep.name)
        # A finished run is never touched (bytes and mtimes stay); others get the record only when it changed.
        if run.status() != "done" and _sweep_point_or_none(run) != json.loads(json.dumps(record)):
            run.write_sweep_point(record)
    return points


def _sweep_point_or_none(run: RunDir) -> dict[str, Any] | None:
    try:
        return run.read_sweep_point()
    except (OSError, ValueError):
        return None


def _select(points: list[Point], out: Path, retry_failed: bool) -> list[Point]:
    todo = []
    for point in points:
        run = RunDir(out / point.run_id)
        state = run.state()
        if state == "done":
            continue
        if state == "running":
            log.info("%s is being trained by another process; leaving it", point.run_id)
            continue
        if state in ("failed", "diverged"):
            if not retry_failed:
                log.info(
                    "%s %s earlier (%s); --retry-failed runs it again",
                    point.run_id,
                    state,
                    run.status_info().get("reason", "")[:200],
                )
                continue
            if state == "diverged" or not run.has_checkpoints():
                _set_aside(run, out)  # keep the old attempt; start clean
        todo.append(point)
    return todo


def _set_aside(run: RunDir, out: Path) -> None:
    dest = out / ".attempts" / f"{run.root.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.set_aside(dest)
    log.info("kept the previous attempt of %s in %s", run.root.name, dest)


def _build_shared_caches(points: list[Point]) -> None:
    """Build each distinct preprocessing cache once, before the runs that share it start."""
    done = set()
    for point in points:
        d = point.config.data
        key = (d.path, d.format, d.pattern, tuple(d.stains.items()), d.channels, d.img_size, d.resize, d.cache_dir)
        if key not in done and prepare_cache(point.config) is not None:
            done.add(key)


def die_with_parent() -> None:
    """In an inline worker (Linux): ask the kernel for SIGKILL when the sweep that started it dies.

    Without it a `kill -9` of the sweep left its workers training on, unseen, holding GPUs and run locks; now
    their runs are left interrupted, and re-running the sweep resumes them. The kernel signals when the
    launching thread ends, which is never before the worker: that thread waits for it.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl in this libc: workers outlive a killed sweep, as before
        return
    if os.getppid() != int(parent):  # the sweep died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def run_point(run_dir: str) -> str:
    """Train the run described by ``RUN_DIR/sweep_point.json`` (or an older sweep's ``sweep_cell.json``), resuming
    it if it was interrupted; return its final status. Never raises for a failed run: the failure is recorded in
    the run folder."""
    run = RunDir(Path(run_dir))
    record = run.read_sweep_point()
    if record is None:
        raise LocbenchError(f"{run.root} has no sweep_point.json: not a folder prepared by `locbench sweep`")
    cfg = from_dict(record["config"])
    try:
        with _stop_on_sigterm_in_job():
            train(cfg, run.root, resume=True, mlflow_parent=sweep_parent_run(run.root.parent))
    except Interrupted as e:  # scancel, pre-emption or the time limit near: the run is left interrupted
        if not _in_submitit_job():
            raise  # a sweep on this machine (or its worker) stops as a whole: the caller handles it
        if e.signum == REQUEUE_SIGNAL and _requeue_this_job(run):
            raise SystemExit(-1) from None  # no result: the requeued job finishes the run
        log.warning("%s: %s; the same sweep command resumes it", run.root.name, e)
        return run.state()
    except LocbenchError as e:
        log.error("%s: %s", run.root.name, e)
        _record_early_failure(run, e)
    except Exception as e:  # recorded in the run folder by train(); the sweep goes on
        log.exception("%s failed", run.root.name)
        _record_early_failure(run, e)
    return run.status() or "failed"


#: The signal SLURM sends a job before its time limit or a pre-emption (submitit asks for it: ``--signal=USR2@90``).
REQUEUE_SIGNAL = signal.SIGUSR2
#: How often one run's job is requeued (pre-emptions and time limits together) before it is left interrupted.
MAX_REQUEUES = 10


@contextlib.contextmanager
def _stop_on_sigterm_in_job() -> Iterator[None]:
    """In a submitit job (SLURM or local), SIGTERM (scancel, pre-emption) and SIGUSR2 (the time limit or a
    pre-emption near) stop the run at once, left interrupted with its finished epochs kept.

    submitit itself ignores SIGTERM, so a cancelled job trained on, unseen, until SLURM's KillWait ended it with
    SIGKILL mid-epoch; and on SIGUSR2 it ended the process from inside training, which recorded the run failed.
    Elsewhere (the CLI installs its own handlers) nothing changes."""
    if not _in_submitit_job() or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, REQUEUE_SIGNAL)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _in_submitit_job() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") is not None


def _requeue_this_job(run: RunDir) -> bool:
    """Put this SLURM job back in the queue (``scontrol requeue``), where it resumes the run after its last
    finished epoch; False (nothing done) outside SLURM or after :data:`MAX_REQUEUES` requeues."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return False
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts >= MAX_REQUEUES:
        log.warning("%s: requeued %d times already; leaving it interrupted", run.root.name, restarts)
        return False
    job_id = submitit.JobEnvironment().job_id
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        log.warning("%s: scontrol requeue %s failed (%s)", run.root.name, job_id, done.stderr.strip())
        return False
    log.warning("%s: stopped by %s; job %s requeued to resume it", run.root.name, signal_name(REQUEUE_SIGNAL), job_id)
    return True


#: The name submitit jobs pickled by an older locbench call (by qualified name); they may still be queued on SLURM.
run_cell = run_point


def _record_early_failure(run: RunDir, e: BaseException) -> None:
    """train() records failures once the run has started; one before that (an unavailable device) left no status,
    and the run looked pending to every later sweep and to `locbench status`."""
    if run.status() is None:
        run.set_status("failed", f"{type(e).__name__}: {e}")


def _run_inline(points: list[Point], out: Path, workers: int) -> None:
    total = len(points)
    t0 = time.perf_counter()
    if workers <= 1:
        for k, point in enumerate(points):
            _log_progress(k, total, t0, point)
            status = run_point(str(out / point.run_id))
            log.info("[%d/%d] %s: %s", k + 1, total, point.run_id, status)
        return
    gpus = _visible_gpus()
    threads = max(1, (os.cpu_count() or 1) // workers)

    procs: set[subprocess.Popen] = set()
    guard = threading.Lock()
    stopping = threading.Event()

    def launch(args: tuple[int, Point]) -> str | None:
        k, point = args
        slot = k % workers
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), LOCBENCH_POINT_SLOT=str(slot))
        env[PARENT_ENV] = str(os.getpid())  # the worker dies with this process (see die_with_parent)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        cmd = [sys.executable, "-m", "locbench", "-q", "sweep-point", str(out / point.run_id)]
        with guard:
            if stopping.is_set():  # the sweep was interrupted: start nothing more
                return None
            _log_progress(k, total, t0, point)
            with open(RunDir(out / point.run_id).worker_log, "ab") as logf:
                # a session of its own: a Ctrl-C in the terminal reaches the sweep alone, which forwards it once
                proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            procs.add(proc)
        proc.wait()
        with guard:
            procs.discard(proc)
        status = RunDir(out / point.run_id).status() or "failed"
        log.info("%s: %s", point.run_id, status)
        return status

    # a thread per slot feeding processes: `workers` runs in flight at once
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            list(pool.map(launch, enumerate(points)))
        except KeyboardInterrupt as e:
            _stop_workers(e, procs, guard, stopping)
            pool.shutdown(wait=True, cancel_futures=True)  # wait for the workers to record their runs
            raise


def _stop_workers(
    e: KeyboardInterrupt, procs: set[subprocess.Popen], guard: threading.Lock, stopping: threading.Event
) -> None:
    """Forward the signal that interrupted the sweep (SIGINT for a plain Ctrl-C) to every worker still running:
    each leaves its run interrupted, for the re-run to resume."""
    signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    with guard:
        stopping.set()
        running = [p for p in procs if p.poll() is None]
        for proc in running:
            proc.send_signal(signum)
    log.warning("%s: stopping %d running sweep worker(s) and waiting for them", signal_name(signum), len(running))


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _log_progress(k: int, total: int, t0: float, point: Point) -> None:
    elapsed = time.perf_counter() - t0
    eta = f", ETA {_fmt_s(elapsed / k * (total - k))}" if k else ""
    log.info("[%d/%d] starting %s (elapsed %s%s)", k + 1, total, point.run_id, _fmt_s(elapsed), eta)


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _run_submitit(points: list[Point], out: Path, executor: str, params: dict[str, Any], wait: bool) -> None:
    with submitit_logs_once():
        _submit_and_wait(points, out, executor, params, wait)


def _submit_and_wait(points: list[Point], out: Path, executor: str, params: dict[str, Any], wait: bool) -> None:
    ex = submitit.AutoExecutor(folder=str(out / ".submitit" / "%j"), cluster="local" if executor == "local" else None)
    if executor == "slurm" and ex.cluster != "slurm":
        raise LocbenchError("--executor slurm: no SLURM found here (sbatch is not on PATH); use --executor local")
    p = dict(params)
    upd: dict[str, Any] = {
        "timeout_min": int(p.pop("timeout_min", 24 * 60)),
        "gpus_per_node": int(p.pop("gpus_per_node", 0)),
        "cpus_per_task": int(p.pop("cpus_per_task", 2 if executor == "local" else 8)),
        "name": f"locbench-{out.name}",
    }
    if executor == "slurm":
        upd["slurm_array_parallelism"] = int(p.pop("array_parallelism", 16))
        if "partition" in p:
            upd["slurm_partition"] = p.pop("partition")
        if "mem_gb" in p:
            upd["mem_gb"] = int(p.pop("mem_gb"))
        upd.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in p.items()})
    ex.update_parameters(**upd)
    jobs = ex.map_array(run_point, [str(out / c.run_id) for c in points])
    record_jobs(out, {c.run_id: j.job_id for c, j in zip(points, jobs, strict=True)})
    log.info(
        "submitted %d runs as %s job array %s; job logs in %s",
        len(points),
        executor,
        jobs[0].job_id.split("_")[0],
        out / ".submitit",
    )
    if not wait:
        log.info("not waiting: watch with `locbench status %s`, then `locbench report %s`", out, out)
        return
    if executor == "slurm":
        watcher = QueueWatcher()  # sacct, or squeue where accounting is off
        for job in jobs:
            job.watcher = watcher
            watcher.register_job(job.job_id)
    for k, (point, job) in enumerate(zip(points, jobs, strict=True)):
        run = RunDir(out / point.run_id)
        try:
            status = job.result()
        except Exception as e:  # the job itself died (cancelled, pre-empted, out of time): its folder says how far
            status = f"job {job.job_id} ended without finishing the run ({type(e).__name__}), now {run.state()}"
            _record_early_failure(run, LocbenchError(f"{executor} job {job.job_id} ended without a result"))
        if status == "done":
            log.info("[%d/%d] %s: %s", k + 1, len(points), point.run_id, status)
        else:
            log.warning(
                "[%d/%d] %s: %s; %s log: %s", k + 1, len(points), point.run_id, status, executor, job.paths.stderr
            )


def record_jobs(out: Path, jobs: dict[str, str]) -> None:
    """Add this submission's job ids to ``DIR/jobs.yaml`` (run id -> its latest job), keeping earlier runs' ids."""
    path = out / "jobs.yaml"
    try:
        known = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    atomic_write_text(path, yaml.safe_dump({**known, **jobs}))
