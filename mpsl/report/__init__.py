"""What a person sees of a run: live progress, the results tables, and the figures
(timeline measured beside simulated, curves, busy time) with actions.csv."""

from __future__ import annotations

from mpsl.report.busy import busy_breakdown, draw_busy
from mpsl.report.curves import draw_curves
from mpsl.report.progress import Progress
from mpsl.report.run import FILES, RunReport, action_dicts, write_report
from mpsl.report.tables import actions_table, busy_table, results_tables, summary_table
from mpsl.report.timeline import draw_timeline

__all__ = [
    "FILES", "Progress", "RunReport", "action_dicts", "actions_table", "busy_breakdown",
    "busy_table", "draw_busy", "draw_curves", "draw_timeline", "results_tables",
    "summary_table", "write_report",
]
