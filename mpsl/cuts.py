"""A model's cuts: the indices of the layers where its parts begin (no torch here, so that
planning and simulating from a profile need not import it)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import pairwise


def check_cuts(num_layers: int, cuts: Sequence[int]) -> list[int]:
    """Validate ``cuts`` for a model of ``num_layers`` layers and return them as ints.

    Cuts are the indices of the first layer of every part but the first: strictly increasing,
    each in ``(0, num_layers)``. Raises ValueError naming the first bad cut.
    """
    checked: list[int] = []
    for cut in cuts:
        if isinstance(cut, bool):
            raise ValueError(f"cut {cut!r} is not an integer")
        try:
            index = operator.index(cut)
        except TypeError:
            raise ValueError(f"cut {cut!r} is not an integer") from None
        if not 0 < index < num_layers:
            raise ValueError(
                f"cut {index} is out of range: cuts must lie in (0, {num_layers}) "
                f"for a model of {num_layers} layers"
            )
        if checked and index <= checked[-1]:
            raise ValueError(
                f"cut {index} does not follow cut {checked[-1]}: cuts must be strictly increasing"
            )
        checked.append(index)
    return checked


def part_ranges(num_layers: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """The half-open layer ranges ``[start, stop)`` of the parts made by ``cuts``."""
    bounds = [0, *check_cuts(num_layers, cuts), num_layers]
    return list(pairwise(bounds))
