"""The effect of batched per-owner copies (`batch_owners: auto`) on a compute node's time.

A batched profile gives, for g owners whose micro-batches a compute node runs in one call
(g = 1, 2, 4, ...), the wall time per micro-batch, batched and one copy after another:
`bench/results/batched.csv` (`python -m bench.batched`, columns `part`, `norm`, `K`,
`seq_ms_per_mb`, `batched_ms_per_mb`) measures it for a part on this host. `factor(g)` is
the ratio, interpolated linearly in g between the measured sizes (1 at g = 1, the last value
past the largest), and `pass_time` scales a pass's profiled time by it.

How the planner uses it: the cost model's compute node runs one ready task at a time, as
`mpsl.taskqueue` says; with batching, the node takes every ready task of the same part and
micro-batch shape at once, so when it is the bottleneck (its queue holds a micro-batch of
every owner) g is the number of owners it serves, and its F and B time per task is
`pass_time(t, g)`. `busy_time` gives that bound for one node: the K owners' passes of an
epoch at `factor(K)`, the optimizer steps unchanged (each copy steps its own). A plan whose
bottleneck is such a node is then ranked with the batched time. The simulator's event loop
groups ready tasks as nodes.batched does and times each group by `pass_time`
(planner.batchsim).
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BatchedProfile:
    """Per-micro-batch time ratio, batched to sequential, by owners per call."""

    sizes: tuple[int, ...]  # owners per call, increasing, starting at 1
    ratios: tuple[float, ...]  # batched / sequential time per micro-batch at each size

    @classmethod
    def from_times(cls, times: Mapping[int, tuple[float, float]]) -> BatchedProfile:
        """From {g: (sequential, batched) seconds per micro-batch}."""
        if not times or min(times) < 1:
            raise ValueError(f"a batched profile needs sizes >= 1, got {sorted(times)}")
        for g, (seq, bat) in times.items():
            if seq <= 0 or bat <= 0:
                raise ValueError(f"times must be positive, got {seq}, {bat} at g = {g}")
        sizes = sorted(set(times) | {1})
        ratios = [1.0 if g == 1 else times[g][1] / times[g][0] for g in sizes]
        return cls(tuple(sizes), tuple(ratios))

    @classmethod
    def read(cls, path: str | Path, norm: str = "none", part: str = "server"
             ) -> BatchedProfile:
        """The rows of `part` and `norm` in a CSV written by bench/batched.py."""
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh)
                    if r.get("norm") == norm and r.get("part", part) == part]
        if not rows:
            raise ValueError(f"{path}: no rows of part {part!r} and norm {norm!r}")
        return cls.from_times({int(r["K"]): (float(r["seq_ms_per_mb"]),
                                             float(r["batched_ms_per_mb"])) for r in rows})

    @classmethod
    def read_one(cls, path: str | Path) -> BatchedProfile:
        """Every row of a CSV in bench/batched.py's columns, of one part and norm (the file
        beside a profile CSV, planner.profile.batched_path)."""
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        kinds = sorted({(r.get("part", ""), r.get("norm", "")) for r in rows})
        if len(kinds) != 1:
            raise ValueError(f"{path}: rows of {len(kinds)} (part, norm) pairs {kinds}, "
                             f"expected one")
        return cls.from_times({int(r["K"]): (float(r["seq_ms_per_mb"]),
                                             float(r["batched_ms_per_mb"])) for r in rows})

    def write(self, path: str | Path, part: str = "any", norm: str = "any") -> None:
        """Write as `read_one` reads it: the ratios as milliseconds of a 1 ms micro-batch."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(("part", "norm", "K", "seq_ms_per_mb", "batched_ms_per_mb"))
            w.writerows((part, norm, g, "1.0", repr(r)) for g, r in zip(self.sizes,
                                                                        self.ratios))

    def factor(self, g: int) -> float:
        """Batched over sequential time per micro-batch for g owners per call."""
        if g <= 1:
            return 1.0
        i = bisect.bisect_left(self.sizes, g)
        if i == len(self.sizes):
            return self.ratios[-1]
        if self.sizes[i] == g:
            return self.ratios[i]
        (g0, r0), (g1, r1) = (self.sizes[i - 1], self.ratios[i - 1]), (self.sizes[i],
                                                                       self.ratios[i])
        return r0 + (r1 - r0) * (g - g0) / (g1 - g0)

    def pass_time(self, seconds: float, g: int) -> float:
        """A pass's time per micro-batch when g owners' micro-batches run in one call."""
        return seconds * self.factor(g)

    def busy_time(self, pass_s: Iterable[float], step_s: Iterable[float], owners: int
                  ) -> float:
        """A compute node's busy time when it serves all `owners` at once: their passes
        (seconds, sequential) at factor(owners), their optimizer steps as they are."""
        return self.pass_time(sum(pass_s), owners) + sum(step_s)
