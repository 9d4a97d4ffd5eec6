"""Pruning for a latency budget: a greedy latency-saliency knapsack after HALP (Shen et al., NeurIPS
2022). Importance says what each channel is worth, the latency tables what it costs; within a group
channels leave in importance order (least important first), and across groups the step that gives
up the least importance per millisecond saved goes next, until the tables say the budget is met.
"""
from __future__ import annotations

import math

import numpy as np

from core.errors import PlanError
from core.plan.latency import LatencyTable
from core.plan.rounding import group_multiples, used_multiples


class OutOfReach(PlanError):
    """The tables say no plan removes that much latency; ``reached`` is the most one removes by
    them (a measurement may still find it enough: tables timed on a busy machine err both ways)."""

    def __init__(self, message: str, reached: float):
        super().__init__(message)
        self.reached = reached


class _Group:
    """One prunable group's state: its removal order, allowed counts and the timed weight dims
    it narrows (with, per dim, how many slot indices the first c channels of the order cover)."""

    def __init__(self, g, score, table: LatencyTable, multiples: list, cap: float, fixed: int | None):
        n = g.n_channels
        s = np.asarray(score, float)
        idx = np.nonzero(g.prunable)[0]
        self.order = idx[np.argsort(s[idx], kind="stable")]
        mean = float(np.mean(np.abs(s[idx]))) if idx.size else 1.0
        # each group's channels are worth 1 on average: groups are comparable, the order within
        # a group is the criterion's
        self.value = np.concatenate([[0.0], np.cumsum(np.abs(s[self.order]) / (mean or 1.0))])
        n_max = min(idx.size, int(math.floor(cap * n)), n - 1)
        if fixed is not None:
            n_max = min(n_max, fixed)
        for r in multiples:  # the first multiple (best first) that leaves something to remove
            r = max(1, r)
            first = n % r
            step = max(r, int(math.ceil(n / 64 / r)) * r)  # <= 64 steps per group keep it quick
            self.counts = [0] + [k for k in range(first or step, n_max + 1, step) if n - k >= r]
            if len(self.counts) > 1:
                break
        self.multiple = r
        if fixed is not None:  # an override removes its share, not a knapsack's choice
            self.counts = [0, self.counts[-1]] if len(self.counts) > 1 else [0]
        self.fixed = fixed is not None
        self.pos = 0
        self.dims = []  # (weight name, dim, cumulative slot hits along the order)
        for m in g.members:
            t = table.layers.get(m.slot.tensor_name)
            if t is None or m.slot.dim not in (t.out_dim, t.in_dim) or m.slot.role == "aux":
                continue
            im = np.asarray(m.index_map)
            hits = np.bincount(im[im >= 0], minlength=n)[self.order]
            self.dims.append((m.slot.tensor_name, m.slot.dim, np.concatenate([[0], np.cumsum(hits)])))

    @property
    def removed(self) -> int:
        return self.counts[self.pos]

    def hits(self, pos: int):
        k = self.counts[pos]
        return {(w, d): int(c[k]) for w, d, c in self.dims}


class _Widths:
    """Current widths of every timed weight dim, and the tabled time of the layers."""

    def __init__(self, table: LatencyTable):
        self.table = table
        self.cut = {}  # (weight, dim) -> slot indices removed

    def layer_ms(self, name, cut=None):
        t = self.table.layers[name]
        cut = cut or {}

        def w(dim, full):
            return max(1, full - self.cut.get((name, dim), 0) - cut.get((name, dim), 0))
        w_out = w(t.out_dim, t.size_out)
        return t.at(w_out if t.tied else w(t.in_dim, t.size_in), w_out)


def latency_plan(dg, scores: dict, settings, table: LatencyTable | None,
                 aim: float | None = None) -> tuple[dict, dict]:
    """``(removed channels per group id, facts for the plan's settings)`` for removing the share
    ``aim`` (default ``settings.target_latency``) of the model's latency by ``table``."""
    if table is None:
        raise PlanError("a latency target needs latency tables for the device (measure the model "
                        "on it, or load a table with --latency-table)")
    target = settings.target_latency if aim is None else aim
    ignore = set(settings.ignore)
    groups = {}
    for g in dg.prunable_groups:
        outs = {m.slot.module_name for m in g.members if m.slot.role == "out"}
        if outs & ignore:
            continue
        ov = [settings.overrides[m] for m in outs if m in settings.overrides]
        fixed = int(math.floor(min(ov) * int(g.prunable.sum()) + 1e-9)) if ov else None
        st = _Group(g, scores[g.id], table, group_multiples(g.n_channels, settings),
                    settings.max_group_ratio, fixed)
        if len(st.counts) > 1 and (st.dims or st.fixed):
            groups[g.id] = st
    widths = _Widths(table)
    layers_of = {gid: {w for w, _, _ in st.dims} for gid, st in groups.items()}
    now = {name: widths.layer_ms(name) for name in table.layers}
    full = sum(now.values()) or 1.0
    budget = (1.0 - target) * full
    total = full

    def apply(gid, pos):
        st = groups[gid]
        old, new = st.hits(st.pos), st.hits(pos)
        for key in new:
            widths.cut[key] = widths.cut.get(key, 0) + new[key] - old[key]
        st.pos = pos
        delta = 0.0
        for name in layers_of[gid]:
            t = widths.layer_ms(name)
            delta += now[name] - t
            now[name] = t
        return delta

    def price(gid):
        """Importance given up per ms saved by the group's next step (inf: no step left)."""
        st = groups[gid]
        if st.pos + 1 >= len(st.counts):
            return math.inf
        old, new = st.hits(st.pos), st.hits(st.pos + 1)
        extra = {k: new[k] - old[k] for k in new}
        saved = sum(now[n] - widths.layer_ms(n, extra) for n in layers_of[gid])
        value = st.value[st.counts[st.pos + 1]] - st.value[st.removed]
        return value / max(saved, 1e-9 * full)

    for gid, st in groups.items():  # overrides first: they are not the knapsack's to choose
        if st.fixed:
            total -= apply(gid, len(st.counts) - 1)
    free = [gid for gid, st in groups.items() if not st.fixed]
    neighbours = {gid: [h for h in free if layers_of[h] & layers_of[gid]] for gid in free}
    prices = {gid: price(gid) for gid in free}
    while total > budget and prices:
        gid = min(prices, key=prices.get)
        if prices[gid] == math.inf:
            break
        total -= apply(gid, groups[gid].pos + 1)
        for h in neighbours[gid]:
            prices[h] = price(h)
    removed = {gid: np.sort(st.order[:st.removed]) for gid, st in groups.items() if st.removed}
    reached = 1.0 - total / full
    if reached < target - 0.02:
        raise OutOfReach(f"the latency reduction target {target:.0%} cannot be reached: pruning "
                         f"every prunable group as far as allowed removes {reached:.1%} by the "
                         f"latency tables", reached)
    auto = ({"round_to_groups": used_multiples({gid: st.multiple for gid, st in groups.items()})}
            if settings.round_auto else {})
    return removed, {**auto, "estimated_latency_reduction": reached,
                     "tables_vs_measured": full / table.base_ms if table.base_ms else None,
                     "estimated_latency_ms": table.base_ms * total / full,
                     "latency_table": {"device": table.device, "threads": table.threads}}
