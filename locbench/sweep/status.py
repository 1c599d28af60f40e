"""`locbench status DIR`: how far a sweep has got."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

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
            }
        )
    counts = Counter(r["state"] for r in rows)
    left = sum(1 for r in rows if r["state"] in ("pending", "running", "interrupted"))
    eta = statistics.median(durations) * left if durations and left else None
    return {"name": plan.get("name"), "runs": rows, "counts": dict(counts), "eta_s": eta, "time": time.time()}


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
    return "\n".join(lines)
