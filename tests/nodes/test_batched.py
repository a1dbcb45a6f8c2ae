"""Batched per-owner copies (nodes.folding, nodes.batched) against each copy on its own: bitwise
equal forward, backward and optimizer step, for vgg, resnet and mobilenet with GroupNorm and
without a norm; and on a compute node, the same messages sent and weights kept as with
`batch_owners: off`."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import pytest
import torch
from torch import nn

from mpsl.models import build_model, split_model
from mpsl.names import CPU
from mpsl.topology import TopologyError, parse
from mpsl.training import build_full_model
from nodes.compute import ComputeNode
from nodes.folded_loss import FoldedLoss, folded_nll
from nodes.folding import FoldedPart, fold, gather, split
from nodes.wire import Kind, Message
from tests.nodes.conftest import small_topology

K = 3  # owners
SLOW = os.environ.get("MPSL_SLOW") == "1"
FAMILIES = [  # model, cuts, the part the compute node runs (image 16x16, 3 channels)
    pytest.param("vgg11", [3], 1, marks=pytest.mark.skipif(  # dense layers, the loss
        not SLOW, reason="slow (about 20 s): vgg11's dense layers; MPSL_SLOW=1")),
    ("vgg11", [2, 5], 1),  # a middle part
    ("resnet18", [3, 5], 1),  # residual blocks with a strided 1x1 shortcut
    ("resnet18", [7], 1),  # the last stage, global pool, the loss
    ("mobilenetv3_small", [4, 8], 1),  # depthwise convs, squeeze-excite, hardswish
    ("mobilenetv3_small", [9], 1),
    ("mlp", [1, 3], 1),  # features, not maps
]


def copies(name: str, norm: str, cuts: list[int], part: int
           ) -> tuple[list[nn.Module], torch.Size, bool]:
    """K different copies of one part (as after some training), its input shape, whether it
    is the last part (the loss)."""
    torch.manual_seed(0)
    full = build_model(name, 10, 3, 16, norm)
    parts = split_model(full, cuts)
    made = []
    for _ in range(K):
        m = copy.deepcopy(parts[part]).train()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        made.append(m)
    with torch.no_grad():
        x = nn.Sequential(*parts[:part]).eval()(torch.randn(4, 3, 16, 16))
    return made, x.shape, part == len(parts) - 1


def alone(mods: list[nn.Module], xs: list[torch.Tensor], ys: list[torch.Tensor],
          gys: list[torch.Tensor], last: bool) -> list[torch.Tensor]:
    """Each copy on its own, as PartRunner runs it: output (or loss), input and parameter
    gradients, buffers."""
    got: list[torch.Tensor] = []
    for m, x, y, gy in zip(mods, xs, ys, gys):
        x = x.clone().requires_grad_(True)
        out = m(x)
        if last:
            out = nn.functional.cross_entropy(out, y) * 0.5
            out.backward()
        else:
            out.backward(gy)
        got += [out.detach(), x.grad, *(p.grad for p in m.parameters()), *m.buffers()]
    return got


def batched(mods: list[nn.Module], xs: list[torch.Tensor], ys: list[torch.Tensor],
            gys: list[torch.Tensor], last: bool) -> list[torch.Tensor]:
    """The same in one folded call (the copies' tensors moved into a stack)."""
    leaves = [x.clone().requires_grad_(True) for x in xs]
    part = FoldedPart(mods)
    call = part.run(range(len(mods)), leaves)
    outs = split(call.out, len(mods))
    if last:
        outs = [nn.functional.cross_entropy(o, y) * 0.5 for o, y in zip(outs, ys)]
        torch.autograd.backward(outs)
    else:
        torch.autograd.backward(outs, gys)
    part.settle(call)
    got: list[torch.Tensor] = []
    for m, x, out in zip(mods, leaves, outs):
        got += [out.detach(), x.grad, *(p.grad for p in m.parameters()), *m.buffers()]
    return got


def assert_bitwise(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and torch.equal(a, b), (i, (a - b).abs().max())


@pytest.mark.parametrize("norm", ["none", "group"])
@pytest.mark.parametrize("name, cuts, part", FAMILIES)
def test_folded_forward_backward_step_equal_each_copy_alone(name, cuts, part, norm):
    mods, shape, last = copies(name, norm, cuts, part)
    twins = [copy.deepcopy(m) for m in mods]
    xs = [torch.randn(shape) for _ in range(K)]
    ys = [torch.randint(0, 10, (shape[0],)) for _ in range(K)]
    with torch.no_grad():
        gys = [torch.randn_like(mods[0](xs[0])) for _ in range(K)]
    for _ in range(2):  # the second pass starts from stepped weights and momenta
        want = alone(mods, xs, ys, gys, last)
        got = batched(twins, xs, ys, gys, last)
        assert_bitwise(got, want)
        for m in mods + twins:
            opt = m.opt if hasattr(m, "opt") else torch.optim.SGD(m.parameters(), 0.1, 0.9)
            m.opt = opt
            opt.step()
            opt.zero_grad()
        for a, b in zip(mods, twins):
            assert_bitwise(list(b.state_dict().values()), list(a.state_dict().values()))


def test_batchnorm_running_statistics_are_each_copys():
    mods, shape, last = copies("vgg11", "batch", [3], 1)
    twins = [copy.deepcopy(m) for m in mods]
    xs = [torch.randn(shape) for _ in range(K)]
    ys = [torch.randint(0, 10, (shape[0],)) for _ in range(K)]
    none = [torch.empty(0)] * K  # the last part: no gradient from a next one
    assert_bitwise(batched(twins, xs, ys, none, last), alone(mods, xs, ys, none, last))
    assert all(int(b) == 1 for m in twins for n, b in m.named_buffers() if "tracked" in n)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_copies_that_are_not_neighbours_in_the_stack_fold_too(norm):
    mods, shape, last = copies("vgg11", norm, [2, 5], 1)
    want_mods = [copy.deepcopy(m) for m in mods]
    xs = [torch.randn(shape) for _ in range(K)]
    with torch.no_grad():
        gys = [torch.randn_like(copy.deepcopy(mods[0]).eval()(xs[0])) for _ in range(K)]
    order = [2, 0]  # not consecutive, not ascending: tensors are copied, buffers written back
    want = alone([want_mods[k] for k in order], [xs[k] for k in order],
                 [torch.empty(0)] * len(order), [gys[k] for k in order], last)
    part = FoldedPart(mods)
    leaves = [xs[k].clone().requires_grad_(True) for k in order]
    call = part.run(order, leaves)
    outs = split(call.out, len(order))
    torch.autograd.backward(outs, [gys[k] for k in order])
    part.settle(call)
    got: list[torch.Tensor] = []
    for k, x, out in zip(order, leaves, outs):
        m = mods[k]
        got += [out.detach(), x.grad, *(p.grad for p in m.parameters()), *m.buffers()]
    assert_bitwise(got, want)
    assert all(p.grad is None for p in mods[1].parameters())


def test_a_copy_whose_tensor_was_replaced_is_stacked_again():
    mods, shape, last = copies("vgg11", "group", [2, 5], 1)
    part = FoldedPart(mods)
    weight = mods[1].get_submodule("0.conv").weight
    weight.data = weight.data.clone().mul_(2)  # no longer a view of the stack
    want_mods = [copy.deepcopy(m) for m in mods]
    xs = [torch.randn(shape) for _ in range(K)]
    with torch.no_grad():
        want = [m(x) for m, x in zip(want_mods, xs)]
        got = split(part.run(range(K), xs).out, K)
    assert_bitwise(got, want)
    assert weight.data_ptr() == part.stack.tensors["0.conv.weight"][1].data_ptr()


SGD = [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9},
       {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
       {"lr": 0.05, "momentum": 0.5, "dampening": 0.1, "maximize": True}]


@pytest.mark.parametrize("settings", SGD)
def test_one_sgd_step_on_the_stack_is_each_copys_own(settings):
    mods, shape, last = copies("vgg11", "none", [2, 5], 1)
    alone_mods = [copy.deepcopy(m) for m in mods]
    part = FoldedPart(mods)
    opts = [torch.optim.SGD(m.parameters(), **settings) for m in mods]
    alone_opts = [torch.optim.SGD(m.parameters(), **settings) for m in alone_mods]
    for step in range(3):
        xs = [torch.randn(shape) for _ in range(K)]
        for mb in range(2):  # two micro-batches: the second adds to the stacked gradients
            call = part.run(range(K), xs)
            torch.autograd.backward(call.out, torch.ones_like(call.out) * (mb + 1))
            part.settle(call)
            for m, x in zip(alone_mods, xs):
                m(x).backward(torch.ones_like(m(x)) * (mb + 1))
        assert part.stack.sgd_step(range(K), opts), step
        for opt in alone_opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        for a, b, oa, ob in zip(mods, alone_mods, opts, alone_opts):
            assert_bitwise(list(a.state_dict().values()), list(b.state_dict().values()))
            assert all(p.grad is None for p in a.parameters())
            bufs = [(oa.state[p].get("momentum_buffer"), ob.state[q].get("momentum_buffer"))
                    for p, q in zip(a.parameters(), b.parameters())]
            assert all((u is None) == (v is None) for u, v in bufs)
            assert_bitwise([u for u, _ in bufs if u is not None],
                           [v for _, v in bufs if v is not None])


def test_the_stacked_step_declines_what_it_would_not_do_alike():
    mods, shape, _ = copies("vgg11", "none", [2, 5], 1)
    part = FoldedPart(mods)
    call = part.run(range(K), [torch.randn(shape) for _ in range(K)])
    call.out.sum().backward()
    part.settle(call)
    sgd = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in mods]
    adam = [torch.optim.Adam(m.parameters()) for m in mods]
    other_lr = sgd[:-1] + [torch.optim.SGD(mods[-1].parameters(), lr=0.2, momentum=0.9)]
    assert not part.stack.sgd_step(range(K), adam)
    assert not part.stack.sgd_step(range(K), other_lr)
    assert not part.stack.sgd_step([0, 2], [sgd[0], sgd[2]])  # not neighbours
    mods[1].get_submodule("0.conv").weight.grad = None  # SGD would skip it for copy 1 only
    before = [p.clone() for p in mods[0].parameters()]
    assert not part.stack.sgd_step(range(K), sgd)
    assert all(torch.equal(a, b) for a, b in zip(before, mods[0].parameters()))


@pytest.mark.parametrize("b", [1, 3, 8, 16, 17, 40, 300])
def test_the_folded_loss_is_each_owners_cross_entropy(b):
    """Sums past 16 and 256 terms go through torch's cascade of partial sums."""
    g = torch.Generator().manual_seed(b)
    logits = torch.randn(K * b, 10, generator=g) * 30
    labels = list(torch.randint(0, 10, (K * b,), generator=g).chunk(K))
    weights = [0.25, 0.5, 1.0]
    got, want = [], []
    for run, out in ((folded_nll, got), (None, want)):
        x = logits.clone().requires_grad_(True)
        if run is None:  # as PartRunner: each owner alone, times its weight
            losses = [nn.functional.cross_entropy(r, y) for r, y in zip(x.view(K, b, 10), labels)]
            torch.autograd.backward([v * w for v, w in zip(losses, weights)])
            out += [torch.stack([v.detach() for v in losses]), x.grad]
        else:
            losses = run(x, labels)
            weighted = losses * torch.tensor(weights)
            torch.autograd.backward(weighted, torch.ones_like(weighted))
            out += [losses.detach(), x.grad]
    assert_bitwise(got, want)
    # whichever the probe picks (by speed, here), the losses are the owners' own
    values = FoldedLoss()(logits, labels)
    assert_bitwise([values], [want[0]])


def test_folding_lays_owners_side_by_side_and_back():
    maps = [torch.randn(2, 3, 4, 4) for _ in range(K)]
    rows = [torch.randn(2, 5) for _ in range(K)]
    assert gather(maps).shape == (2, 3 * K, 4, 4) and gather(rows).shape == (2 * K, 5)
    for xs in (maps, rows):
        back = split(gather(xs), K)
        assert all(torch.equal(a, b) and b.is_contiguous() for a, b in zip(xs, back))


def test_a_layer_it_does_not_know_keeps_the_part_unbatched():
    assert fold(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout()), 2) is None
    assert fold(nn.Sequential(nn.Conv2d(3, 4, 3, padding_mode="circular")), 2) is None
    assert fold(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()), 2) is not None


