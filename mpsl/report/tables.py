"""A run's tables: epochs, nodes, links and the summary (from results.json), busy time per
action kind, and measured against simulated action durations. Each fits 80 columns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.table import Table

from mpsl.report.busy import SEGMENTS, Breakdown, busy_s
from mpsl.report.colors import IDLE
from mpsl.report.rows import LINK_SEP, ordered_rows


def _mb(n: float | None) -> str:
    """Megabytes, three significant digits below 100 (a short run's links carry kilobytes)."""
    if n is None:
        return "-"
    mb = n / 1e6
    return f"{mb:.1f}" if mb >= 100 else f"{mb:.3g}"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


NAME_WIDTH = 30  # a name column keeps up to this width; a longer name folds, never cut


def _table(title: str, columns: Sequence[str], left: int = 1, **kw: Any) -> Table:
    """Columns before `left` hold names (left, kept whole up to NAME_WIDTH), then numbers."""
    t = Table(title=title, **kw)
    for i, col in enumerate(columns):
        if i < left:
            t.add_column(col, justify="left", overflow="fold")
        else:
            t.add_column(col, justify="right", no_wrap=True)
    return t


def _fit_names(t: Table, left: int = 1) -> Table:
    """Give each name column the width of its longest cell (at most NAME_WIDTH)."""
    for col in t.columns[:left]:
        cells = [str(c) for c in col.cells]
        col.min_width = min(NAME_WIDTH, max(map(len, cells), default=0))
    return t


def link_text(resource: str, kind: str) -> str:
    """An action kind as a table shows it: a link's message without the receiver the link
    names already (`>server:ACT` on `owner0->server` is `ACT`)."""
    if LINK_SEP in resource and kind.startswith(">"):
        return kind.rpartition(":")[2]
    return kind


def results_tables(results: Mapping[str, Any]) -> list[Table]:
    """Epochs; nodes, the aggregator included (busy, idle, memory, rejected messages); links
    (bytes, busy); the summary."""
    epochs = results.get("epochs", [])
    private = any("epsilon" in e for e in epochs)  # classic DP: the (epsilon, delta) spent
    ep = _table("Epochs", ("epoch", "wall s", "train loss", "test loss", "test accuracy",
                           *(["epsilon"] if private else [])), 0)
    for e in epochs:
        ep.add_row(str(e["epoch"]), f"{e['wall_s']:.2f}", _num(e.get("train_loss"), ".4f"),
                   _num(e.get("test_loss"), ".4f"), _num(e.get("test_accuracy"), ".2%"),
                   *([_num(e.get("epsilon"), ".3g")] if private else []))
    nodes = _table("Nodes", ("node", "busy s", "idle s", "RSS MB", "tensor MB", "rejected"),
                   caption="MB: peaks; rejected: messages dropped by the wire checks")
    node_rows = results.get("nodes", {})
    for name in ordered_rows(node_rows):
        n = node_rows[name]
        nodes.add_row(name, f"{n['busy_s']:.3f}", f"{n['idle_s']:.3f}",
                      _mb(n.get("peak_rss_bytes")), _mb(n.get("peak_tensor_bytes")),
                      str(n.get("rejected_messages", 0)))
    links = _table("Links", ("link", "MB", "busy s"))
    link_rows = results.get("links", {})
    for name in ordered_rows(link_rows):
        lk = link_rows[name]
        links.add_row(name, _mb(lk["bytes"]), f"{lk['busy_s']:.3f}")
    summary = summary_table(results.get("summary", {}), results.get("privacy"))
    return [ep, _fit_names(nodes), _fit_names(links), summary]


def summary_table(s: Mapping[str, Any], privacy: Mapping[str, Any] | None = None) -> Table:
    """The run's totals; with `privacy` (results.json's block) the privacy spent as well."""
    t = Table(title="Summary", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("training time", f"{s['train_s']:.2f} s")
    t.add_row("bottleneck", f"{s['bottleneck']} ({s['bottleneck_busy_s']:.2f} s busy)")
    t.add_row("time / bottleneck bound", _num(s.get("time_over_bound"), ".2f") +
              " (1 is ideal)")
    t.add_row("final test accuracy", _num(s.get("final_test_accuracy"), ".2%"))
    t.add_row("rejected messages", str(s.get("rejected_messages", 0)))
    if privacy:
        t.add_row("privacy", privacy_text(privacy))
    return t


def privacy_text(p: Mapping[str, Any]) -> str:
    """The privacy block in one line: (epsilon, delta) when updates are noised, the sigmas of
    the noise layer when it is on."""
    parts = []
    if p.get("noise_multiplier"):
        parts.append(f"epsilon {p['epsilon']:.3g} at delta {p['delta']:g} "
                     f"(sigma {p['noise_multiplier']:g}, C {p['clip_norm']:g}, "
                     f"{p['steps']} aggregations)")
    if p.get("pixel_sigma") or p.get("cut_sigma"):
        parts.append(f"noise layer: pixel sigma {p['pixel_sigma']:g}, "
                     f"cut sigma {p['cut_sigma']:g}")
    return "; ".join(parts) or "off"


def busy_table(panels: Sequence[tuple[str, Breakdown]]) -> Table:
    """Seconds per action kind and idle per node, one row per (node, trace)."""
    used = [k for k in SEGMENTS if any(seg.get(k) for _, bd in panels for seg in bd.values())]
    t = _table("Busy and idle time per node (s)", ("node", "trace", *used, "busy %"), 2)
    for name in ordered_rows(n for _, bd in panels for n in bd):
        for label, bd in panels:
            seg = bd.get(name)
            if seg is None:
                continue
            wall = busy_s(seg) + seg.get(IDLE, 0.0)
            t.add_row(name, label, *(f"{seg.get(k, 0.0):.3f}" for k in used),
                      f"{100 * busy_s(seg) / wall:.0f}" if wall else "-")
    return _fit_names(t, 2)


def actions_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """Mean milliseconds of every action kind on every resource, measured and simulated."""
    t = _table("Actions: mean ms, measured against simulated",
               ("resource", "action", "measured", "simulated", "error %"), 2)
    for r in rows:
        t.add_row(r["resource"], link_text(r["resource"], r["kind"]),
                  _num(_ms(r["measured_s"]), ".3f"), _num(_ms(r["simulated_s"]), ".3f"),
                  _num(r["error_pct"], "+.1f"))
    return _fit_names(t, 2)


def _ms(s: float | None) -> float | None:
    return None if s is None else 1e3 * s
