"""The timeline: a Gantt chart per trace (measured, simulated), one row per processor and link,
one bar per action, coloured by its kind; the panels share rows, colours and time axis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpsl.report.colors import COLORS, category, color
from mpsl.report.figure import pyplot, save
from mpsl.report.rows import ordered_rows
from mpsl.trace import Event

MIN_BAR_S = 1e-4  # the narrowest bar drawn, so that an instant message stays visible


def draw_timeline(panels: Sequence[tuple[str, Sequence[Event]]], path: str | Path,
                  title: str = "", chain: Sequence[str] = ()) -> Path:
    """timeline.png of `timeline_figure`."""
    return save(timeline_figure(panels, title, chain), path, tight=False)


def timeline_figure(panels: Sequence[tuple[str, Sequence[Event]]], title: str = "",
                    chain: Sequence[str] = ()) -> Any:
    """One panel per `(label, events)`, stacked, on the rows of all of them and one time axis.

    Event times are seconds from the panel's zero (the caller shifts a measured trace).
    """
    if not any(events for _, events in panels):
        raise ValueError("no events to draw")
    rows = ordered_rows((e.resource_name for _, evs in panels for e in evs), chain)
    end = max(e.t1 for _, evs in panels for e in evs)
    plt = pyplot()
    height = 0.3 * len(rows) + 1.2
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(14, height * len(panels) + 0.8))
    for ax, (label, events) in zip(axes[:, 0], panels):
        _panel(ax, events, rows)
        ax.set_title(label, loc="left", fontsize="medium")
        ax.set_xlim(0, end * 1.01 if end > 0 else 1)
    axes[-1, 0].set_xlabel("seconds since training started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    fig.legend(handles, list(COLORS), ncol=len(COLORS), loc="upper right", fontsize="small",
               bbox_to_anchor=(0.995, 1.0))
    fig.suptitle(title or "timeline", y=0.995, x=0.01, ha="left", fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _panel(ax: Any, events: Sequence[Event], rows: Sequence[str]) -> None:
    by_row: dict[str, tuple[list[tuple[float, float]], list[str]]] = {r: ([], []) for r in rows}
    for e in events:
        bars, colors = by_row[e.resource_name]
        bars.append((e.t0, max(e.seconds, MIN_BAR_S)))
        colors.append(color(category(e.action)))
    for i, r in enumerate(rows):
        bars, colors = by_row[r]
        if bars:
            ax.broken_barh(bars, (i - 0.4, 0.8), facecolors=colors)
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top