# on a compute node ----------------------------------------------------------------------------
B, N = 8, 2


def node_pair(shut, **extra: Any) -> tuple[ComputeNode, ComputeNode, list[list[Any]]]:
    """Two compute nodes of the same topology, `batch_owners` auto and off, whose sends are
    recorded (destination, kind, and every keyword) instead of sent."""
    nodes, sent = [], []
    for mode in ("auto", "off"):
        topo, plan = small_topology(owners=K, **extra)
        spec = dataclasses.replace(topo.compute_nodes[0], batch_owners=mode)
        node = shut(ComputeNode(dataclasses.replace(topo, compute_nodes=(spec,)), plan,
                                "node1"))
        log: list[Any] = []
        node.send = lambda dst, kind, log=log, **kw: log.append(  # type: ignore[method-assign]
            (dst, kind, kw))
        nodes.append(node)
        sent.append(log)
    return nodes[0], nodes[1], sent


def work(kind: Kind, owner: int, it: int, mb: int, x: torch.Tensor, part: int = 1,
         labels: bool = True) -> Message:
    g = torch.Generator().manual_seed(100 * owner + 10 * it + mb)
    tensors = {"x" if kind == Kind.ACT else "g": torch.randn(x.shape, generator=g)}
    if kind == Kind.ACT and labels:
        tensors["y"] = torch.randint(0, 10, (x.shape[0],), generator=g)
    return Message(kind=kind, src=f"owner{owner}", owner=owner, iter=it, mb=mb,
                   tensors=tensors, meta={"part": part, "n_mb": N, "batch": B, "epoch": 0})


