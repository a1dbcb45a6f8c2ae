"""Linear forms in the cuts, and the longest path through a graph whose edges are forms.

A form is linear in two kinds of 0/1 unknowns: x(l, p), layer l is in part p, and z(l, p),
cut p (the boundary after part p) falls right after layer l. A `PathGraph` holds start-time
variables ("potentials") s_v of one owner's iteration: an edge (u, v, w) says s_v >= s_u + w,
an end (u, w) that the iteration lasts at least s_u + w. The ILP takes these as constraints
(minimizing T then gives the longest path); `PathGraph.longest` computes the same number for
given cuts by one pass in topological order.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Form:
    """const + sum of x[p][l] over the layers l of part p + z[p][l] at the layer before cut p."""

    const: float = 0.0
    x: dict[int, list[float]] = field(default_factory=dict)
    z: dict[int, list[float]] = field(default_factory=dict)

    def add_x(self, p: int, coef: Sequence[float], scale: float = 1.0) -> None:
        _add_row(self.x, p, coef, scale)

    def add_z(self, p: int, coef: Sequence[float], scale: float = 1.0) -> None:
        _add_row(self.z, p, coef, scale)

    def add(self, other: Form, scale: float = 1.0) -> None:
        """Add `scale` x `other` to this form."""
        self.const += other.const * scale
        for p, row in other.x.items():
            self.add_x(p, row, scale)
        for p, row in other.z.items():
            self.add_z(p, row, scale)

    def plus(self, other: Form) -> Form:
        """A new form: this one + `other`."""
        out = Form()
        out.add(self)
        out.add(other)
        return out

    def value(self, bounds: Sequence[int]) -> float:
        v = [self.const]
        for p, row in self.x.items():
            v.extend(row[bounds[p]:bounds[p + 1]])
        for p, row in self.z.items():
            v.append(row[bounds[p + 1] - 1])
        return math.fsum(v)

    def values(self, bounds: np.ndarray) -> np.ndarray:
        """`value` of every row of `bounds` (rows (0, *cuts, L)) at once, for enumeration."""
        v = np.full(len(bounds), self.const)
        for p, row in self.x.items():
            pre = np.concatenate([[0.0], np.cumsum(row)])
            v += pre[bounds[:, p + 1]] - pre[bounds[:, p]]
        for p, row in self.z.items():
            v += np.asarray(row)[bounds[:, p + 1] - 1]
        return v


def _add_row(rows: dict[int, list[float]], p: int, coef: Sequence[float], scale: float) -> None:
    """rows[p] += scale x coef (a row of zeros where there is none)."""
    row = rows.get(p)
    if row is None:
        rows[p] = [0.0 + c * scale for c in coef]
    elif len(row) == len(coef):
        rows[p] = [a + c * scale for a, c in zip(row, coef)]
    else:
        for i, c in enumerate(coef):
            row[i] += c * scale


Edge = tuple[int, int, Form]  # (u, v, w): s_v >= s_u + w


@dataclass
class PathGraph:
    """Start times of one owner's iteration, vertex 0 its start (time 0), the others in a
    topological order; `names` say what each vertex starts (a task or a transmission)."""

    names: list[str]
    edges: list[Edge]  # sorted by v: every edge into v comes after every edge into u < v
    ends: list[tuple[int, Form]]  # the iteration lasts at least s_u + w
    # per vertex, where given: the processor or link it occupies and for how long
    resources: list[str] = field(default_factory=list)
    work: list[Form] = field(default_factory=list)
    _layers: Layers | None = field(default=None, repr=False, compare=False)
    _on: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def potentials(self, bounds: Sequence[int]) -> list[float]:
        """The earliest start of every vertex for `bounds` (0, *cuts, L)."""
        s = [0.0] * len(self.names)
        for u, v, w in self.edges:
            s[v] = max(s[v], s[u] + w.value(bounds))
        return s

    def longest(self, bounds: Sequence[int]) -> float:
        """The iteration's length for `bounds`: the longest path to an end."""
        s = self.potentials(bounds)
        return max((s[u] + w.value(bounds) for u, w in self.ends), default=0.0)

    def longest_all(self, bounds: np.ndarray) -> np.ndarray:
        """`longest` of every row of `bounds` at once."""
        out: np.ndarray = np.max(self.ends_all(bounds), axis=0, initial=0.0)
        return out

    def ends_all(self, bounds: np.ndarray) -> np.ndarray:
        """s_u + w of every end (rows) at every row of `bounds` (columns), with the earliest
        start times; every distinct form (by coefficients) evaluated once."""
        lay = self.layers()
        weight = values_all(lay.distinct, bounds)
        s = self.starts_all(weight)
        out: np.ndarray = s[lay.end_u] + weight[lay.end_w]
        return out

    def starts_all(self, weight: np.ndarray) -> np.ndarray:
        """The earliest start of every vertex (rows) at every column of `weight` (the
        distinct forms' values, `layers().distinct`), a level of edges at a time."""
        s = np.zeros((len(self.names), weight.shape[1]))
        for g in self.layers().forward:
            s[g.heads] = np.maximum(s[g.heads], g.reduce(s[g.u] + weight[g.w]))
        return s

    def on_resources(self) -> dict[str, np.ndarray]:
        """The vertices on each processor or link (those with a resource), made once."""
        if self._on is None:
            by: dict[str, list[int]] = {}
            for vertex, r in enumerate(self.resources):
                if r:
                    by.setdefault(r, []).append(vertex)
            self._on = {r: np.array(vs, dtype=np.intp) for r, vs in by.items()}
        return self._on

    def layers(self) -> Layers:
        """The graph's edges grouped by level, made once (see `Layers`)."""
        if self._layers is None:
            self._layers = _layers(self)
        return self._layers


