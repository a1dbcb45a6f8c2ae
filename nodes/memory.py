"""Memory of a node: peak RSS and peak tensor bytes (model state plus activations kept)."""

from __future__ import annotations

import resource
import sys
import weakref
from collections.abc import Iterable

import torch


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class ActivationMeter:
    """Counts the bytes autograd keeps for backward, live, by storage, and their peak.

    Use `with meter.hooks():` around forward passes. Tensors sharing a storage count once;
    storages of parameters (given by `exclude`) do not count: they are model state.
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.extra = 0  # other bytes held, such as received messages waiting for work
        self._refs: dict[int, list[int]] = {}  # storage ptr -> [bytes, references]
        self._exclude: set[int] = set()

    def exclude(self, tensors: Iterable[torch.Tensor]) -> None:
        self._exclude.update(t.untyped_storage().data_ptr() for t in tensors)

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def hold(self, nbytes: int) -> None:
        self.extra += nbytes
        self._update()

    def _update(self) -> None:
        self.peak = max(self.peak, self.live + self.extra)

    def _pack(self, t: torch.Tensor) -> object:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._exclude or storage.nbytes() == 0:
            return t
        entry = self._refs.setdefault(ptr, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.live += entry[0]
            self._update()
        entry[1] += 1
        holder = _Saved(t)
        weakref.finalize(holder, self._release, ptr)
        return holder

    @staticmethod
    def _unpack(packed: object) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed  # type: ignore[return-value]

    def _release(self, ptr: int) -> None:
        entry = self._refs.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._refs[ptr]
