"""Which (and how many) indices each tensor slot keeps under a plan, in whole-array operations.

The planner estimates FLOPs and parameters of hundreds of candidate plans (the ratio bisection,
the rounding steps) and needs only the kept *count* of every (tensor, dim). The members' index
maps of a dependency graph are flattened once (per graph, cached) into two arrays: the group
channel each slot position carries and that position's place among all slot positions. A plan
then marks its removed channels, gathers them onto the positions and counts per slot; a position
shared by several groups (a concatenation's consumer) is dropped if any of them removes it.
"""
from __future__ import annotations

import weakref

import numpy as np

from core.errors import PlanError


def check_removed(grp, gid: int, chans) -> np.ndarray:
    """A group's removed channels as an array, refused if blocked, negative or past its end."""
    rm = np.asarray(chans, dtype=np.int64)
    if rm.min() < 0 or rm.max() >= len(grp.prunable):
        raise PlanError(f"group {gid} ({grp.root}): channel indices outside 0..{len(grp.prunable) - 1}")
    if not grp.prunable[rm].all():
        bad = [int(c) for c in rm if not grp.prunable[c]][:5]
        raise PlanError(f"group {gid} ({grp.root}): channels {bad} are blocked "
                        f"({'; '.join(grp.blocked_reasons[:2]) or 'no producing layer'})")
    return rm


class SlotLayout:
    """The flattened member index maps of one dependency graph."""

    def __init__(self, dg):
        self.offset, total = {}, 0  # group id -> its first channel among all groups' channels
        for g in dg.groups:
            self.offset[g.id] = total
            total += g.n_channels
        self.n_channels = total
        where: dict[tuple[str, int], int] = {}  # (tensor, dim) -> first position
        keys, sizes, chans, places = [], [], [], []
        start = 0
        for g in dg.groups:
            for m in g.members:
                im = np.asarray(m.index_map)
                if not im.size:
                    continue
                key = (m.slot.tensor_name, m.slot.dim)
                if key not in where:
                    where[key] = start
                    keys.append(key)
                    sizes.append(im.size)
                    start += im.size
                ok = (im >= 0) & (im < g.n_channels)
                chans.append(im[ok] + self.offset[g.id])
                places.append(np.flatnonzero(ok) + where[key])
        self.keys = keys
        self.sizes = np.asarray(sizes, np.int64)
        self.starts = np.cumsum(self.sizes) - self.sizes
        self.n_positions = start
        self.chan = np.concatenate(chans) if chans else np.zeros(0, np.int64)
        self.place = np.concatenate(places) if places else np.zeros(0, np.int64)

    def _dropped(self, dg, removed: dict) -> np.ndarray:
        """One flag per slot position: the plan removes the channel it carries."""
        gone = np.zeros(self.n_channels, bool)
        for gid, chans in removed.items():
            if len(chans):
                gone[check_removed(dg.groups[gid], gid, chans) + self.offset[gid]] = True
        dropped = np.zeros(self.n_positions, bool)
        dropped[self.place[gone[self.chan]]] = True
        return dropped

    def kept_counts(self, dg, removed: dict) -> dict[str, dict[int, int]]:
        """tensor name -> dim -> indices kept, for the slots the plan changes."""
        out: dict[str, dict[int, int]] = {}
        if not self.keys:
            return out
        per_slot = np.add.reduceat(self._dropped(dg, removed), self.starts, dtype=np.int64)
        for i in np.flatnonzero(per_slot):
            name, dim = self.keys[i]
            kept = int(self.sizes[i] - per_slot[i])
            if kept == 0:
                raise PlanError(_all_gone(name, dim))
            out.setdefault(name, {})[dim] = kept
        return out

    def kept_indices(self, dg, removed: dict) -> dict[str, dict[int, list[int]]]:
        """tensor name -> dim -> the indices kept, for the slots the plan changes."""
        out: dict[str, dict[int, list[int]]] = {}
        if not self.keys:
            return out
        dropped = self._dropped(dg, removed)
        for i in np.flatnonzero(np.add.reduceat(dropped, self.starts, dtype=np.int64)):
            name, dim = self.keys[i]
            kept = np.flatnonzero(~dropped[self.starts[i]:self.starts[i] + self.sizes[i]])
            if not kept.size:
                raise PlanError(_all_gone(name, dim))
            out.setdefault(name, {})[dim] = kept.tolist()
        return out


def _all_gone(name: str, dim: int) -> str:
    return f"the plan removes every channel of {name} (dim {dim}); at least one must stay"


_LAYOUTS: dict[int, tuple[weakref.ref, SlotLayout]] = {}


def layout_of(dg) -> SlotLayout:
    """The graph's layout, built on first use and dropped with the graph."""
    key = id(dg)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0]() is dg:
        return hit[1]
    layout = SlotLayout(dg)
    _LAYOUTS[key] = (weakref.ref(dg, lambda _, k=key: _LAYOUTS.pop(k, None)), layout)
    return layout
