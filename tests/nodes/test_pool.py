"""How many data owners share a process: the topology's `per_process`, or one each while the
machine's memory allows it."""

from __future__ import annotations

import pytest

from mpsl.names import group_name, owner_group
from mpsl.topology import TopologyError
from nodes.pool import PROCESS_MB, owners_per_process
from tests.nodes.conftest import small_topology


def test_groups_of_owner_names_read_and_write_back() -> None:
    assert owner_group("owner3") == ["owner3"]
    assert owner_group("owner0..owner3") == ["owner0", "owner1", "owner2", "owner3"]
    assert owner_group("owner0,owner5..owner6") == ["owner0", "owner5", "owner6"]
    assert group_name(["owner4", "owner5", "owner6"]) == "owner4..owner6"
    assert group_name(["owner0", "owner5"]) == "owner0,owner5"
    assert group_name(["owner2"]) == "owner2"
    for bad in ("node1", "owner3..owner1", "owner0..node1", "owner0,owner0", ""):
        with pytest.raises(ValueError, match="not an owner group|named twice"):
            owner_group(bad)


def test_per_process_is_given_or_fits_the_memory() -> None:
    topo, _ = small_topology(owners=2)
    assert topo.owners_per_process is None
    assert owners_per_process(topo, available_mb=64 * 1024) == 1  # a process each fits
    assert owners_per_process(topo, available_mb=2 * PROCESS_MB) == 2  # one process for both
    given, _ = small_topology(owners=2, data_owners={"count": 2, "per_process": 2})
    assert owners_per_process(given, available_mb=64 * 1024) == 2
    with pytest.raises(TopologyError, match="data_owners.per_process"):
        small_topology(owners=2, data_owners={"count": 2, "per_process": 0})
