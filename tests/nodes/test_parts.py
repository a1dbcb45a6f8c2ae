"""Per-owner part copies, FedAvg, and the activation meter."""

from __future__ import annotations

import gc

import pytest
import torch

from mpsl.topology import TrainingSpec
from mpsl.training import make_optimizer
from nodes.memory import ActivationMeter, peak_rss_bytes
from nodes.parts import PartCopy, PartRunner, weighted_average


def test_weighted_average_weights_by_samples():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(20)}
    avg = weighted_average([a, b], [1, 3])
    torch.testing.assert_close(avg["w"], torch.tensor([2.5, 5.0]))
    assert avg["n"].dtype == torch.int64 and int(avg["n"]) == 18  # 17.5 rounds to even
    assert avg["w"].dtype == torch.float32


def test_weighted_average_of_one_is_exact_and_a_copy():
    a = {"w": torch.randn(5)}
    avg = weighted_average([a], [7])
    assert torch.equal(avg["w"], a["w"]) and avg["w"].data_ptr() != a["w"].data_ptr()


def test_weighted_average_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 states and 1 weights"):
        weighted_average([{}, {}], [1])


def _copy(module: torch.nn.Sequential, start: int) -> PartCopy:
    spec = TrainingSpec(lr=0.1)
    return PartCopy(0, start, module, make_optimizer(module.parameters(), spec))


def test_full_state_uses_the_whole_models_keys():
    part = _copy(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), start=3)
    state = part.full_state()
    assert set(state) == {"3.weight", "3.bias"}
    state["3.weight"].fill_(1.0)
    part.load_full_state(state)
    assert torch.equal(part.module[0].weight, torch.ones(2, 2))


def test_runner_weights_the_loss_and_returns_the_input_gradient():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3))
    runner = PartRunner({(0, 1): _copy(module, 0)}, last_part=1)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    loss = runner.forward(0, 1, 0, x, y, weight=0.5, iteration=7)
    grad = runner.backward(0, 1, 0)
    ref_x = x.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(module(ref_x), y) * 0.5
    module.zero_grad()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, ref_x.grad)
    assert runner.losses == [(0, 7, pytest.approx(float(ref.detach())))]  # weighted: b_n/B


def test_activation_meter_counts_saved_storages_once_and_releases_them():
    meter = ActivationMeter()
    lin = torch.nn.Linear(256, 256)
    meter.exclude(lin.parameters())
    x = torch.randn(64, 256, requires_grad=True)
    with meter.hooks():
        out = torch.relu(lin(x))  # saves x (64x256) and the relu output (64x256)
    assert meter.live == 2 * 64 * 256 * 4
    assert meter.peak == meter.live
    out.sum().backward()
    del out
    gc.collect()
    assert meter.live == 0 and meter.peak == 2 * 64 * 256 * 4


def test_peak_rss_is_plausible():
    assert 10 * 2**20 < peak_rss_bytes() < 64 * 2**30
