"""The run's fixed names: the owner placement, the aggregator, a node's processor, owner names."""

from __future__ import annotations

import re

OWNER = "owner"  # the placement name of a part that every data owner runs
AGGREGATOR = "aggregator"  # the node that averages owner parts and evaluates
CPU = "cpu"  # the trace's resource name of a node's processor
_OWNER_NAME = re.compile(r"owner(\d+)")


def owner_name(index: int) -> str:
    """The node name of data owner `index`: `owner0`, `owner1`, ..."""
    return f"owner{index}"


def owner_index(name: str) -> int | None:
    """The index of a data owner's node name, or None for any other name."""
    m = _OWNER_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def link_name(src: str, dst: str) -> str:
    """The trace's resource name of the directed link from `src` to `dst`."""
    return f"{src}->{dst}"
