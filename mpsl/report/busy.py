"""Busy and idle time per node: processor seconds per action kind, and the rest of the wall
time idle (PiPar's definition), as data and as a stacked horizontal bar per node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mpsl.names import CPU
from mpsl.report.colors import IDLE, OTHER, PROCESSOR_KINDS, category, color
from mpsl.report.figure import pyplot, save
from mpsl.report.rows import ordered_rows
from mpsl.trace import Event

SEGMENTS = (*PROCESSOR_KINDS, OTHER, IDLE)
Breakdown = dict[str, dict[str, float]]  # node -> segment -> seconds


def busy_breakdown(events: Iterable[Event], wall_s: float, nodes: Iterable[str] = ()) -> Breakdown:
    """Per node (those given and those with processor events): seconds per action kind, and
    `idle` = wall_s - busy (never below 0)."""
    out: Breakdown = {n: {} for n in nodes}
    for e in events:
        if e.resource == CPU:
            seg = out.setdefault(e.node, {})
            cat = category(e.action)
            seg[cat] = seg.get(cat, 0.0) + e.seconds
    for seg in out.values():
        seg[IDLE] = max(0.0, wall_s - sum(seg.values()))
    return out


def busy_s(segments: Mapping[str, float]) -> float:
    return sum(s for k, s in segments.items() if k != IDLE)


def draw_busy(panels: Sequence[tuple[str, Breakdown]], path: str | Path, title: str = "",
              chain: Sequence[str] = ()) -> Path:
    """busy.png of `busy_figure`."""
    return save(busy_figure(panels, title, chain), path, tight=False)


def busy_figure(panels: Sequence[tuple[str, Breakdown]], title: str = "",
                chain: Sequence[str] = ()) -> Any:
    """One panel per `(label, breakdown)`, a stacked bar per node, the same rows in each."""
    rows = ordered_rows((n for _, bd in panels for n in bd), chain)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False,
                             figsize=(6 * len(panels) + 1, 0.35 * len(rows) + 2.2))
    drawn: dict[str, object] = {}
    for ax, (label, bd) in zip(axes[0], panels):
        left = [0.0] * len(rows)
        for seg in SEGMENTS:
            widths = [bd.get(r, {}).get(seg, 0.0) for r in rows]
            if any(widths):
                drawn[seg] = ax.barh(range(len(rows)), widths, left=left, color=color(seg))
                left = [a + b for a, b in zip(left, widths)]
        ax.set_title(label, loc="left", fontsize="medium")
        ax.set_xlabel("seconds")
        ax.set_yticks(range(len(rows)), rows, fontsize="small")
        ax.set_ylim(len(rows) - 0.5, -0.5)
    segs = [s for s in SEGMENTS if s in drawn]
    fig.legend([drawn[s] for s in segs], segs, ncol=len(segs), loc="upper right",
               fontsize="small", bbox_to_anchor=(0.995, 1.0))
    fig.suptitle(title or "busy and idle time per node", x=0.01, ha="left", fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
