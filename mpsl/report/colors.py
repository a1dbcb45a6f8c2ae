"""The colour of every action kind, shared by the timeline and the busy-time figure."""

from __future__ import annotations

import functools

from mpsl.actions import Action, ActionError, Op

PROCESSOR_KINDS = ("F", "B", "STEP", "AVG", "PLAN")
MESSAGE_KINDS = ("ACT", "GRAD", "PARAMS", "GLOBAL", "CONTROL", "METRICS")
COLORS = {
    "F": "tab:blue", "B": "tab:orange", "STEP": "tab:green", "AVG": "tab:red", "PLAN": "gold",
    "ACT": "tab:cyan", "GRAD": "tab:olive", "PARAMS": "tab:purple", "GLOBAL": "tab:pink",
    "CONTROL": "tab:brown", "METRICS": "black",
}
OTHER = "other"  # an action string this version does not parse (an older trace)
IDLE = "idle"
EXTRA_COLORS = {OTHER: "tab:gray", IDLE: "gainsboro"}


@functools.lru_cache(maxsize=4096)
def category(action: str) -> str:
    """What colours an event: its pass or step (F, B, STEP, AVG, PLAN), or a message's kind."""
    try:
        a = Action.from_str(action)
    except ActionError:
        return OTHER
    if a.op is Op.SEND:
        return str(a.msg)
    return str(a.op)


def color(cat: str) -> str:
    return COLORS.get(cat) or EXTRA_COLORS.get(cat, EXTRA_COLORS[OTHER])
