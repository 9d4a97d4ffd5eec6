"""Coupled groups: solve the atom joins of a trace into groups of parameter slices.

A *channel* of a group is one connected class of atoms: removing it removes every slice in the
class, from every member. A *group* is the set of channels that share a parameter dimension
(for a conv -> BN -> conv chain: the 64 channels of the first conv's output).
"""
from __future__ import annotations

from functools import cached_property

from dataclasses import dataclass, field

import numpy as np
from core.ops.atoms import Slot
from core.ops.components import lowest_in_component
from core.trace.tracer import Trace


@dataclass(slots=True)  # one per (slot, group): no __dict__ each
class Member:
    slot: Slot
    index_map: np.ndarray  # per index along slot.dim: the group channel it belongs to (-1: none)
    _in_order: bool | None = field(default=None, repr=False, compare=False)  # see in_order

    @property
    def name(self) -> str:
        return f"{self.slot.tensor_name}[dim {self.slot.dim}]"

    @property
    def in_order(self) -> bool:
        """Whether index i along the slot is the group's channel i, for every i (worked out once:
        importance scores ask on every plan)."""
        v = self._in_order
        if v is None:
            im = self.index_map
            v = self._in_order = bool(
                im.size == 0 or (im[0] == 0 and im[-1] == im.size - 1 and (np.diff(im) == 1).all()))
        return v

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

    @cached_property
    def channel_span(self) -> int:
        """Rows of the root layer one channel carries: 1 for plain channels, more where a channel
        is a block (a key/value head of grouped-query attention, traced through its reshapes, is
        the query rows of every head sharing it; a channel shuffle's groups)."""
        for m in self.members:
            if m.slot.role == "out":
                im = np.asarray(m.index_map)
                counts = np.bincount(im[im >= 0], minlength=self.n_channels)
                return int(counts.max()) if counts.size and counts.min() == counts.max() > 1 else 1
        return 1

    @property
    def n_prunable(self) -> int:
        return int(self.prunable.sum())

    @cached_property
    def fewest_member_channels(self) -> int:
        """The fewest distinct channels one member maps: a plan removing fewer channels than this
        cannot empty a member (the planner asks hundreds of times per plan)."""
        sizes = [np.unique(m.index_map[m.index_map >= 0]).size for m in self.members]
        return min((s for s in sizes if s), default=0)

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


def _first_reasons(entries, cls: np.ndarray, n_cls: int):
    """(flag per class, index into ``entries`` of the reason kept per class or -1): a class keeps
    the reason of the first entry that names it among that entry's first 50 classes."""
    flags = np.zeros(n_cls, bool)
    first = np.full(n_cls, -1, np.int64)
    if not entries:
        return flags, first
    sizes = np.fromiter((a.size for a, _ in entries), np.int64, len(entries))
    c = cls[np.concatenate([a for a, _ in entries])]
    flags[c] = True
    if c.size > 512 * len(entries):  # few large entries (a norm over 4096 channels per layer):
        ends = np.cumsum(sizes)  # one small sort each beats one sort of (entry, class) pairs
        for e, (lo, hi) in enumerate(zip((ends - sizes).tolist(), ends.tolist())):
            top = np.unique(c[lo:hi])[:50]
            top = top[first[top] < 0]
            first[top] = e
        return flags, first
    pairs = np.unique(np.repeat(np.arange(len(entries), dtype=np.int64), sizes) * n_cls + c)
    e, c = pairs // n_cls, pairs % n_cls
    rank = np.arange(e.size) - np.searchsorted(e, e, side="left")
    e, c = e[rank < 50], c[rank < 50]
    uc, idx = np.unique(c, return_index=True)  # stable: the first (lowest) entry per class
    first[uc] = e[idx]
    return flags, first


def _reasons(classes, flags, first, entries) -> list[str]:
    if not entries:
        return []
    ri = first[classes[flags[classes]][:200]]
    return sorted({entries[int(i)][1] for i in np.unique(ri[ri >= 0])})


