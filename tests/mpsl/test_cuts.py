"""mpsl.cuts: a model's cut list checked, and the parts' layer ranges."""

import pytest

from mpsl.cuts import check_cuts, part_ranges


def test_check_cuts_accepts_good_cuts() -> None:
    assert check_cuts(1, ()) == []
    assert check_cuts(5, (1, 2, 3, 4)) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"cut 5 is out of range: cuts must lie in \(0, 5\) "
                       "for a model of 5 layers"):
        check_cuts(5, (4, 5))


def test_part_ranges_are_the_half_open_ranges_between_cuts() -> None:
    assert part_ranges(5, [2, 4]) == [(0, 2), (2, 4), (4, 5)]
    assert part_ranges(3, []) == [(0, 3)]
    with pytest.raises(ValueError, match="cut 3 is out of range"):
        part_ranges(3, [3])
