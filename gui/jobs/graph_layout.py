"""Layered left-to-right layout of a DAG (pure Python, no Qt: it runs on a worker thread).

Longest-path layering puts every node one column right of its furthest predecessor, then a few
barycentre sweeps order each column so edges cross less (Sugiyama without dummy nodes: good
enough for network graphs, which are mostly chains with short skips, and linear in size).
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

NODE_W, NODE_H = 150.0, 38.0
COL_GAP, ROW_GAP = 60.0, 18.0
BAND_GAP = 70.0  # vertical space between wrapped bands


@dataclass
class Layout:
    pos: dict  # node -> (x, y) of the node's top-left corner, scene units
    layers: list  # list of node lists, left to right
    width: float
    height: float


def _layers(g: nx.DiGraph) -> dict:
    try:
        order = list(nx.topological_sort(g))
    except nx.NetworkXUnfeasible:  # a cycle (should not happen for traces): break it by BFS order
        order = list(g.nodes)
    seen, layer = set(), {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in g.predecessors(n) if p in seen), default=0)
        seen.add(n)
    return layer


def layout(g: nx.DiGraph, sweeps: int = 4, aspect: float = 1.8, progress=None, should_stop=None) -> Layout:
    layer = _layers(g)
    n_layers = max(layer.values(), default=-1) + 1
    cols: list[list] = [[] for _ in range(n_layers)]
    for n in g.nodes:  # graph order is trace order: a sensible initial ordering
        cols[layer[n]].append(n)
    rank = {n: i for col in cols for i, n in enumerate(col)}
    for s in range(sweeps):
        if should_stop is not None and should_stop():
            from core.errors import Cancelled
            raise Cancelled("layout cancelled")
        down = s % 2 == 0
        seq = range(1, n_layers) if down else range(n_layers - 2, -1, -1)
        for li in seq:
            col = cols[li]
            if len(col) < 2:
                continue
            nbr = g.predecessors if down else g.successors

            def bary(n):
                r = [rank[m] for m in nbr(n)]
                return sum(r) / len(r) if r else rank[n]
            col.sort(key=bary)
            for i, n in enumerate(col):
                rank[n] = i
        if progress:
            progress("layout", s + 1, sweeps, "ordering columns")
    return place(cols, aspect)


def place(cols: list, aspect: float = 1.8) -> Layout:
    """Positions for ordered columns. Networks are long and thin, so the columns wrap into bands
    (like lines of text) to give the graph roughly the view's aspect ratio. Cheap: the GUI
    re-runs it with the real viewport shape."""
    n_layers = len(cols)
    tallest = max((len(c) for c in cols), default=1)
    col_w, band_h = NODE_W + COL_GAP, tallest * (NODE_H + ROW_GAP) + BAND_GAP
    per_band = max(n_layers, 1)
    for k in range(1, max(n_layers, 1) + 1):
        per = -(-n_layers // k)
        if per * col_w / (k * band_h) <= aspect:
            per_band = max(per, 1)
            break
    pos = {}
    for li, col in enumerate(cols):
        band, c = divmod(li, per_band)
        off = band * band_h + (tallest - len(col)) * (NODE_H + ROW_GAP) / 2  # centre each column
        for i, n in enumerate(col):
            pos[n] = (c * col_w, off + i * (NODE_H + ROW_GAP))
    n_bands = -(-n_layers // per_band) if n_layers else 1
    return Layout(pos, cols, min(per_band, max(n_layers, 1)) * col_w, n_bands * band_h - BAND_GAP)