def feed(node: ComputeNode, msgs: list[Message], together: bool) -> None:
    """Deliver messages one by one (each served at once), or all before serving."""
    for m in msgs:
        if together:
            assert node.rules.check(m, node.run_id) is None
            node.route_one(m)
        else:
            assert node.dispatch(m)
    node.serve()


def same_sends(got: list[Any], want: list[Any]) -> None:
    """The same messages (in any order across owners), tensors bitwise."""
    def key(s: Any) -> tuple[Any, ...]:
        return (s[0], s[1], s[2].get("owner"), s[2].get("iteration"), s[2].get("mb"))

    assert sorted(map(key, got)) == sorted(map(key, want))
    by_key = {key(s): s[2] for s in want}
    for s in got:
        a, b = s[2], by_key[key(s)]
        assert {k: v for k, v in a.items() if k != "tensors"} == \
            {k: v for k, v in b.items() if k != "tensors"}
        ta, tb = a.get("tensors") or {}, b.get("tensors") or {}
        assert ta.keys() == tb.keys()
        assert_bitwise(list(ta.values()), list(tb.values()))


MOMENTUM = {"epochs": 1, "batch_size": B, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9,
            "seed": 0}


@pytest.mark.parametrize("model", [{"name": "vgg5", "norm": "none"},
                                   {"name": "vgg5", "norm": "group"}, {"name": "mlp"}])