def build_groups(trace: Trace) -> tuple[list[Group], np.ndarray, np.ndarray]:
    """Returns (groups, class of every atom, group of every class).

    Whole-array passes, so the cost does not grow with the number of Python objects beyond one
    Member per (slot, group). A slot merged onto its chain's lowest slot (``table.merged``) has
    that slot's classes index by index, so the passes run over the atoms of chain roots only
    (on an LLM a third of all atoms) and chain members share their root's index map."""
    table = trace.table
    cls = table.components()
    n_cls = int(cls.max()) + 1 if cls.size else 0
    if n_cls == 0:
        return [], cls, np.zeros(0, np.int64)

    blocked, block_first = _first_reasons(table.blocked, cls, n_cls)
    approx, approx_first = _first_reasons(table.approx, cls, n_cls)
    slots = table.slots
    n_slots = len(slots)
    sizes = np.fromiter((s.size for s in slots), np.int64, n_slots)
    slot_start = np.fromiter((s.start for s in slots), np.int64, n_slots)
    out_role = np.fromiter((s.role == "out" for s in slots), bool, n_slots)
    src, dst = table.merged
    si = np.searchsorted(slot_start, src, side="right") - 1  # an empty slot may share its start
    di = np.searchsorted(slot_start, dst, side="right") - 1
    chain = np.arange(n_slots)  # the chain root of every slot (itself for a root)
    chain[si] = di
    root_slot = np.ones(n_slots, bool)
    root_slot[si] = False
    roots = np.flatnonzero(root_slot & (sizes > 0))
    root_sizes = sizes[roots]
    offset = np.zeros(n_slots, np.int64)  # where a root slot's atoms start among roots' atoms
    offset[roots] = np.cumsum(root_sizes) - root_sizes
    offset = offset[chain]
    cr = cls[np.repeat(root_slot, sizes)].astype(np.intp)  # the roots' atoms' classes (indices)
    slot_of = np.repeat(roots, root_sizes)  # root slot of each of those atoms

    has_out = np.zeros(n_cls, bool)
    role = out_role.copy()  # a chain with an "out" slot: its root's classes are outputs
    np.logical_or.at(role, di, out_role[si])
    has_out[cr[role[slot_of]]] = True
    # a parameter is a producer when a layer outputs its rows, even through a chunk or transpose
    out_slot = out_role.copy()
    if table.producers:
        produced = np.concatenate([np.asarray(a, np.int64).ravel() for a in table.producers])
        has_out[cls[produced]] = True
        out_slot[np.searchsorted(slot_start, produced, side="right") - 1] = True

    # Classes that share a producer (an "out" slot, or a residual add joining two producers) form
    # one group. Consumers (a conv reading a concat, a BN after it) may span several groups and
    # are members of each with a partial index map, as in the paper.
    # Edges: the classes of each slot (a consumer's: only those without a producer) to its first.
    # Only chain roots add edges, with the chain's producers, so the graph shrinks by the chain
    # length (~5 slots).
    np.logical_or.at(out_slot, di, out_slot[si])
    keep = out_slot[slot_of] | ~has_out[cr]
    ks, kc = slot_of[keep], cr[keep]
    head = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]) if ks.size else np.zeros(0, np.int64)
    a = np.repeat(kc[head], np.diff(np.r_[head, ks.size]))
    del keep, ks, slot_of
    low = lowest_in_component(a, kc, n_cls)
    del a, kc
    tops = np.flatnonzero(low == np.arange(n_cls))
    n_grp = tops.size
    grp = np.empty(n_cls, np.int64)  # groups numbered by their lowest class, as scipy numbers them
    grp[tops] = np.arange(n_grp)
    grp = grp[low]

    # number groups in order of first appearance of their slots (stable, traversal order); most
    # slots lie in one group, so this is done per slot, per atom only for the others
    ga = grp[cr]
    nonempty = np.flatnonzero(sizes)
    lo = np.zeros(n_slots, np.int64)
    hi = np.zeros(n_slots, np.int64)
    if roots.size:
        lo[roots] = np.minimum.reduceat(ga, offset[roots])
        hi[roots] = np.maximum.reduceat(ga, offset[roots])
    lo, hi = lo[chain[nonempty]], hi[chain[nonempty]]
    whole = lo == hi
    first_seen = np.full(n_grp, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, lo[whole], nonempty[whole])
    split = nonempty[~whole].tolist()
    for si in split:
        o = int(offset[si])
        np.minimum.at(first_seen, ga[o:o + slots[si].size], si)
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
    l_atom = local[cr]  # index maps: a chain's slots share their root's (read-only) views
    l_atom.flags.writeable = False
    slot_groups = {}  # id(slot atoms) -> the slot's groups (numbered as below)
    for si, g, o in zip(nonempty[whole].tolist(), remap[lo[whole]].tolist(),
                        offset[nonempty[whole]].tolist()):
        s = slots[si]  # the common case: the whole slot lies in one group
        members[g].append(Member(s, l_atom[o:o + s.size]))
        slot_groups[id(s.atoms)] = (g,)
    for si in split:
        s = slots[si]
        o = int(offset[si])
        lm = l_atom[o:o + s.size]
        gs = remap[ga[o:o + s.size]]
        slot_groups[id(s.atoms)] = tuple(np.unique(gs).tolist())
        for g in slot_groups[id(s.atoms)]:
            members[g].append(Member(s, np.where(gs == g, lm, -1)))
    classes_of = np.split(order_c, np.cumsum(counts)[:-1])
    # Slices coupled to no layer output (the first conv's input channels, a LayerNorm on a fixed
    # stream) are not groups a user can prune: only groups with a producer are built.
    keep = np.zeros(n_grp, bool)
    keep[group_of_class[has_out]] = True
    new_id = np.full(n_grp + 1, -1, np.int64)
    new_id[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    kept = []
    # only groups holding a blocked (approximate) class have reasons to look up
    any_blocked = np.zeros(n_grp, bool)
    any_blocked[group_of_class[blocked]] = True
    any_approx = np.zeros(n_grp, bool)
    any_approx[group_of_class[approx]] = True
    for gid in np.flatnonzero(keep).tolist():
        classes = classes_of[gid]
        ms = sorted(members[gid], key=lambda m: (m.slot.role != "out", m.slot.index))
        prunable = ~blocked[classes] & has_out[classes]
        exact = ~approx[classes]
        br = _reasons(classes, blocked, block_first, table.blocked) if any_blocked[gid] else []
        ar = _reasons(classes, approx, approx_first, table.approx) if any_approx[gid] else []
        kept.append(Group(len(kept), ms, int(classes.size), prunable, exact, br[:20], ar[:20]))
    group_of_class = new_id[group_of_class]
    ids = new_id.tolist()  # (a Python list: indexing a numpy array per slot costs more)
    slot_groups = {k: [i for g in gs if (i := ids[g]) >= 0] for k, gs in slot_groups.items()}
    _assign_nodes(kept, trace.node_atoms, slot_groups, lambda arr: group_of_class[cls[arr]])
    return kept, cls, group_of_class


def _assign_nodes(groups: list[Group], node_atoms: dict, slot_groups: dict, groups_of) -> None:
    """Every node joins the groups of the atoms it touches. Labels pass through most ops as the
    same array object, most of them a slot's own (``slot_groups``: id -> its kept groups; the
    other arrays are added to it); the groups of any other array are computed once, by
    ``groups_of(array)`` (per array: a group map of every atom would be one more array the size
    of the model's channels, slow to allocate)."""
    if not node_atoms or not groups:
        return
    seen = slot_groups
    nodes_of = [g.nodes for g in groups]
    for node, arrays in node_atoms.items():
        for arr in arrays:
            gs = seen.get(id(arr))
            if gs is None:
                ga = groups_of(arr)
                lo, hi = (int(ga.min()), int(ga.max())) if ga.size else (-1, -1)
                gs = seen[id(arr)] = [g for g in ([lo] if lo == hi else np.unique(ga).tolist())
                                      if g >= 0]
            for g in gs:
                nodes_of[g].add(node)
