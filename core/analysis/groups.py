"""Coupled groups: solve the atom joins of a trace into groups of parameter slices.

A *channel* of a group is one connected class of atoms: removing it removes every slice in the
class, from every member. A *group* is the set of channels that share a parameter dimension
(for a conv -> BN -> conv chain: the 64 channels of the first conv's output).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.ops.atoms import Slot
from core.trace.tracer import Trace


@dataclass
class Member:
    slot: Slot
    index_map: np.ndarray  # per index along slot.dim: the group channel it belongs to (-1: none)

    @property
    def name(self) -> str:
        return f"{self.slot.tensor_name}[dim {self.slot.dim}]"

    def to_json(self) -> dict:
        return {"tensor": self.slot.tensor_name, "module": self.slot.module_name, "dim": self.slot.dim,
                "role": self.slot.role, "size": self.slot.size,
                "index_map": compress_index_map(self.index_map)}


@dataclass
class Group:
    id: int
    members: list[Member]
    n_channels: int
    prunable: np.ndarray  # bool per channel
    exact: np.ndarray  # bool per channel: removal is provably output-preserving
    blocked_reasons: list[str] = field(default_factory=list)
    approx_reasons: list[str] = field(default_factory=list)
    nodes: set = field(default_factory=set)

    @property
    def layers(self) -> list[str]:
        seen = []
        for m in self.members:
            if m.slot.module_name not in seen:
                seen.append(m.slot.module_name)
        return seen

    @property
    def root(self) -> str:
        for m in self.members:
            if m.slot.role == "out":
                return m.slot.module_name or m.slot.tensor_name
        return self.members[0].slot.tensor_name

    @property
    def n_prunable(self) -> int:
        return int(self.prunable.sum())

    @property
    def is_prunable(self) -> bool:
        return self.n_prunable > 1 or (self.n_prunable == 1 and self.n_channels > 1)

    def to_json(self) -> dict:
        return {"id": self.id, "root": self.root, "channels": self.n_channels,
                "prunable_channels": self.n_prunable, "exact": bool(self.exact[self.prunable].all()),
                "layers": self.layers, "members": [m.to_json() for m in self.members],
                "blocked_reasons": self.blocked_reasons, "approximate_reasons": self.approx_reasons}


def compress_index_map(index_map: np.ndarray):
    """Index map as runs [[start, stop, first_channel, step]] so JSON stays small."""
    runs = []
    i, n = 0, len(index_map)
    while i < n:
        j = i + 1
        step = int(index_map[j] - index_map[i]) if j < n else 1
        while j < n and index_map[j] - index_map[j - 1] == step and index_map[j - 1] >= 0:
            j += 1
        runs.append([i, j, int(index_map[i]), step])
        i = j
    return runs


def build_groups(trace: Trace) -> tuple[list[Group], np.ndarray, np.ndarray]:
    """Returns (groups, class of every atom, group of every class)."""
    table = trace.table
    cls = table.components()
    n_cls = int(cls.max()) + 1 if cls.size else 0
    if n_cls == 0:
        return [], cls, np.zeros(0, np.int64)

    blocked = np.zeros(n_cls, bool)
    block_reason: dict[int, str] = {}
    for atoms, reason in table.blocked:
        c = np.unique(cls[atoms])
        blocked[c] = True
        for ci in c[:50]:
            block_reason.setdefault(int(ci), reason)
    approx = np.zeros(n_cls, bool)
    approx_reason: dict[int, str] = {}
    for atoms, reason in table.approx:
        c = np.unique(cls[atoms])
        approx[c] = True
        for ci in c[:50]:
            approx_reason.setdefault(int(ci), reason)
    has_out = np.zeros(n_cls, bool)
    for s in table.slots:
        if s.role == "out":
            has_out[cls[s.start:s.start + s.size]] = True
    producer = np.zeros(table.n_atoms, bool)
    for atoms in table.producers:
        producer[atoms] = True
    has_out[cls[producer]] = True
    # a parameter is a producer when a layer outputs its rows, even through a chunk or transpose
    out_slot = [s.role == "out" or producer[s.start:s.start + s.size].any() for s in table.slots]

    # Classes that share a producer (an "out" slot, or a residual add joining two producers) form
    # one group. Consumers (a conv reading a concat, a BN after it) may span several groups and
    # are members of each with a partial index map, as in the paper.

    a, b = [], []
    for s in table.slots:
        c = cls[s.start:s.start + s.size]
        if not out_slot[s.index]:
            c = c[~has_out[c]]
            if c.size == 0:
                continue
        a.append(np.full(c.size, c[0]))
        b.append(c)
    a = np.concatenate(a) if a else np.zeros(0, np.int64)
    b = np.concatenate(b) if b else np.zeros(0, np.int64)
    n_grp, grp = connected_components(coo_matrix((np.ones(a.size, np.int8), (a, b)),
                                                 shape=(n_cls, n_cls)), directed=False)

    # number groups in order of first appearance of their slots (stable, traversal order)
    first_seen = np.full(n_grp, np.iinfo(np.int64).max)
    for s in table.slots:
        g = np.unique(grp[cls[s.start:s.start + s.size]])
        first_seen[g] = np.minimum(first_seen[g], s.index)
    order = np.argsort(first_seen, kind="stable")
    remap = np.empty(n_grp, np.int64)
    remap[order] = np.arange(n_grp)
    group_of_class = remap[grp]
    # channel index of each class within its group
    order_c = np.lexsort((np.arange(n_cls), group_of_class))
    local = np.empty(n_cls, np.int64)
    counts = np.bincount(group_of_class, minlength=n_grp)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    local[order_c] = np.arange(n_cls) - np.repeat(starts, counts)

    members: list[list[Member]] = [[] for _ in range(n_grp)]
    for s in table.slots:
        c = cls[s.start:s.start + s.size]
        gs = group_of_class[c]
        for g in np.unique(gs):
            members[int(g)].append(Member(s, np.where(gs == g, local[c], -1)))
    classes_of = np.split(order_c, np.cumsum(counts)[:-1])
    groups = []
    for gid in range(n_grp):
        classes = classes_of[gid]
        ms = sorted(members[gid], key=lambda m: (m.slot.role != "out", m.slot.index))
        prunable = ~blocked[classes] & has_out[classes]
        exact = ~approx[classes]
        br = sorted({block_reason[int(c)] for c in classes[blocked[classes]][:200]
                     if int(c) in block_reason})
        ar = sorted({approx_reason[int(c)] for c in classes[approx[classes]][:200]
                     if int(c) in approx_reason})
        groups.append(Group(gid, ms, int(classes.size), prunable, exact, br[:20], ar[:20]))
    # Slices coupled to no layer output (the first conv's input channels, a LayerNorm on a fixed
    # stream) are not groups a user can prune: keep only groups with a producer.
    kept = [g for g, classes in zip(groups, classes_of) if has_out[classes].any()]
    new_id = np.full(len(groups) + 1, -1, np.int64)
    for i, g in enumerate(kept):
        new_id[g.id] = i
        g.id = i
    group_of_class = new_id[group_of_class]
    _assign_nodes(kept, trace.node_atoms, group_of_class[cls] if cls.size else cls)
    return kept, cls, group_of_class


def _assign_nodes(groups: list[Group], node_atoms: dict, group_of_atom: np.ndarray) -> None:
    """Every node joins the groups of the atoms it touches: one unique over (node, group) pairs."""
    if not node_atoms or not groups:
        return
    nodes = np.fromiter(node_atoms, np.int64, len(node_atoms))
    sizes = np.fromiter((a.size for a in node_atoms.values()), np.int64, len(node_atoms))
    gs = group_of_atom[np.concatenate(list(node_atoms.values()))]
    ns = np.repeat(nodes, sizes)
    ok = gs >= 0
    pairs = np.unique(ns[ok] * len(groups) + gs[ok])
    for node, g in zip((pairs // len(groups)).tolist(), (pairs % len(groups)).tolist()):
        groups[g].nodes.add(node)
