"""The topology's `failure` field: defaults derived from the nodes' own waits, and the one-line
errors of values that could not work."""

from __future__ import annotations

from typing import Any

import pytest

from mpsl.topology import FailureSpec, TopologyError, parse
from tests.mpsl.test_security_spec import BASE


def topo(**sections: Any):
    return parse({**BASE, **sections}, "t.yaml")


def test_defaults_follow_runtime_timeout() -> None:
    assert topo().failure == FailureSpec(heartbeat_s=1.0, timeout_s=20.0, restart=False)
    assert topo(runtime={"timeout_s": 6}).failure == FailureSpec(0.75, 3.0, False)


def test_given_values_are_kept() -> None:
    got = topo(failure={"heartbeat_s": 0.5, "timeout_s": 5, "restart": True}).failure
    assert got == FailureSpec(0.5, 5.0, True)
    assert topo(failure={"checkpoint": True}).failure.checkpoint is True


@pytest.mark.parametrize("failure, runtime, field, message", [
    ({"timeout_s": 2, "heartbeat_s": 1}, {}, "failure.timeout_s",
     "more than twice heartbeat_s (1)"),
    ({"timeout_s": 30}, {"timeout_s": 30}, "failure.timeout_s",
     "less than runtime.timeout_s (30)"),
    ({"heartbeat_s": 0}, {}, "failure.heartbeat_s", "expected a positive number"),
    ({"restart": "yes"}, {}, "failure.restart", "true or false"),
    ({"checkpoint": 1}, {}, "failure.checkpoint", "true or false"),
    ({"retries": 3}, {}, "failure.retries",
     "known: checkpoint, deadline_s, heartbeat_s, min_owners, restart, timeout_s"),
])
def test_values_that_cannot_work_are_one_line(failure, runtime, field, message) -> None:
    with pytest.raises(TopologyError) as err:
        topo(failure=failure, runtime=runtime or {"timeout_s": 120})
    text = str(err.value)
    assert text.startswith("t.yaml: field '" + field + "'") and "\n" not in text
    assert message in text


def test_stragglers_need_min_owners_and_a_deadline_together() -> None:
    got = topo(failure={"min_owners": 1, "deadline_s": 0.5}).failure
    assert (got.min_owners, got.deadline_s) == (1, 0.5)
    for given, missing in (({"min_owners": 1}, "deadline_s"), ({"deadline_s": 1}, "min_owners")):
        with pytest.raises(TopologyError, match=rf"^t.yaml: field 'failure.{missing}': .*"
                                                r"min_owners and deadline_s together"):
            topo(failure=given)
    with pytest.raises(TopologyError, match=r"^t.yaml: field 'failure.min_owners': got 3, "
                                            r"expected at most the 2 data owner\(s\)$"):
        topo(failure={"min_owners": 3, "deadline_s": 1})
