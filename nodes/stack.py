"""Owner copies' tensors in stacked storage: one tensor per parameter or float buffer, with the
copies side by side along a new first axis, each copy's own tensor a view of its row.

So g owners' weights for a folded call (nodes.folding) are one slice, not a copy, when they
are consecutive copies; optimizers, `load_state_dict` and checkpoints keep working on each
copy's own tensors, which write into the stack. A copy whose tensor was replaced (not written
in place) is put back into the stack before the next call (`check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Stack:
    """The tensors of `modules` (copies of one part, same structure) stacked by name."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        first = self.modules[0]
        self.params = [n for n, _ in first.named_parameters()]
        self.buffers = [n for n, b in first.named_buffers() if b.is_floating_point()]
        self.tensors: dict[str, torch.Tensor] = {}  # name -> (copies, *shape)
        self._owned: dict[str, list[torch.Tensor]] = {}  # name -> each copy's tensor
        self._ptrs: dict[str, list[int]] = {}
        # name -> (copies, the (g, ...) tensor whose rows are their .grad, those rows)
        self._grads: dict[str, tuple[list[int], torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self._slots = {name: [(m.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2])
                              for m in self.modules] for name in self.params + self.buffers}
        self.restack()

    def restack(self) -> None:
        """Copy every copy's tensors into fresh stacks and make them views of their rows."""
        for name in self.params + self.buffers:
            owned = [getattr(m, attr) for m, attr in self._slots[name]]
            stacked = torch.stack([t.detach() for t in owned])
            for k, t in enumerate(owned):
                t.data = stacked[k]
            self.tensors[name], self._owned[name] = stacked, owned
            self._ptrs[name] = [t.data_ptr() for t in owned]

    def check(self, idx: Sequence[int]) -> None:
        """Restack if a tensor of copies `idx` was replaced or is no longer a view of its
        row."""
        for name in self.params + self.buffers:
            slots, owned, ptrs = self._slots[name], self._owned[name], self._ptrs[name]
            for k in idx:
                t = getattr(*slots[k])
                if t is not owned[k] or t.data_ptr() != ptrs[k]:
                    self.restack()
                    return

    def take(self, idx: Sequence[int], buffers: bool) -> dict[str, torch.Tensor]:
        """The tensors of copies `idx` side by side along their first axis (g*d0, ...):
        parameters as fresh leaves that require grad, float buffers (when `buffers`) to be
        written in place. Consecutive copies share the stack's memory; others are copies,
        whose buffers `put_back` writes back."""
        names = self.params + (self.buffers if buffers else [])
        rows = _rows(idx)
        out = {}
        for name in names:
            s = self.tensors[name]
            at = rows if isinstance(rows, slice) else torch.tensor(rows, device=s.device)
            t = s[at].flatten(0, 1)
            out[name] = t.detach().requires_grad_(True) if name in self.params else t
        return out

    def put_back(self, idx: Sequence[int], taken: dict[str, torch.Tensor]) -> None:
        """Write taken buffers that were copies (not views) back into the stack."""
        rows = _rows(idx)
        if isinstance(rows, slice):
            return
        with torch.no_grad():
            for name in self.buffers:
                if name in taken:
                    s = self.tensors[name]
                    s.index_copy_(0, torch.tensor(rows, device=s.device),
                                  taken[name].view(len(rows), *s.shape[1:]))

    def accumulate(self, idx: Sequence[int], taken: dict[str, torch.Tensor]) -> None:
        """Add each copy's slice of the taken parameters' gradients to its `.grad`, as a
        backward through the copy alone would (the slice itself when `.grad` is None). When
        the copies' gradients are the rows of the last call's, one `add_` adds them all."""
        for name in self.params:
            grad = taken[name].grad
            if grad is None:
                continue
            owned = [self._owned[name][k] for k in idx]
            rows = grad.view(len(idx), *owned[0].shape)
            held = self.grad_rows(name, idx)
            if held is not None:
                held.add_(rows)
            elif all(p.grad is None for p in owned):
                views = rows.unbind(0)
                for p, g in zip(owned, views):
                    p.grad = g
                self._grads[name] = (list(idx), rows, views)
            else:
                for p, g in zip(owned, rows.unbind(0)):
                    if p.grad is None:
                        p.grad = g
                    else:
                        p.grad.add_(g)

    def grad_rows(self, name: str, idx: Sequence[int]) -> torch.Tensor | None:
        """The tensor whose rows are the `.grad` of copies `idx`, if `accumulate` made it."""
        kept = self._grads.get(name)
        if kept is None or kept[0] != list(idx):
            return None
        if any(self._owned[name][k].grad is not v for k, v in zip(idx, kept[2])):
            return None
        return kept[1]

    def sgd_step(self, idx: Sequence[int], optimizers: Sequence[torch.optim.Optimizer]
                 ) -> bool:
        """Step the SGD optimizers of consecutive copies `idx` at once, on their rows of the
        stack: the elementwise operations of torch's single-tensor SGD, on (g, ...) tensors
        instead of g tensors; then drop their gradients (`zero_grad(set_to_none=True)`).
        False, with nothing changed, where that would not be the same as each stepping
        alone (another optimizer, other settings, a device where torch would use foreach
        kernels, copies not consecutive, momentum buffers of some copies only)."""
        rows = _rows(idx)
        settings = [_sgd_settings(opt) for opt in optimizers]
        if not isinstance(rows, slice) or settings[0] is None or \
                any(s != settings[0] for s in settings):
            return False
        for opt, k in zip(optimizers, idx):
            params = opt.param_groups[0]["params"]
            if len(params) != len(self.params) or \
                    any(p is not self._owned[n][k] for p, n in zip(params, self.params)):
                return False
        wd, momentum, lr, dampening, nesterov, maximize = settings[0]
        states = [[opt.state[self._owned[n][k]] if momentum != 0 else {}
                   for opt, k in zip(optimizers, idx)] for n in self.params]
        if any(len({"momentum_buffer" in s for s in per}) > 1 for per in states):
            return False
        present = [[self._owned[n][k].grad is not None for k in idx] for n in self.params]
        if any(len(set(p)) > 1 for p in present):  # SGD skips a copy's parameter without
            return False  # a gradient: only all or none
        with torch.no_grad():
            for name, per, has in zip(self.params, states, present):
                if not has[0]:
                    continue
                grad = self._stacked_grad(name, idx)
                grad = -grad if maximize else grad
                if wd != 0:
                    grad = grad.add(self.tensors[name][rows], alpha=wd)
                if momentum != 0:
                    grad = self._momentum(name, idx, per, grad, momentum, dampening, nesterov)
                self.tensors[name][rows].add_(grad, alpha=-lr)
        for name in self.params:
            for k in idx:
                self._owned[name][k].grad = None
        return True

    def _stacked_grad(self, name: str, idx: Sequence[int]) -> torch.Tensor:
        """The copies' gradients (all present) as rows of one tensor, stacked if need be."""
        held = self.grad_rows(name, idx)
        if held is not None:
            return held
        grads = [self._owned[name][k].grad for k in idx]
        return torch.stack([g for g in grads if g is not None])

    def _momentum(self, name: str, idx: Sequence[int], per: list[dict[str, Any]],
                  grad: torch.Tensor, momentum: float, dampening: float, nesterov: bool
                  ) -> torch.Tensor:
        """torch's momentum update on the stacked buffers (made, or stacked, on the way)."""
        if "momentum_buffer" not in per[0]:
            buf = grad.detach().clone()
        else:
            bufs = [s["momentum_buffer"] for s in per]
            base = bufs[0]._base
            same = base is not None and all(b._base is base for b in bufs) and \
                base.shape[0] == len(bufs) and \
                all(b.data_ptr() == base[j].data_ptr() for j, b in enumerate(bufs))
            buf = base if same else torch.stack(bufs)
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        for s, b in zip(per, buf.unbind(0)):
            s["momentum_buffer"] = b
        return grad.add(buf, alpha=momentum) if nesterov else buf


def _sgd_settings(opt: torch.optim.Optimizer) -> tuple[Any, ...] | None:
    """What an SGD step depends on, or None when a stacked step may differ from its own."""
    if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    if g.get("foreach") or g.get("fused") or g.get("differentiable") or \
            any(p.device.type != "cpu" for p in g["params"]) or \
            any(isinstance(g[k], torch.Tensor) for k in ("lr", "weight_decay", "momentum")):
        return None
    return (g["weight_decay"], g["momentum"], g["lr"], g["dampening"], g["nesterov"],
            g["maximize"])


def _rows(idx: Sequence[int]) -> slice | list[int]:
    """A slice when `idx` counts up by one, else the list."""
    start = idx[0]
    if list(idx) == list(range(start, start + len(idx))):
        return slice(start, start + len(idx))
    return list(idx)
