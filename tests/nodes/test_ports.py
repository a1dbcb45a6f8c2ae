"""nodes.ports: free loopback ports below the ephemeral range, from this process's share."""

from __future__ import annotations

import pytest

from nodes import ports


def test_free_ports_are_bindable_and_consecutive_when_asked(monkeypatch) -> None:
    monkeypatch.delenv(ports.ENV, raising=False)
    got = ports.free_ports(5, consecutive=True)
    assert got == list(range(got[0], got[0] + 5)) and got[0] >= ports.LOWEST
    assert len(set(ports.free_ports(7))) == 7


def test_shares_split_the_range_and_free_ports_stay_in_theirs(monkeypatch) -> None:
    shares = [ports.share(i, 6) for i in range(6)]
    bounds = [tuple(int(x) for x in s.split("-")) for s in shares]
    assert bounds[0][0] == ports.LOWEST
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(bounds, bounds[1:]))
    for s, (low, top) in zip(shares, bounds):
        monkeypatch.setenv(ports.ENV, s)
        assert all(low <= p < top for _ in range(20) for p in ports.free_ports(3, True))


def test_a_bad_share_is_named(monkeypatch) -> None:
    monkeypatch.setenv(ports.ENV, "lots")
    with pytest.raises(ValueError, match="MPSL_PORT_RANGE='lots': expected LOW-TOP"):
        ports.free_ports(1)
