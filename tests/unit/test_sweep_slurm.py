"""The SLURM helpers of a sweep without a cluster: job states from squeue where sacct fails (said once, however
many polls), and submitit's log records reaching the caller's handlers once."""

from __future__ import annotations

import logging
import subprocess

from locbench.sweep import slurm
from locbench.sweep.slurm import LEFT_QUEUE, QueueWatcher, submitit_logs_once


def fake_commands(monkeypatch, squeue_out: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 1, "", "Slurm accounting storage is disabled\n")
        return subprocess.CompletedProcess(cmd, 0, squeue_out, "")

    monkeypatch.setattr(slurm.subprocess, "run", run)
    return calls


def test_states_come_from_squeue_where_sacct_fails_said_once(monkeypatch, caplog):
    calls = fake_commands(monkeypatch, "7_0|RUNNING\n7_1|PENDING\n")
    watcher = QueueWatcher()
    for job in ("7_0", "7_1", "7_2"):
        watcher.register_job(job)
    with caplog.at_level(logging.WARNING, logger="locbench"):
        for _ in range(3):
            watcher.update()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "Slurm accounting storage is disabled" in said[0] and "squeue" in said[0]
    assert [c[0] for c in calls] == ["sacct", "squeue", "squeue", "squeue"]  # sacct asked once, not per poll
    assert watcher.get_state("7_0", mode="cache") == "RUNNING"
    assert watcher.get_state("7_1", mode="cache") == "PENDING"
    # a job squeue no longer knows (cancelled before it started, or long finished) is over, not waited on forever
    assert watcher.get_state("7_2", mode="cache") == LEFT_QUEUE
    assert watcher.is_done("7_2", mode="cache") and not watcher.is_done("7_0", mode="cache")


def test_sacct_that_works_is_used(monkeypatch):
    def run(cmd, **kwargs):
        assert cmd[0] == "sacct"
        return subprocess.CompletedProcess(cmd, 0, "JobID|State|NodeList\n9_0|COMPLETED|n1\n", "")

    monkeypatch.setattr(slurm.subprocess, "run", run)
    watcher = QueueWatcher()
    watcher.register_job("9_0")
    watcher.update()
    assert watcher.sacct_off is None and watcher.get_state("9_0", mode="cache") == "COMPLETED"


def test_submitit_records_reach_the_callers_handlers_once(capsys):
    import submitit  # noqa: F401 - sets up its logger and handlers

    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("ROOT %(message)s"))
    root.addHandler(handler)
    try:
        own = list(logging.getLogger("submitit").handlers)
        assert own  # submitit's stdout and stderr handlers
        with submitit_logs_once():
            logging.getLogger("submitit").warning("once please")
        assert logging.getLogger("submitit").handlers == own  # given back afterwards
    finally:
        root.removeHandler(handler)
    said = capsys.readouterr()
    assert (said.out + said.err).count("once please") == 1
