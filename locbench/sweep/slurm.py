"""What the SLURM path of a sweep needs besides submitit itself: job states on clusters without accounting, and
submitit's log lines said once.

Many lab clusters run SLURM without accounting (``AccountingStorageType=accounting_storage/none``), so ``sacct``
fails. submitit then logs "Bypassing sacct error" at every poll (three times each: its stdout and stderr handlers
and the root logger), lets sacct's own complaint through to the terminal, and cannot tell a cancelled job from a
running one, so waiting on a job cancelled before it wrote a result never ended. :class:`QueueWatcher` asks
``sacct`` first and, where it fails, ``squeue``, saying so once per sweep.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Iterator

from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger(__name__)

#: The state given to a job that neither sacct (off) nor squeue (job gone) knows any more: finished one way or
#: another; its result file (or its absence) says which.
LEFT_QUEUE = "LEFT_QUEUE"


class QueueWatcher(SlurmInfoWatcher):
    """submitit's job-state watcher, with ``squeue`` in place of ``sacct`` where accounting is disabled."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.sacct_off: str | None = None  # why sacct is not used, once it failed

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        if self.sacct_off is None:
            r = subprocess.run(command, capture_output=True, text=True, check=False)
            if r.returncode == 0:
                self._info_dict.update(self.read_info(r.stdout))
            else:
                self.sacct_off = (r.stderr.strip() or f"sacct exited {r.returncode}").splitlines()[-1]
                log.warning(
                    "SLURM accounting is not available here (sacct: %s): job states come from squeue instead",
                    self.sacct_off,
                )
        if self.sacct_off is not None:
            self._update_from_squeue()
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _update_from_squeue(self) -> None:
        pending = self._registered - self._finished
        arrays = sorted({j.split("_")[0] for j in pending})
        cmd = ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(arrays)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0 and "Invalid job id" not in r.stderr:
            log.debug("squeue failed (%s); job states unchanged", r.stderr.strip())
            return
        seen = {}
        for line in r.stdout.splitlines():
            job_id, _, state = line.strip().partition("|")
            if job_id:
                seen[job_id] = state
        for job_id in pending:
            self._info_dict[job_id] = {"State": seen.get(job_id, LEFT_QUEUE)}


@contextlib.contextmanager
def submitit_logs_once() -> Iterator[None]:
    """While a sweep talks to submitit: where the caller has set up logging (the ``locbench`` command does), let
    submitit's records reach it alone, not also through submitit's own stdout and stderr handlers."""
    logger = logging.getLogger("submitit")
    own = list(logger.handlers)
    if not logging.getLogger().handlers or not logger.propagate:
        yield
        return
    for h in own:
        logger.removeHandler(h)
    try:
        yield
    finally:
        for h in own:
            logger.addHandler(h)
