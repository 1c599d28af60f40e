"""Reports over sweep folders: statistics, tables, plots and a self-contained HTML page.

``build_report(sweep_dir, **options)`` reads run folders (the contract in docs/ARCHITECTURE.md) and writes
``report.md``, ``report.html`` and ``leaderboard.csv``; :class:`Section` lets other parts add sections.
"""

from __future__ import annotations

from locbench.report.build import build_report
from locbench.report.html import Section

__all__ = ["Section", "build_report"]
