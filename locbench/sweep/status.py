"""`locbench status DIR`: how far a sweep has got."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from locbench.errors import LocbenchError
from locbench.store.rundir import RunDir


def sweep_status(out: str | Path) -> dict[str, Any]:
    """Per-run state and progress, counts per state, and an ETA from the finished runs' durations."""
    out = Path(out)
    plan_path = out / "plan.json"
    if not plan_path.exists():
        raise LocbenchError(f"{out} is not a sweep folder (no plan.json); start one with `locbench sweep`")
    plan = json.loads(plan_path.read_text())
    rows = []
    durations = []
    jobs = _jobs(out)
    for entry in plan["runs"]:
        run = RunDir(out / entry["run_id"])
        state = run.state()
        history = run.read_metrics()
        try:
            epochs = run.read_config()["train"]["epochs"]
        except Exception:  # no config yet, or one a person broke: the progress column stays empty
            epochs = None
        spent = sum(r.get("time/epoch_s", 0.0) for r in history)
        if state == "done":
            durations.append(spent)
        rows.append(
            {
                "run_id": entry["run_id"],
                "state": state,
                "epoch": len(history),
                "epochs": epochs,
                "seconds": spent,
                "reason": _reason(run, state),
                "job_log": _job_log(out, jobs.get(entry["run_id"])) if state in ("failed", "interrupted") else None,
            }
        )
    counts = Counter(r["state"] for r in rows)
    left = sum(1 for r in rows if r["state"] in ("pending", "running", "interrupted"))
    eta = statistics.median(durations) * left if durations and left else None
    return {"name": plan.get("name"), "runs": rows, "counts": dict(counts), "eta_s": eta, "time": time.time()}


def _jobs(out: Path) -> dict[str, str]:
    """Run id -> its latest submitit job id (``DIR/jobs.yaml``, written by ``--executor slurm|local``)."""
    try:
        jobs = yaml.safe_load((out / "jobs.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return {str(k): str(v) for k, v in jobs.items()} if isinstance(jobs, dict) else {}


def _job_log(out: Path, job_id: str | None) -> str | None:
    """The error log submitit's job wrote (``DIR/.submitit/JOB/JOB_0_log.err``), where it exists."""
    if job_id is None:
        return None
    path = out / ".submitit" / job_id / f"{job_id}_0_log.err"
    return str(path) if path.is_file() else None


def _reason(run: RunDir, state: str) -> str:
    """Why a run stopped, and for an interrupted one how to finish it."""
    if state in ("failed", "diverged"):
        return run.status_info().get("reason", "")
    if state == "interrupted":
        how = run.status_info().get("reason") or "killed"
        return f"{how}; re-running the sweep resumes it"
    return ""


def format_status(st: dict[str, Any]) -> str:
    lines = [f"sweep {st['name']}: " + ", ".join(f"{v} {k}" for k, v in sorted(st["counts"].items()))]
    if st["eta_s"] is not None:
        lines[0] += f"; about {st['eta_s'] / 60:.1f} min of training left (one worker)"
    width = max(len(r["run_id"]) for r in st["runs"])
    for r in st["runs"]:
        progress = f"epoch {r['epoch']}/{r['epochs']}" if r["epochs"] else ""
        lines.append(f"  {r['run_id']:<{width}}  {r['state']:<11}  {progress:<12}  {r['reason'][:80]}")
        if r.get("job_log"):
            lines.append(f"  {'':<{width}}  job log: {r['job_log']}")
    return "\n".join(lines)
