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


def owner_group(text: str) -> list[str]:
    """The owner names of a group written `owner0..owner31` (both ends included), a comma
    list `owner0,owner5`, or one name; ValueError (one line) for anything else."""
    names: list[str] = []
    for item in text.split(","):
        first, dots, last = item.strip().partition("..")
        a, b = owner_index(first), owner_index(last) if dots else owner_index(first)
        if a is None or b is None or b < a:
            raise ValueError(f"{text!r}: not an owner group (owner0..owner31, owner0,owner5, "
                             "or one name)")
        names += [owner_name(k) for k in range(a, b + 1)]
    if len(set(names)) != len(names):
        raise ValueError(f"{text!r}: an owner named twice")
    return names


def group_name(names: list[str]) -> str:
    """How a group of owners is written: `owner4..owner7` when consecutive, else a list."""
    indices = [owner_index(n) for n in names]
    if len(names) > 1 and None not in indices and indices == list(
            range(indices[0] or 0, (indices[0] or 0) + len(names))):
        return f"{names[0]}..{names[-1]}"
    return ",".join(names)
