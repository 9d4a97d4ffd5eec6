"""One coupled group in DepGraph's notation (pure Python, no Qt): every member layer split into
its input end f⁻ and output end f⁺, inter-layer dependencies f⁺ᵢ ⇔ f⁻ⱼ along the graph's
connections, intra-layer ones f⁻ ⇔ f⁺ where a layer keeps channel k as channel k (norms,
depthwise convs, element-wise ops), and the index map of each end (concat offsets, flatten
blocks, head slices)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph_groups import member_roles


@dataclass
class End:
    layer: int  # index into PaperGroup.layers
    side: str  # "in" (f⁻) or "out" (f⁺)
    slots: list = field(default_factory=list)  # the group's Members acting on this end


@dataclass
class PaperLayer:
    name: str
    op: str
    node: int | None
    role: str  # "out", "in" or "pass"
    ends: dict = field(default_factory=dict)  # "in"/"out" -> End, for the ends in the group

    @property
    def intra(self) -> bool:
        """f⁻ ⇔ f⁺: the layer shares its pruning scheme between input and output."""
        return "in" in self.ends and "out" in self.ends


@dataclass
class PaperGroup:
    gid: int
    n_channels: int
    layers: list  # PaperLayer in trace order
    inter: list  # (i, j, label): f⁺ of layer i ⇔ f⁻ of layer j, label the index map shown on it


def map_runs(index_map) -> list:
    """Runs (first index, last index, first channel or -1) of an index map: consecutive indices
    on consecutive channels, or all outside the group (-1), become one run."""
    m = np.asarray(index_map)
    runs, i, n = [], 0, len(m)
    while i < n:
        j = i + 1
        if m[i] < 0:
            while j < n and m[j] < 0:
                j += 1
        else:
            while j < n and m[j] == m[j - 1] + 1:
                j += 1
        runs.append((i, j - 1, int(m[i])))
        i = j
    return runs


def map_text(index_map, limit: int = 4) -> str:
    """"0-191 → ·, 192-223 → ch 0-31": where the group's channels sit along this end."""
    parts = []
    for a, b, c in map_runs(index_map):
        idx = f"{a}" if a == b else f"{a}-{b}"
        parts.append(f"{idx} → ·" if c < 0 else f"{idx} → ch {c}" + ("" if a == b else f"-{c + b - a}"))
    if len(parts) > limit:
        parts = parts[:limit] + [f"… {len(parts) - limit} more runs"]
    return ", ".join(parts)


def identity(index_map) -> bool:
    m = np.asarray(index_map)
    return bool(len(m) and (m == np.arange(len(m))).all())


def paper_group(dg, group, fmt=None) -> PaperGroup:
    """``fmt(index_map)`` turns an index map into edge text (default :func:`map_text`)."""
    fmt = fmt or map_text
    g = dg.graph
    roles = member_roles(dg, group)
    order = {n: i for i, n in enumerate(g.nodes)}  # trace order
    nodes = sorted((n for n in group.nodes if n in order), key=order.__getitem__)
    index = {n: i for i, n in enumerate(nodes)}
    layers = []
    for n in nodes:
        d = g.nodes[n]
        layers.append(PaperLayer(d.get("module") or d.get("label", ""), d.get("op", ""), n, roles[n]))
    by_module: dict = {}
    for i, lay in enumerate(layers):
        by_module.setdefault(g.nodes[lay.node].get("module") or None, []).append(i)
    orphans = []  # slots of parameters no traced node owns (shown in the list only)
    for m in group.members:
        side = {"out": ["out"], "in": ["in"]}.get(m.slot.role, ["in", "out"])
        where = by_module.get(m.slot.module_name or None)
        if not where:
            orphans.append(m)
            continue
        for i in where:
            for s in side:
                layers[i].ends.setdefault(s, End(i, s)).slots.append(m)
    for lay in layers:  # parameter-free ops (add, relu, cat) carry the channels straight through
        if lay.role == "pass" and not lay.ends:
            lay.ends = {"in": End(index[lay.node], "in"), "out": End(index[lay.node], "out")}
    inter = []
    for i, lay in enumerate(layers):
        if "out" not in lay.ends:
            continue
        for j in _reached(g, lay.node, index):
            if "in" in layers[j].ends:
                inter.append((i, j, _edge_label(layers[i], layers[j], fmt)))
    pg = PaperGroup(group.id, group.n_channels, layers, inter)
    pg.orphans = orphans
    return pg


def _reached(g, start, index, limit: int = 4) -> list:
    """Group nodes reached from ``start`` through nodes outside the group (at most ``limit`` hops)."""
    out, frontier, seen = [], [start], {start}
    for _ in range(limit):
        nxt = []
        for u in frontier:
            for v in g.successors(u):
                if v in seen:
                    continue
                seen.add(v)
                if v in index:
                    out.append(index[v])
                else:
                    nxt.append(v)
        frontier = nxt
    return out


def _edge_label(src: PaperLayer, dst: PaperLayer, fmt) -> str:
    """The index map that makes this edge more than channel k -> channel k, if any."""
    for end in (dst.ends.get("in"), src.ends.get("out")):
        for m in (end.slots if end else []):
            if not identity(m.index_map):
                return fmt(m.index_map)
    return ""


def end_text(lay: PaperLayer) -> str:
    if lay.intra:
        return "f⁻ ⇔ f⁺"
    return "f⁺" if "out" in lay.ends else "f⁻"
