"""Compute nodes on a device (`compute_nodes[].device`) train as on the CPU: the runs of
test_equivalence and test_batched with every compute node's copies on `cpu` (here) and on
`cuda` (where torch sees a CUDA device; `bench/gpu_check.sh` runs this file on a GPU machine).

A GPU sums in another order than the CPU: weights agree to a tolerance there, not bitwise.
TF32 is off in every process of a GPU run (`NVIDIA_TF32_OVERRIDE=0`, which its nodes, started
as subprocesses, inherit), so float32 stays float32.
"""

from __future__ import annotations

import pytest
import torch

from tests.e2e.conftest import topology_doc
from tests.e2e.test_batched import _largest_call
from tests.e2e.test_equivalence import train_unsplit, trained

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="torch sees no CUDA device here"))]
RTOL, ATOL = 1e-4, 1e-5  # float32 summed in another order, three SGD steps with momentum


@pytest.fixture(autouse=True)
def _float32_on_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")  # read by CUDA's libraries, per process


def _method(device: str) -> str:
    """How the run starts its nodes: on a GPU as subprocesses, which inherit this process's
    environment now (a fork server an earlier test started keeps the one it had)."""
    return "forkserver" if device == "cpu" else "subprocess"


def _on(doc: dict, device: str, **node: object) -> dict:
    for c in doc["compute_nodes"]:
        c.update(device=device, **node)
    return doc


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].device.type == "cpu", f"{k}: the run's weights load on any machine"
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL, msg=k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode, labels, cuts, compute", [("pipar", "shared", [2], 1),
                                                         ("mpsl", "local", [1, 2, 4], 2)])
def test_compute_nodes_on_a_device_train_as_unsplit(run_topology, tmp_path, device, mode, labels,
                                                    cuts, compute):
    doc = _on(topology_doc(owners=1, compute=compute, mode=mode, labels=labels,
                           model={"name": "vgg5", "norm": "none"},
                           training={"max_iterations": 3},
                           plan={"cuts": cuts, "micro_batches": 4}), device)
    run_topology(doc, method=_method(device))
    _assert_close(trained(tmp_path / "run"), train_unsplit(tmp_path / "test.yaml", 0, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_copies_on_a_device_train_as_sequential_ones(run_topology, tmp_path, device):
    """As test_batched's: the batched run is repeated (at most three times) until the server
    ran two owners or more in one call."""
    weights, largest = [], []
    for batch in ("auto", "off"):
        for _ in range(3 if batch == "auto" else 1):
            doc = _on(topology_doc(owners=4, model={"name": "vgg5", "norm": "group"},
                                   training={"max_iterations": 2, "batch_size": 16},
                                   plan={"cuts": [2], "micro_batches": 4}),
                      device, batch_owners=batch, compute_scale=2)
            doc["name"] = f"batched_{batch}"
            _, out = run_topology(doc, method=_method(device))
            if (_largest_call(out) or 0) >= 2:
                break
        weights.append(trained(out))
        largest.append(_largest_call(out))
    _assert_close(weights[0], weights[1])
    assert largest[0] is not None and largest[0] >= 2 and largest[1] is None  # it did batch
