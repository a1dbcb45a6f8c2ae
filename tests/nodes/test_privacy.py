"""Differential privacy on the nodes: the noise layer in PartRunner.forward, and the data
owner's clipped, noised upload (its delta from the last global model)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mpsl.actions import Msg
from mpsl.privacy import UPDATE, NoiseLayer, generator, privatize, update_norm
from mpsl.topology import TrainingSpec
from mpsl.training import make_optimizer
from nodes.data_owner import DataOwner
from nodes.parts import PartCopy, PartRunner
from nodes.wire import Kind, Message
from tests.nodes.conftest import small_topology


def runner(noise: NoiseLayer | None, seed: int = 0) -> PartRunner:
    torch.manual_seed(seed)
    copies = {}
    for part, module in enumerate([torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU()),
                                   torch.nn.Sequential(torch.nn.Linear(6, 3))]):
        copies[(0, part)] = PartCopy(part, part, module,
                                     make_optimizer(module.parameters(), TrainingSpec(lr=0.1)))
    return PartRunner(copies, last_part=1, noise=noise)


def test_the_noise_layer_noises_the_input_and_the_cut_and_leaves_backward_alone() -> None:
    layer = NoiseLayer(pixel_sigma=0.3, cut_sigma=0.7, seed=9)
    noisy, clean = runner(layer), runner(None)
    x = torch.randn(5, 4)
    out = noisy.forward(0, 0, 1, x, iteration=4)
    module = clean.copies[(0, 0)].module
    x_noised = layer.on_input(x, 0, 4, 1)
    assert not torch.equal(x_noised, x)
    want = layer.on_cut(module(x_noised).detach(), 0, 0, 4, 1)
    torch.testing.assert_close(out, want)
    # the sent activations carry the noise; the gradient of the part is that of its output
    g = torch.randn(5, 6)
    noisy.backward(0, 0, 1, g)
    ref = module(x_noised)
    torch.autograd.backward(ref, g)
    for p, q in zip(noisy.copies[(0, 0)].module.parameters(), module.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_the_last_part_gets_no_cut_noise_and_no_layer_changes_nothing() -> None:
    layer = NoiseLayer(pixel_sigma=0.0, cut_sigma=5.0, seed=9)
    noisy, clean = runner(layer), runner(None)
    h, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(noisy.forward(0, 1, 0, h, y, iteration=2),
                       clean.forward(0, 1, 0, h, y, iteration=2))
    x = torch.randn(5, 4)
    plain = runner(None).forward(0, 0, 0, x, iteration=2)
    assert torch.equal(plain, clean.forward(0, 0, 0, x, iteration=2))


def sent_params(owner: DataOwner, monkeypatch: pytest.MonkeyPatch,
                round_id: int) -> dict[str, torch.Tensor]:
    sent: list[tuple[str, Any, dict[str, Any]]] = []
    monkeypatch.setattr(owner, "send", lambda dst, kind, **kw: sent.append((dst, kind, kw)))
    owner.upload(round_id, epoch_end=False)
    (params,) = [kw["tensors"] for _, kind, kw in sent if kind == Msg.PARAMS]
    return dict(params)


def local_state(owner: DataOwner) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for p in owner.parts:
        state.update(owner.copies[(owner.index, p)].full_state())
    return state


def train_a_little(owner: DataOwner, scale: float) -> None:
    with torch.no_grad():
        for c in owner.copies.values():
            for p in c.module.parameters():
                p.add_(scale * torch.randn_like(p))


def test_the_owner_uploads_its_clipped_noised_delta_seeded_by_owner_and_round(
        shut: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    privacy = {"clip_norm": 0.5, "noise_multiplier": 0.8, "noise_seed": 5}
    topo, plan = small_topology(owners=2, privacy=privacy)
    owner = shut(DataOwner(topo, plan, 1))
    start = dict(owner.reference)
    assert set(start) == set(local_state(owner))  # mlp without norm: parameters only
    train_a_little(owner, 0.1)
    local = local_state(owner)
    assert update_norm(local, start) > 0.5
    params = sent_params(owner, monkeypatch, round_id=3)
    want, _ = privatize(local, start, 0.5, 0.8, generator(5, UPDATE, 1, 3))
    assert params.keys() == want.keys()
    for k in want:
        assert torch.equal(params[k], want[k]), k
    clipped, _ = privatize(local, start, 0.5, 0.0, generator(0))
    assert update_norm(clipped, start) == pytest.approx(0.5, rel=1e-5)
    noise = torch.cat([(params[k] - clipped[k]).flatten() for k in start])
    n = noise.numel()  # about 2,400 draws of std 0.4: 5 standard errors are 7%
    assert noise.std().item() == pytest.approx(0.4, rel=5 / (2 * n) ** 0.5)
    for c in owner.copies.values():  # the owner's own model is not changed by its upload
        for k, v in c.full_state().items():
            assert torch.equal(v, local[k])


def test_the_delta_is_from_the_last_global_model(shut: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    topo, plan = small_topology(owners=1, privacy={"clip_norm": 100.0})
    owner = shut(DataOwner(topo, plan, 0))
    train_a_little(owner, 0.1)
    glob = {k: v + 1.0 for k, v in local_state(owner).items()}
    message = Message(kind=Kind.GLOBAL, src="aggregator", owner=0, iter=0, tensors=glob)
    monkeypatch.setattr(owner, "recv", lambda match, what, deadline=None: message)
    owner.download(0)
    assert all(torch.equal(owner.reference[k], glob[k]) for k in owner.reference)
    train_a_little(owner, 0.01)
    local = local_state(owner)
    params = sent_params(owner, monkeypatch, round_id=1)  # within the clip, no noise: as is
    assert all(torch.equal(params[k], local[k]) for k in local)


@pytest.mark.parametrize("privacy", [None, {"noise_multiplier": 0, "pixel_sigma": 0,
                                            "cut_sigma": 0, "delta": 1e-3}])
def test_privacy_off_uploads_the_state_as_it_is(shut: Any, monkeypatch: pytest.MonkeyPatch,
                                                privacy: Any) -> None:
    extra = {} if privacy is None else {"privacy": privacy}
    topo, plan = small_topology(owners=1, **extra)
    owner = shut(DataOwner(topo, plan, 0))
    assert owner.runner.noise is None and owner.reference == {}
    train_a_little(owner, 1.0)
    local = local_state(owner)
    params = sent_params(owner, monkeypatch, round_id=0)
    assert all(torch.equal(params[k], local[k]) for k in local)


def test_a_compute_node_noises_the_activations_it_sends_on(shut: Any) -> None:
    """U-shape: node1 runs a middle part, whose output goes back to the owner: that cut is
    noised as an owner's is (same seed stream, this node's part); without privacy, nothing."""
    from nodes.compute import ComputeNode

    privacy = {"cut_sigma": 0.5, "noise_seed": 11}
    topo, plan = small_topology(owners=1, labels="local", plan={"cuts": [1, 3],
                                                                "micro_batches": 1},
                                privacy=privacy)
    node = shut(ComputeNode(topo, plan, "node1"))
    assert node.runner.noise == NoiseLayer(pixel_sigma=0.0, cut_sigma=0.5, seed=11)
    x = torch.randn(4, 64)
    module = node.copies[(0, 1)].module
    out = node.runner.forward(0, 1, 0, x, None, iteration=3)
    want = NoiseLayer(0.0, 0.5, 11).on_cut(module(x).detach(), 0, 1, 3, 0)
    assert torch.equal(out, want) and not torch.equal(out, module(x).detach())
    plain_topo, plain_plan = small_topology(owners=1, labels="local",
                                            plan={"cuts": [1, 3], "micro_batches": 1})
    assert shut(ComputeNode(plain_topo, plain_plan, "node1")).runner.noise is None