@dataclass
class EdgeGroup:
    """Edges (u, v, form index) sorted by their `heads` side (v going forward, u going
    back), every edge of a head in the group; `starts` where each head's edges begin."""

    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    heads: np.ndarray
    starts: np.ndarray

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """The largest of `values` (one row per edge) per head."""
        out: np.ndarray = np.maximum.reduceat(values, self.starts, axis=0)
        return out


@dataclass
class Layers:
    """A `PathGraph` arranged for evaluation at many cut rows: its distinct forms, and its
    edges (u, v, form index) grouped by the level of v (the most edges on a path from a
    source to v) for the earliest starts, and by the level of u, highest first, for the
    longest paths to an end; the ends' and every vertex's work's form index."""

    distinct: list[Form]
    forward: list[EdgeGroup]
    backward: list[EdgeGroup]
    end_u: np.ndarray
    end_w: np.ndarray
    work: np.ndarray


def _layers(g: PathGraph) -> Layers:
    index, distinct = distinct_forms([*(e[2] for e in g.edges), *(e[1] for e in g.ends),
                                      *g.work])
    E, N = len(g.edges), len(g.ends)
    level = [0] * len(g.names)
    for u, v, _ in g.edges:  # sorted by v, u < v: level[u] is final
        level[v] = max(level[v], level[u] + 1)
    us = np.array([e[0] for e in g.edges], dtype=np.intp)
    vs = np.array([e[1] for e in g.edges], dtype=np.intp)
    ws = np.array(index[:E], dtype=np.intp)
    lv = np.array(level, dtype=np.intp)

    def grouped(head: np.ndarray, reverse: bool) -> list[EdgeGroup]:
        """Every edge of a head lies in the group of the head's level; in a group the edges
        go by head, each head's in the graph's order."""
        by = -lv[head] if reverse else lv[head]
        m = np.lexsort((head, by))  # stable: a head's edges keep their order
        h, b = head[m], by[m]
        new_head = np.ones(len(m), dtype=bool)
        new_head[1:] = (h[1:] != h[:-1]) | (b[1:] != b[:-1])
        firsts = np.flatnonzero(new_head)  # every head's first edge
        edges = [0, *(np.flatnonzero(np.diff(b)) + 1).tolist(), len(m)]  # levels' bounds
        heads = np.searchsorted(firsts, edges).tolist()  # and their heads' bounds
        out = []
        for lo, hi, a, z in zip(edges, edges[1:], heads, heads[1:]):
            if lo < hi:
                out.append(EdgeGroup(us[m[lo:hi]], vs[m[lo:hi]], ws[m[lo:hi]], h[firsts[a:z]],
                                     firsts[a:z] - lo))
        return out

    return Layers(distinct, grouped(vs, False), grouped(us, True),
                  np.array([u for u, _ in g.ends], dtype=np.intp),
                  np.array(index[E:E + N], dtype=np.intp), np.array(index[E + N:], dtype=np.intp))


