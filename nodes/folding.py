"""Folding: one call runs g owners' micro-batches through their own copies of a part.

The g owners' activations lie side by side: maps along the channel axis, (b, C, H, W) each
into one (b, g*C, H, W); features along the rows, (b, F) each into one (g*b, F) (`gather`,
`split`). The part runs once on a *folded twin* (`fold`): the same module tree whose leaves
take the g copies' tensors concatenated along their first axis. A convolution becomes one
with g times the groups, a GroupNorm one with g times the groups, a BatchNorm one over g*C
channels (running statistics gathered, then written back to each copy), a Linear one batched
matmul, a Flatten a change from channels to rows; activations, pools and residual sums are
per channel or elementwise, so the zoo's containers run unchanged.

Exactness: each owner's slice of every result must be what its own copy computes alone. A
leaf takes its one-kernel form for an input shape only once `probe` found it bitwise equal,
output and gradients, to running each owner alone; otherwise it runs the owners one by one
(`looped`: the same kernel on a contiguous copy of each slice, with a contiguous gradient,
as the copy alone has them). So a folded part is bitwise equal to its copies, whatever the
backend rounds. The probe also times both forms and keeps the one-kernel form only where it
is not slower. What runs in one kernel depends on the backend and the shapes (with oneDNN on
an x86 CPU, not a strided 1x1 convolution's weight gradient, nor a batched matmul for a
Linear with few outputs). The probe uses random tensors of magnitudes spread wide: kernels
sum in an order set by shapes and the backend, not by values.
`torch.func.vmap` folds the same way but fuses Linear's bias and GroupNorm's affine
differently, so its results are close, not equal.

The loss of folded logits is nodes.folded_loss.

Tensors: the copies' parameters and running statistics live in a `Stack` (nodes.stack), so
consecutive copies' tensors are one slice of it. A call takes them as fresh leaves; after its
backward, `settle` adds each owner's slice of their gradients to its own parameters' `.grad`
(the slice itself when `.grad` is None), as an unbatched backward accumulates.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mpsl.models.layers import ConvBlock, Dense
from mpsl.models.mobilenet import InvertedResidual, SqueezeExcite
from mpsl.models.resnet import BasicBlock, Bottleneck
from nodes.stack import Stack

_CONTAINERS = (nn.Sequential, ConvBlock, Dense, BasicBlock, Bottleneck, SqueezeExcite,
               InvertedResidual)
_PER_CHANNEL = (nn.Identity, nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.MaxPool2d,
                nn.AdaptiveAvgPool2d)


class _Folded(nn.Module):
    """A leaf of a folded twin for g owners. Its tensors (`names`, `buffers_`: the g copies'
    concatenated along their first axis) are bound before each call. `folded` runs all g in
    one kernel, `single` owner k alone on its slice as its own copy would; `forward` takes
    `folded` for an input shape once `probe` found it bitwise equal to `single`, per owner,
    and not slower."""

    names: tuple[str, ...] = ("weight", "bias")
    buffers_: tuple[str, ...] = ()
    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, g: int) -> None:
        super().__init__()
        self.g = g
        self.folds: dict[tuple[Any, ...], bool] = {}  # input shape, dtype, device, mode

    def bind(self, tensors: dict[str, torch.Tensor | None]) -> None:
        for k, v in tensors.items():
            object.__setattr__(self, k, v)

    def owned(self) -> list[dict[str, Any]]:
        """Each owner's slice of each bound tensor (None stays None), by one `unbind`."""
        views = {}
        for name in self.names + self.buffers_:
            t = getattr(self, name)
            views[name] = [None] * self.g if t is None else \
                t.view(self.g, -1, *t.shape[1:]).unbind(0)
        return [{n: v[k] for n, v in views.items()} for k in range(self.g)]

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def single(self, x: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
        """One owner alone, with its tensors `t`."""
        raise NotImplementedError

    def looped(self, x: torch.Tensor) -> torch.Tensor:
        """Each owner alone on its slice, outputs side by side. A channel slice is copied to
        be contiguous and so is the gradient it gets back, as its own copy has them; a block
        of rows is contiguous already."""
        own = self.owned()
        if _axis(x) == 0:
            return torch.cat([self.single(xk, t) for xk, t in zip(unfold(x, self.g), own)])
        outs = [self.single(xk.contiguous(), t) for xk, t in zip(unfold(x, self.g), own)]
        return torch.cat([_ContiguousGrad.apply(t) for t in outs], 1)  # type: ignore[no-untyped-call]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.device, self.training)
        if key not in self.folds:
            self.folds[key] = probe(self, x)
        return self.folded(x) if self.folds[key] else self.looped(x)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on a contiguous copy of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class _Conv(_Folded):
    def __init__(self, conv: nn.Conv2d, g: int) -> None:
        super().__init__(g)
        self.stride, self.dilation = conv.stride, conv.dilation
        self.padding: Any = conv.padding
        self.groups = conv.groups

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups * self.g)

    def single(self, x: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
        return F.conv2d(x, t["weight"], t["bias"], self.stride, self.padding, self.dilation,
                        self.groups)


class _Linear(_Folded):
    def folded(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"a folded Linear takes (owners x batch, features), not "
                             f"{tuple(x.shape)}")
        xs = x.view(self.g, -1, x.shape[1])
        w = self.weight.view(self.g, -1, self.weight.shape[1]).transpose(1, 2)
        if self.bias is None:
            return torch.bmm(xs, w).view(x.shape[0], -1)
        return torch.baddbmm(self.bias.view(self.g, 1, -1), xs, w).view(x.shape[0], -1)

    def single(self, x: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
        return F.linear(x, t["weight"], t["bias"])


class _Flatten(nn.Module):
    """Channels side by side, (b, g*C, H, W), to rows one owner after another, (g*b, C*H*W)."""

    def __init__(self, g: int) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        b = x.shape[0]
        return x.reshape(b, self.g, -1).transpose(0, 1).reshape(self.g * b, -1)


class _GroupNorm(_Folded):
    def __init__(self, gn: nn.GroupNorm, g: int) -> None:
        super().__init__(g)
        self.groups, self.eps = gn.num_groups, gn.eps

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.groups * self.g, self.weight, self.bias, self.eps)

    def single(self, x: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
        return F.group_norm(x, self.groups, t["weight"], t["bias"], self.eps)


class _BatchNorm(_Folded):
    buffers_ = ("running_mean", "running_var")
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, bn: nn.BatchNorm2d, g: int) -> None:
        super().__init__(g)
        self.momentum, self.eps = float(bn.momentum or 0.0), bn.eps

    def _bn(self, x: torch.Tensor, t: dict[str, torch.Tensor | None]) -> torch.Tensor:
        return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"],
                            self.training, self.momentum if self.training else 0.0, self.eps)

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        return self._bn(x, {n: getattr(self, n) for n in self.names + self.buffers_})

    def single(self, x: torch.Tensor, t: dict[str, Any]) -> torch.Tensor:
        return self._bn(x, t)


