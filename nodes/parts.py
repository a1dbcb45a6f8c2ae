"""The parts a node trains: per-owner copies with optimizers, and their F, B and STEP actions."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from mpsl.models import split_model
from mpsl.models.split import full_key, part_key_map
from mpsl.plan import Plan
from mpsl.privacy import NoiseLayer
from mpsl.topology import Topology
from mpsl.training import build_full_model, make_optimizer
from nodes.memory import ActivationMeter

StateDict = dict[str, torch.Tensor]


@dataclass
class PartCopy:
    """One part's module and optimizer, for one owner (or shared by all, in SL)."""

    part: int
    start: int  # index of the part's first layer in the whole model
    module: nn.Sequential
    optimizer: torch.optim.Optimizer

    def full_state(self) -> StateDict:
        """The part's state_dict under the whole model's keys (`3.conv.weight`), a copy on
        the CPU (whatever device the part trains on)."""
        state = self.module.state_dict()
        return {full_key(self.start, k): v.detach().to("cpu", copy=True)
                for k, v in state.items()}

    def load_full_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load this part's tensors out of a state_dict under the whole model's keys."""
        keys = part_key_map(self.start, self.module)
        self.module.load_state_dict({k: state[full] for k, full in keys.items()})

    def state_bytes(self) -> int:
        """Parameters, gradients and optimizer state, as held after a step."""
        params = sum(p.numel() * p.element_size() for p in self.module.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.module.buffers())
        opt = 0
        for st in self.optimizer.state.values():
            opt += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
        return 2 * params + buffers + opt


def make_copies(
    topo: Topology, plan: Plan, parts: Iterable[int], owners: Iterable[int], shared: bool = False,
    device: str = "cpu",
) -> dict[tuple[int, int], PartCopy]:
    """Copies of `parts` for every owner, on `device`, each of its owner's plan (its cuts);
    with `shared`, one copy that all owners use (SL)."""
    full = build_full_model(topo)
    split: dict[tuple[int, ...], list[nn.Sequential]] = {}  # by cuts: owners' plans differ
    copies: dict[tuple[int, int], PartCopy] = {}
    for p in parts:
        common = None
        for k in owners:
            if shared and common is not None:
                copies[(k, p)] = common
                continue
            mine = plan.for_owner(k)
            if mine.cuts not in split:
                split[mine.cuts] = split_model(full, mine.cuts) if mine.cuts else [full]
            module = copy.deepcopy(split[mine.cuts][p]).to(device)
            module.train()
            optimizer = make_optimizer(module.parameters(), topo.training)
            made = PartCopy(p, mine.bounds[p], module, optimizer)
            copies[(k, p)] = made
            common = made
    return copies


@dataclass
class _Stash:
    inp: torch.Tensor
    out: torch.Tensor


@dataclass
class PartRunner:
    """Runs F, B and STEP on a node's copies, keeping per micro-batch what backward needs.

    The last part computes the loss: each micro-batch's mean cross-entropy weighted by its
    share of the batch (b_n / B), so accumulated gradients equal those of the whole batch.
    With a `noise` layer (mpsl.privacy), part 0's input and every other part's output (the
    activations sent on at a cut) are noised; backward is unchanged (the noise is additive).
    """

    copies: dict[tuple[int, int], PartCopy]
    last_part: int
    meter: ActivationMeter | None = None
    noise: NoiseLayer | None = None
    device: str = "cpu"  # where the copies are: inputs go there, outputs come back to the CPU
    losses: list[tuple[int, int, float]] = field(default_factory=list)  # (owner, iter, loss)
    _stash: dict[tuple[int, int, int], _Stash] = field(default_factory=dict)
    # inputs of forwards run without a graph (nodes.batched): their backward recomputes
    kept: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)

    def keep(self, owner: int, part: int, mb: int, x: torch.Tensor) -> None:
        """Keep the input of a forward run without a graph, for its backward to recompute."""
        self.kept[(owner, part, mb)] = x
        if self.meter is not None:
            self.meter.hold(x.numel() * x.element_size())

    def take_kept(self, owner: int, part: int, mb: int) -> torch.Tensor:
        """The kept input of (owner, part, mb), no longer kept."""
        x = self.kept.pop((owner, part, mb))
        if self.meter is not None:
            self.meter.hold(-x.numel() * x.element_size())
        return x

    def forward(
        self,
        owner: int,
        part: int,
        mb: int,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        weight: float = 1.0,
        iteration: int = -1,
    ) -> torch.Tensor:
        """Run the part; return its output (detached), or the weighted loss for the last part;
        with `noise`, the input of part 0 and the output of a part before the last noised."""
        module = self.copies[(owner, part)].module
        if self.noise is not None and part == 0:
            x = self.noise.on_input(x, owner, iteration, mb)
        inp = x.detach().to(self.device).requires_grad_(part > 0)
        ctx = self.meter.hooks() if self.meter is not None else contextlib.nullcontext()
        with ctx:
            out: torch.Tensor = module(inp)
            if part == self.last_part:
                if labels is None:
                    raise ValueError(f"part {part} computes the loss but got no labels")
                loss = nn.functional.cross_entropy(out, labels.to(self.device))
                self.losses.append((owner, iteration, float(loss.detach()) * weight))
                out = loss * weight
        self._stash[(owner, part, mb)] = _Stash(inp, out)
        sent = out.detach().cpu()  # the same tensor on the CPU
        if self.noise is not None and part != self.last_part:
            return self.noise.on_cut(sent, owner, part, iteration, mb)
        return sent

    def backward(
        self, owner: int, part: int, mb: int, grad: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Backward through the part; return the gradient of its input (None for part 0)."""
        s = self._stash.pop((owner, part, mb))
        if part == self.last_part:
            torch.autograd.backward(s.out)
        else:
            torch.autograd.backward(s.out, grad.to(self.device) if grad is not None else None)
        return s.inp.grad.cpu() if part > 0 and s.inp.grad is not None else None

    def step(self, owner: int, part: int) -> None:
        opt = self.copies[(owner, part)].optimizer
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forget(self, owner: int) -> None:
        """Drop what `owner`'s iterations in flight left: kept activations, losses, gradients
        (a data owner lost mid-iteration)."""
        self._stash = {k: v for k, v in self._stash.items() if k[0] != owner}
        for key in [k for k in self.kept if k[0] == owner]:
            self.take_kept(*key)
        self.losses = [e for e in self.losses if e[0] != owner]
        for (k, _), c in self.copies.items():
            if k == owner:
                c.optimizer.zero_grad(set_to_none=True)

    def forget_all(self) -> None:
        """Drop everything in flight (a rollback)."""
        self._stash.clear()
        for key in list(self.kept):
            self.take_kept(*key)
        self.losses.clear()
        for c in self.copies.values():
            c.optimizer.zero_grad(set_to_none=True)


def weighted_average(states: list[Mapping[str, torch.Tensor]], weights: list[float]) -> StateDict:
    """FedAvg: sum_k w_k * state_k / sum_k w_k, per tensor; integer buffers are rounded."""
    if not states or len(states) != len(weights):
        raise ValueError(f"{len(states)} states and {len(weights)} weights")
    total = float(sum(weights))
    out: StateDict = {}
    for key in states[0]:
        ref = states[0][key]
        if len(states) == 1:
            out[key] = ref.clone()
            continue
        if ref.is_floating_point():  # in place, one allocation per tensor
            acc = ref.mul(weights[0] / total)
            for st, w in zip(states[1:], weights[1:]):
                acc.add_(st[key], alpha=w / total)
            out[key] = acc
            continue
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for st, w in zip(states, weights):
            acc += st[key].to(torch.float64) * (w / total)
        out[key] = acc.round().to(ref.dtype)
    return out
