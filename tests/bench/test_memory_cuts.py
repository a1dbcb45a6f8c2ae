"""bench.memory's cuts: the middle layers in M contiguous parts, the largest part least."""

from __future__ import annotations

import pytest

from bench.memory import balanced_cuts
from planner.profile import LayerProfile, Profile


def _profile(param_bytes: list[int]) -> Profile:
    return Profile(tuple(LayerProfile(f"l{i}", 0.0, 0.0, 0.0, 0.0, param_bytes=b)
                         for i, b in enumerate(param_bytes)), "test")


def test_one_hop_holds_every_middle_layer() -> None:
    assert balanced_cuts(_profile([1, 5, 5, 5, 1]), 1) == (1, 4)


def test_the_largest_part_is_as_small_as_contiguity_allows() -> None:
    prof = _profile([1, 4, 1, 1, 1, 1, 4, 1])  # middle: 4 1 1 1 1 4
    assert balanced_cuts(prof, 2) == (1, 4, 7)  # [4 1 1] [1 1 4]
    assert balanced_cuts(prof, 3) == (1, 2, 6, 7)  # [4] [1 1 1 1] [4]
    assert balanced_cuts(_profile([1, 9, 1, 1, 1, 1]), 4) == (1, 2, 3, 4, 5)


def test_more_hops_than_middle_layers_is_refused() -> None:
    with pytest.raises(ValueError, match="test: 3 middle layers cannot fill 4 compute nodes"):
        balanced_cuts(_profile([1, 1, 1, 1, 1]), 4)