def probe(leaf: _Folded, x: torch.Tensor, repeat: int = 3) -> bool:
    """Whether `leaf.folded` should run for inputs shaped as `x`: it must equal `leaf.looped`
    bitwise (output, the gradients of input and parameters, running statistics) on random
    tensors shaped as `x` and the bound ones, and take no longer (the best of `repeat` timed
    forward and backward passes each). Kernels sum in an order set by shapes and the
    backend, not by values."""
    bound = {n: getattr(leaf, n) for n in leaf.names + leaf.buffers_}
    try:
        got, want = (_trial(leaf, run, x, bound) for run in (leaf.folded, leaf.looped))
        if not all(torch.equal(a, b) for a, b in zip(got, want)):
            return False
        took = {run: min(_timed(leaf, run, x, bound) for _ in range(repeat))
                for run in (leaf.looped, leaf.folded)}
        return took[leaf.folded] <= took[leaf.looped]
    finally:
        leaf.bind(bound)


def _trial(leaf: _Folded, run: Any, x: torch.Tensor, bound: dict[str, torch.Tensor | None]
           ) -> list[torch.Tensor]:
    """`run` (folded or looped) forward and backward on seeded random tensors: the output,
    the gradients of the input and parameters, the running statistics."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    made = {n: None if t is None else spread_rand(t, gen, n in leaf.buffers_)
            for n, t in bound.items()}
    leaf.bind(made)
    inputs = [spread_rand(x, gen)] + [t for n in leaf.names if (t := made[n]) is not None]
    with torch.enable_grad():
        for t in inputs:
            t.requires_grad_(True)
        out = run(inputs[0])
        grads = torch.autograd.grad(out, inputs, spread_rand(out, gen))
    stats = [s for n in leaf.buffers_ if (s := made[n]) is not None]
    return [out.detach(), *grads, *stats]


def _timed(leaf: _Folded, run: Any, x: torch.Tensor, bound: dict[str, torch.Tensor | None]
           ) -> float:
    t0 = clock(x)
    _trial(leaf, run, x, bound)
    return clock(x) - t0


def clock(t: torch.Tensor) -> float:
    """`time.perf_counter` once `t`'s device has done the work queued on it (a GPU runs
    kernels after their launch returns)."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)
    return time.perf_counter()


def spread_rand(t: torch.Tensor, gen: torch.Generator, positive: bool = False
                ) -> torch.Tensor:
    """Random values shaped as `t`, of magnitudes spread over 2**-10..2**10 so that sums in
    another order round differently (positive for running statistics)."""
    r = torch.randn(t.shape, generator=gen, dtype=t.dtype, device=t.device)
    scale = torch.empty_like(r).uniform_(-10.0, 10.0, generator=gen).exp2_()
    return r.abs_().add_(0.5) if positive else r.mul_(scale)