def test_a_batched_node_sends_and_trains_as_one_without(shut, model):
    """PiPar: the last part (F, B, GRAD, STEP in a task) of K owners, three iterations (SGD
    with momentum: the stacked step makes the buffers, then updates them)."""
    on, off, (sent_on, sent_off) = node_pair(shut, model=model, training=MOMENTUM)
    shape = _input_shape(off)
    for it in range(3):
        msgs = [work(Kind.ACT, k, it, mb, torch.empty(shape)) for mb in range(N)
                for k in range(K)]
        feed(on, msgs, together=True)
        feed(off, msgs, together=False)
    same_sends(sent_on, sent_off)
    for k in range(K):
        assert_bitwise(list(on.copies[(k, 1)].module.state_dict().values()),
                       list(off.copies[(k, 1)].module.state_dict().values()))
    assert on.batcher is not None and on.batcher.calls == {K: 3 * N}
    assert off.batcher is None
    # each task still has its own events, on its owner and iteration
    events = sorted((e.action, e.owner, e.iter) for e in on.events if e.resource == CPU)
    assert events == sorted((e.action, e.owner, e.iter) for e in off.events
                            if e.resource == CPU)


def test_a_middle_part_recomputes_its_batched_forward_for_the_backward(shut):
    """MP-SL U-shape: F and B of node1's part come in separate tasks."""
    extra = {"model": {"name": "vgg5", "norm": "group"}, "mode": "mpsl", "labels": "local",
             "plan": {"cuts": [1, 3], "micro_batches": N}, "training": MOMENTUM}
    on, off, (sent_on, sent_off) = node_pair(shut, **extra)
    shape = _input_shape(off)
    acts = [work(Kind.ACT, k, 0, mb, torch.empty(shape), labels=False) for mb in range(N)
            for k in range(K)]
    feed(on, acts, together=True)
    feed(off, acts, together=False)
    out = sent_off[0][2]["tensors"]["x"]
    grads = [work(Kind.GRAD, k, 0, mb, out) for mb in range(N) for k in range(K)]
    feed(on, grads[:1], together=True)  # one alone, then the rest together
    feed(on, grads[1:], together=True)
    feed(off, grads, together=False)
    same_sends(sent_on, sent_off)
    for k in range(K):
        assert_bitwise(list(on.copies[(k, 1)].module.state_dict().values()),
                       list(off.copies[(k, 1)].module.state_dict().values()))
    assert on.runner.kept == {}
    assert on.batcher is not None and on.batcher.calls == {K: N + 1, K - 1: 1, 1: 1}


