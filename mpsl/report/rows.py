"""The rows of a run's figures: processors (owners, compute nodes, the aggregator), then links."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mpsl.names import AGGREGATOR, owner_index

LINK_SEP = "->"  # mpsl.names.link_name's separator


def _node_key(name: str, chain: Sequence[str]) -> tuple[int, int, str]:
    k = owner_index(name)
    if k is not None:
        return (0, k, "")
    if name == AGGREGATOR:
        return (2, 0, "")
    return (1, chain.index(name) if name in chain else len(chain), name)


def row_key(resource: str, chain: Sequence[str] = ()) -> tuple[object, ...]:
    """Sort key: processors before links; owners by index, the chain in order, the aggregator
    last; a link by its sender, then its receiver."""
    src, sep, dst = resource.partition(LINK_SEP)
    if not sep:
        return (0, _node_key(resource, chain), ())
    return (1, _node_key(src, chain), _node_key(dst, chain))


def ordered_rows(resources: Iterable[str], chain: Sequence[str] = ()) -> list[str]:
    """Every distinct resource name once, in row order."""
    return sorted(set(resources), key=lambda r: row_key(r, chain))