def content(f: Form) -> tuple[object, ...]:
    """A form's coefficients as a key: forms equal in it have equal values."""
    return (f.const, tuple((p, tuple(r)) for p, r in sorted(f.x.items())),
            tuple((p, tuple(r)) for p, r in sorted(f.z.items())))


def distinct_forms(forms: Sequence[Form]) -> tuple[list[int], list[Form]]:
    """Each form's index among the distinct ones (by coefficients; micro-batches repeat
    forms), and those."""
    by_id: dict[int, int] = {}
    by_content: dict[tuple[object, ...], int] = {}
    distinct: list[Form] = []
    index = []
    for f in forms:
        i = by_id.get(id(f))
        if i is None:
            key = content(f)
            i = by_content.get(key)
            if i is None:
                i = by_content[key] = len(distinct)
                distinct.append(f)
            by_id[id(f)] = i
        index.append(i)
    return index, distinct


def values_all(forms: Sequence[Form], bounds: np.ndarray) -> np.ndarray:
    """`Form.values` of every form (rows) at every row of `bounds` (columns)."""
    out = np.repeat(np.array([[f.const] for f in forms], dtype=float).reshape(-1, 1),
                    len(bounds), axis=1)
    for kind in ("x", "z"):
        for p in sorted({p for f in forms for p in getattr(f, kind)}):
            rows = [getattr(f, kind).get(p) for f in forms]
            width = max(len(r) for r in rows if r is not None)
            m = np.zeros((len(forms), width + 1))
            for i, r in enumerate(rows):
                if r is not None:
                    m[i, 1:len(r) + 1] = r
            if kind == "x":  # the layers of part p: a difference of prefix sums
                pre = np.cumsum(m, axis=1)
                out += pre[:, bounds[:, p + 1]] - pre[:, bounds[:, p]]
            else:  # the layer before cut p + 1
                out += m[:, bounds[:, p + 1]]
    return out


class GraphBuilder:
    """Collects named vertices and edges in any order; `graph()` numbers them topologically."""

    def __init__(self) -> None:
        self.names: list[str] = ["start"]
        self.resources: list[str] = [""]
        self.work: list[Form] = [Form()]
        self.edges: list[Edge] = []
        self.ends: list[tuple[int, Form]] = []

    def vertex(self, name: str, resource: str = "", work: Form | None = None) -> int:
        """A new vertex: `name` says what it starts, on `resource` (a processor or link)
        for `work` seconds."""
        self.names.append(name)
        self.resources.append(resource)
        self.work.append(Form() if work is None else work)
        return len(self.names) - 1

    def edge(self, u: int, v: int, w: Form) -> None:
        self.edges.append((u, v, w))

    def end(self, u: int, w: Form) -> None:
        self.ends.append((u, w))

    def graph(self) -> PathGraph:
        """The graph, vertices renumbered so that every edge goes from a lower number to a
        higher one (start stays 0); raises graphlib.CycleError on a cycle."""
        order = [v for v in static_order(len(self.names), self.edges) if v != 0]
        number = {0: 0, **{v: i + 1 for i, v in enumerate(order)}}
        old = [0, *order]
        edges = sorted(((number[u], number[v], w) for u, v, w in self.edges),
                       key=lambda e: (e[1], e[0]))
        ends = [(number[u], w) for u, w in self.ends]
        return PathGraph([self.names[v] for v in old], edges, ends,
                         [self.resources[v] for v in old], [self.work[v] for v in old])


def static_order(count: int, edges: Sequence[tuple[int, int, object]]) -> list[int]:
    """Vertices 0..count-1 in `graphlib.TopologicalSorter.static_order`'s order (vertices
    added in turn, then each edge (u, v) as v after u), without its bookkeeping."""
    after: list[list[int]] = [[] for _ in range(count)]
    waiting = [0] * count
    for u, v, _ in edges:
        after[u].append(v)
        waiting[v] += 1
    ready = [v for v in range(count) if waiting[v] == 0]
    order: list[int] = []
    while ready:
        order.extend(ready)
        nxt = []
        for u in ready:
            for v in after[u]:
                waiting[v] -= 1
                if waiting[v] == 0:
                    nxt.append(v)
        ready = nxt
    if len(order) < count:
        raise graphlib.CycleError("nodes are in a cycle",
                                  [v for v in range(count) if waiting[v] > 0])
    return order