def _input_shape(node: ComputeNode) -> torch.Size:
    """The shape of an ACT for the node's part, for micro-batches of B / N digits."""
    full = build_full_model(node.topo)
    first = split_model(full, node.plan.cuts)[0]
    with torch.no_grad():
        return first.eval()(torch.zeros(B // N, 1, 8, 8)).shape


# the setting -------------------------------------------------------------------------------
def test_batch_owners_is_auto_or_off():
    topo, _ = small_topology()
    doc = {"name": "node1", "address": topo.address_of("node1")}
    for given, want in ((None, "off"), ("auto", "auto"), ("off", "off"), (False, "off")):
        node = dict(doc) if given is None else dict(doc, batch_owners=given)
        assert _parse_with(node).compute_nodes[0].batch_owners == want
    with pytest.raises(TopologyError, match="batch_owners") as err:
        _parse_with(dict(doc, batch_owners="on"))
    assert "\n" not in str(err.value) and "auto or off" in str(err.value)


def _parse_with(node: dict[str, Any]) -> Any:
    topo, _ = small_topology()
    doc = {"name": "unit", "model": {"name": "mlp", "norm": "none"},
           "dataset": {"name": "digits"}, "training": {"batch_size": 8},
           "plan": {"cuts": [2], "micro_batches": 2},
           "data_owners": {"count": 1, "base_port": 6000},
           "compute_nodes": [node], "aggregator": {"address": "tcp://127.0.0.1:5999"}}
    return parse(doc, "unit.yaml")