def _fold_leaf(m: nn.Module, g: int) -> nn.Module | None:
    """The folded twin of one leaf, or None when it cannot be folded."""
    if isinstance(m, nn.Conv2d):
        return _Conv(m, g) if m.padding_mode == "zeros" else None
    if isinstance(m, nn.Linear):
        return _Linear(g)
    if isinstance(m, nn.GroupNorm):
        return _GroupNorm(m, g)
    if isinstance(m, nn.BatchNorm2d):  # a fixed momentum: every owner's update is the same
        ok = m.momentum is not None and m.track_running_stats and m.affine
        return _BatchNorm(m, g) if ok else None
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return _Flatten(g)
    if type(m) in _PER_CHANNEL:
        return copy.deepcopy(m)
    return None


def fold(module: nn.Module, g: int) -> nn.Module | None:
    """A twin of `module` for g owners side by side, or None when a layer cannot be folded
    (a type this module does not know: batching then stays off for the part)."""
    if type(module) not in _CONTAINERS:
        return _fold_leaf(module, g)
    twin = copy.copy(module)
    twin._modules = {}
    twin._parameters = {}
    twin._buffers = {}
    if module._parameters or module._buffers:  # containers of the zoo hold no tensors
        return None
    for name, child in module.named_children():
        folded = fold(child, g)
        if folded is None:
            return None
        twin._modules[name] = folded
    return twin


def _axis(x: torch.Tensor) -> int:
    """Where owners lie side by side: channels (1) for maps, rows (0) for features."""
    return 1 if x.dim() > 2 else 0


def gather(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The owners' inputs (equal shapes) as one folded tensor."""
    return torch.cat(list(xs), _axis(xs[0]))


def split(out: torch.Tensor, g: int) -> list[torch.Tensor]:
    """Each owner's slice of a folded tensor, contiguous as its own copy makes it (a block of
    rows is a view; a slice of channels, a copy)."""
    return [t if _axis(out) == 0 else t.contiguous() for t in unfold(out, g)]


def unfold(x: torch.Tensor, g: int) -> tuple[torch.Tensor, ...]:
    """The g owners' views of a folded tensor, by one `unbind` (whose backward stacks the
    owners' gradients in one step, where slicing would add g full-size ones)."""
    if _axis(x) == 0:
        return x.view(g, -1, *x.shape[1:]).unbind(0)
    return x.view(x.shape[0], g, -1, *x.shape[2:]).unbind(1)


@dataclass
class Call:
    """A folded call's output and the parameters it took (for `FoldedPart.settle`)."""

    out: torch.Tensor
    idx: list[int]
    taken: dict[str, torch.Tensor]


class FoldedPart:
    """Runs one part for any g of its copies at once (see the module doc), their tensors held
    in a `Stack`."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.foldable = fold(modules[0], 1) is not None
        self._module = modules[0]  # any copy: its structure
        self.stack = Stack(modules)
        self._counts = [[m.num_batches_tracked for m in copy_.modules()  # BatchNorm's
                         if isinstance(m, nn.BatchNorm2d) and m.num_batches_tracked is not None]
                        for copy_ in modules]
        self._twins: dict[int, tuple[nn.Module, dict[str, _Folded]]] = {}

    def twin(self, g: int) -> tuple[nn.Module, dict[str, _Folded]]:
        """The folded twin for g owners and its leaves that take tensors, by name."""
        if g not in self._twins:
            made = fold(self._module, g)
            if made is None:
                raise ValueError("this part has a layer that cannot be folded")
            self._twins[g] = made, {n: m for n, m in made.named_modules()
                                    if isinstance(m, _Folded)}
        return self._twins[g]

    def run(self, idx: Sequence[int], xs: Sequence[torch.Tensor], stats: bool = True) -> Call:
        """The folded output of copies `idx` (positions in the stack) on their inputs `xs`
        (equal shapes), under the caller's grad mode. In training, BatchNorm's running
        statistics of each copy are updated as its own forward would (`stats`), or left
        alone (a recomputation: `stats=False`). After a backward, `settle` the call."""
        idx = list(idx)
        twin, leaves = self.twin(len(idx))
        training = self._module.training
        twin.train(training)
        self.stack.check(idx)
        taken = self.stack.take(idx, buffers=stats or not training)
        for name, leaf in leaves.items():
            leaf.bind({a: taken.get(f"{name}.{a}") for a in leaf.names + leaf.buffers_})
        try:
            out: torch.Tensor = twin(gather(xs))
        finally:
            for leaf in leaves.values():  # hold no tensor between calls
                leaf.bind(dict.fromkeys(leaf.names + leaf.buffers_))
        if training and stats:
            self.stack.put_back(idx, taken)
            for k in idx:
                for count in self._counts[k]:
                    count.add_(1)
        return Call(out, idx, taken)

    def settle(self, call: Call) -> None:
        """After the backward: each copy's slice of the gradients into its `.grad`."""
        self.stack.accumulate(call.idx, call.taken)

