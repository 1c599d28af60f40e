"""User-facing errors.

Anything a user can fix (a bad CSV, a missing file, a typo in a config key) raises :class:`LocbenchError`.
The CLI prints its message and exits with code 2, without a traceback; library callers get the exception.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

#: How many offending items an error message lists before it says "and N more".
MAX_LISTED = 20


class LocbenchError(Exception):
    """An error the user can act on: the message names the file, row or key, and the fix."""

    exit_code = 2


class BadInputError(LocbenchError):
    """Input data is malformed; ``items`` lists every offending id/row (the message shows the first few)."""

    def __init__(self, problem: str, items: Iterable[str] = (), fix: str = "", *, total: int | None = None) -> None:
        """``total``: how many offending items there are when ``items`` holds only the first ones (a million
        missing files are counted, not each described)."""
        self.problem = problem
        self.items = list(items)
        self.fix = fix
        super().__init__(format_problem(problem, self.items, fix, total=total))


def format_problem(problem: str, items: list[str], fix: str = "", *, total: int | None = None) -> str:
    """Render ``problem`` with up to :data:`MAX_LISTED` offending items (of ``total``, default all) and a fix line."""
    lines = [problem]
    for item in items[:MAX_LISTED]:
        lines.append(f"  - {item}")
    total = len(items) if total is None else total
    if total > min(len(items), MAX_LISTED):
        lines.append(f"  ... and {total - min(len(items), MAX_LISTED):,} more")
    if fix:
        lines.append(f"Fix: {fix}")
    return "\n".join(lines)


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived: work stops where it is, finished work is kept, and the run is left
    ``interrupted`` (its status stays ``running`` with nobody holding its lock) for the same command to resume.

    A ``KeyboardInterrupt``, so that ``except Exception`` never swallows it. The CLI exits with ``128 + signum``
    (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(signal_name(self.signum))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ... (the number for a signal Python has no name for)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def interrupt_reason(e: BaseException) -> str:
    """How an interruption is described in a run's ``status.json``: which signal (Ctrl-C is SIGINT)."""
    return f"interrupted by {signal_name(e.signum) if isinstance(e, Interrupted) else 'SIGINT'}"
