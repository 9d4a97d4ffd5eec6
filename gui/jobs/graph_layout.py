"""Layered top-to-bottom layout of the visible part of a graph (pure Python, no Qt: it runs on a
worker thread).

Sugiyama's scheme: layers by longest path (trace order is topological, so edges against it are
back-edges, reversed for layering), a dummy node on every layer a long edge crosses so skips
(residuals, concats) run beside the chain as polylines instead of across it, barycentre sweeps
to cut crossings, then cross-axis positions by weighted isotonic regression per layer (each item
as close as possible to its neighbours' mean, in order, never overlapping). Linear-ish in the
number of visible items plus dummies; nothing wraps into rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.analysis.hierarchy import Hierarchy, aggregate_edges

NODE_W, NODE_H = 150.0, 38.0
BLOCK_W, BLOCK_H = 200.0, 50.0
X_GAP, Y_GAP = 26.0, 34.0
DUMMY_W = 14.0
FRAME_PAD, FRAME_HEAD = 10.0, 18.0
BROADCAST_MIN = 4  # a node with this many long out-edges feeds the chain from the side
MAX_DUMMIES = 200_000  # beyond this, the longest edges are drawn straight (no routing)


@dataclass
class Layout:
    pos: dict  # visible item (graph node or block id) -> (x, y) of its top-left corner
    layers: list  # visible items per layer, top to bottom
    width: float
    height: float
    size: dict = field(default_factory=dict)  # item -> (w, h)
    edges: list = field(default_factory=list)  # (a, b, count, [(x, y) points], back-edge?)
    frames: dict = field(default_factory=dict)  # expanded block -> (x, y, w, h)
    hierarchy: Hierarchy | None = None
    expanded: frozenset = frozenset()
    rep: dict = field(default_factory=dict)  # graph node -> the visible item standing for it
    fanout: dict = field(default_factory=dict)  # broadcast source -> how many items it feeds

    @property
    def items(self) -> list:
        return [it for row in self.layers for it in row]


def layout(g, sweeps: int = 4, aspect: float = 1.8, progress=None, should_stop=None,
           hierarchy: Hierarchy | None = None, expanded=None, previous: Layout | None = None) -> Layout:
    """Lay out the visible part of ``g``: blocks in ``expanded`` are open (default: the automatic
    choice of :meth:`Hierarchy.auto_expanded`; ``"all"``: everything). ``previous`` keeps the
    left-to-right order of what was visible before (stable expansion). ``aspect`` is accepted for
    callers of the old wrapped layout and ignored: the layout no longer wraps."""
    h = hierarchy or Hierarchy(g)
    if expanded is None:
        expanded = h.auto_expanded()
    elif expanded == "all":
        expanded = h.all_blocks()
    expanded = frozenset(expanded)
    items, rep = h.visible(expanded)
    edges = aggregate_edges(g, rep)
    size = {it: ((BLOCK_W, BLOCK_H) if isinstance(it, str) else (NODE_W, NODE_H)) for it in items}
    hint = _order_hint(items, h, previous)
    fanout: dict = {}
    pos, layers, routes, w, ht = sugiyama(items, edges, size, hint, sweeps, progress, should_stop,
                                          fanout=fanout)
    lay = Layout(pos, layers, w, ht, size, routes, {}, h, expanded, rep, fanout)
    lay.frames = frames(lay)
    return lay


def _order_hint(items, h: Hierarchy, previous: Layout | None) -> dict:
    """Initial cross-axis key per item: its x in the previous layout, or the x of the block it came
    out of (so a block's members appear where the block was)."""
    if previous is None:
        return {}
    out = {}
    for it in items:
        if it in previous.pos:
            out[it] = previous.pos[it][0]
            continue
        rep = previous.rep.get(it) if not isinstance(it, str) else None
        if rep is None and isinstance(it, str):
            for b in h.block_path(it)[::-1]:
                if b in previous.pos:
                    rep = b
                    break
            else:  # a block folded from visible nodes: where its first node was
                first = next((n for n in h.nodes_under(it) if n in previous.pos), None)
                rep = first
        if rep is not None and rep in previous.pos:
            out[it] = previous.pos[rep][0]
    return out


def _isotonic(desired: list, weight: list, sep: list) -> list:
    """Positions x_0 <= ... with x_{i+1} - x_i >= sep_i, minimising sum w_i (x_i - d_i)^2 (PAVA)."""
    off = [0.0]
    for s in sep:
        off.append(off[-1] + s)
    blocks = []  # [sum w*y, sum w, count]
    for d, w, o in zip(desired, weight, off):
        blocks.append([w * (d - o), w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            a, b = blocks.pop(), blocks.pop()
            blocks.append([a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    out = []
    for s, w, c in blocks:
        out.extend([s / w] * c)
    return [y + o for y, o in zip(out, off)]


def sugiyama(items: list, edges: dict, size: dict, hint: dict | None = None, sweeps: int = 4,
             progress=None, should_stop=None, fanout: dict | None = None):
    """``items`` in trace order, ``edges`` {(a, b): count}. Returns (pos, layers, routes, w, h);
    ``fanout`` (if given) receives {broadcast source: number of items it feeds}."""
    idx = {it: i for i, it in enumerate(items)}
    n = len(items)
    succ: list = [[] for _ in range(n)]
    pred: list = [[] for _ in range(n)]
    fwd = []  # (u, v, a, b, count, back)
    for (a, b), c in edges.items():
        u, v = idx[a], idx[b]
        back = u > v
        if back:
            u, v = v, u
        if u == v:
            continue
        succ[u].append(v)
        pred[v].append(u)
        fwd.append((u, v, a, b, c, back))
    layer = [0] * n
    for v in range(n):  # items are in topological order once back-edges are reversed
        if pred[v]:
            layer[v] = max(layer[u] for u in pred[v]) + 1
    for v in range(n - 1, -1, -1):  # sources (constants, masks) sit right above their first use
        if not pred[v] and succ[v]:
            layer[v] = max(layer[v], min(layer[w] for w in succ[v]) - 1)
        # so does a step fed by a broadcast source alone (rotary cos/sin: one unsqueeze per
        # decoder layer), not all of them in one wide row under the source
        elif len(pred[v]) == 1 and succ[v] and len(succ[pred[v][0]]) >= BROADCAST_MIN:
            layer[v] = max(layer[v], min(layer[w] for w in succ[v]) - 1)
    n_layers = max(layer, default=-1) + 1
    # dummies: virtual nodes n, n+1, ... on each layer a long edge crosses
    vl = list(layer)
    vw = [size[it][0] for it in items]
    weight = [1.0] * n
    vsucc = [list(s) for s in succ]
    vpred = [list(p) for p in pred]
    chains = []
    budget = MAX_DUMMIES
    # a broadcast source (rotary embeddings, a mask: it feeds every layer) sends its long edges
    # down one shared trunk of dummies, each branching off above its consumer: one line beside
    # the chain, not a wall of parallel ones
    n_long = [0] * n
    for u, v, *_r, back in fwd:
        n_long[u] += not back and layer[v] - layer[u] > 1
    trunks: dict = {}
    for e in sorted(fwd, key=lambda e: layer[e[1]] - layer[e[0]]):
        u, v = e[0], e[1]
        span = layer[v] - layer[u]
        chain = []
        if 1 < span <= budget + 1:
            vsucc[u].remove(v)
            vpred[v].remove(u)
            trunk = trunks.setdefault(u, []) if n_long[u] >= BROADCAST_MIN and not e[5] else []
            prev = trunk[-1] if trunk else u
            for k in range(layer[u] + 1 + len(trunk), layer[v]):
                budget -= 1
                d = len(vl)
                vl.append(k)
                vw.append(DUMMY_W)
                weight.append(2.0)  # long edges pull harder: they stay straight beside the chain
                vsucc.append([])
                vpred.append([prev])
                vsucc[prev].append(d)
                trunk.append(d)
                prev = d
            chain = trunk[:span - 1]
            prev = chain[-1]
            vsucc[prev].append(v)
            vpred[v].append(prev)
        chains.append((e, chain))
    if fanout is not None:
        for u in trunks:
            fanout[items[u]] = len(succ[u])
    total = len(vl)
    # placement ignores the last link of the long edges of a broadcast source (rotary embeddings,
    # a mask feeding every layer): they run beside the chain instead of pulling each consumer
    # sideways, which bent the chain into a staircase
    xpred, xsucc = vpred, vsucc
    long_out = [0] * n
    for (u, *_), chain in chains:
        long_out[u] += bool(chain)
    if max(long_out, default=0) >= BROADCAST_MIN:
        xpred, xsucc = [list(p) for p in vpred], [list(s) for s in vsucc]
        for (u, v, *_), chain in chains:
            if chain and long_out[u] >= BROADCAST_MIN:
                xpred[v].remove(chain[-1])
                xsucc[chain[-1]].remove(v)
    rows: list = [[] for _ in range(n_layers)]
    hint = hint or {}
    key = [0.0] * total
    for i, it in enumerate(items):
        key[i] = hint.get(it, float(i))
    for (u, _v, *_), chain in chains:
        for d in chain:
            key[d] = key[u] + 0.5
    for v in sorted(range(total), key=lambda v: key[v]):
        rows[vl[v]].append(v)
    rank = [0] * total
    for row in rows:
        for i, v in enumerate(row):
            rank[v] = i
    for s in range(sweeps):
        if should_stop is not None and should_stop():
            from core.errors import Cancelled
            raise Cancelled("layout cancelled")
        down = s % 2 == 0
        nbr = vpred if down else vsucc
        for li in (range(1, n_layers) if down else range(n_layers - 2, -1, -1)):
            row = rows[li]
            if len(row) < 2:
                continue
            bary = {v: (sum(rank[u] for u in nbr[v]) / len(nbr[v]) if nbr[v] else rank[v]) for v in row}
            row.sort(key=lambda v: (bary[v], rank[v]))
            for i, v in enumerate(row):
                rank[v] = i
        if progress:
            progress("layout", s + 1, sweeps + 1, "ordering layers")
    _keep_trunks_apart(rows, trunks, rank)
    x = _place_x(rows, vw, weight, xpred, xsucc)
    # main axis: one row per layer, as tall as its tallest item
    ys, y = [], 0.0
    for row in rows:
        ys.append(y)
        y += max((size[items[v]][1] for v in row if v < n), default=NODE_H) + Y_GAP
    minx = min(x[v] - vw[v] / 2 for v in range(total)) if total else 0.0
    pos = {}
    for v, it in enumerate(items):
        w, hh = size[it]
        pos[it] = (x[v] - minx - w / 2, ys[layer[v]])
    routes = []
    for (u, v, a, b, c, back), chain in chains:
        (ux, uy), (vx, vy) = pos[items[u]], pos[items[v]]
        pts = [(ux + size[items[u]][0] / 2, uy + size[items[u]][1])]
        pts += [(x[d] - minx, ys[vl[d]] + NODE_H / 2) for d in chain]
        if chain and u in trunks and not back:  # a branch leaves the trunk in the gap above v
            pts.append((pts[-1][0], vy - Y_GAP / 2))
        pts.append((vx + size[items[v]][0] / 2, vy))
        if back:
            pts.reverse()
        routes.append((a, b, c, pts, back))
    width = max((x[v] - minx + vw[v] / 2 for v in range(total)), default=0.0)
    layers = [[items[v] for v in row if v < n] for row in rows]
    if progress:
        progress("layout", sweeps + 1, sweeps + 1, "placing")
    return pos, layers, routes, width, max(y - Y_GAP, 0.0)


def _keep_trunks_apart(rows, trunks: dict, rank: list):
    """Trunks side by side keep one left-to-right order on every row: crossing-minimisation
    swapped them at each branch, braiding two trunks (rotary cos and sin) down the graph."""
    if len(trunks) < 2:
        return
    order = {u: k for k, u in enumerate(sorted(trunks, key=lambda u: rank[u]))}
    owner = {d: u for u, trunk in trunks.items() for d in trunk}
    for row in rows:
        slots = [i for i, v in enumerate(row) if v in owner]
        if len(slots) > 1:
            for i, d in zip(slots, sorted((row[i] for i in slots), key=lambda d: order[owner[d]])):
                row[i] = d


def _place_x(rows, vw, weight, vpred, vsucc, iterations: int = 6) -> list:
    total = len(vw)
    x = [0.0] * total
    for row in rows:  # start packed, centred on 0
        acc = 0.0
        for v in row:
            x[v] = acc + vw[v] / 2
            acc += vw[v] + X_GAP
        for v in row:
            x[v] -= acc / 2
    if total > 20_000:  # big graphs: fewer passes (each is a walk over every item)
        iterations = 3
    for it in range(iterations):
        down = it % 2 == 0
        seq = rows if down else rows[::-1]
        for row in seq:
            if len(row) == 1:  # a chain link: straight under (or over) its neighbours
                v = row[0]
                nb = (vpred[v] or vsucc[v]) if down else (vsucc[v] or vpred[v])
                if nb:
                    x[v] = sum(x[u] for u in nb) / len(nb)
                continue
            if not row:
                continue
            desired = []
            for v in row:
                nb = (vpred[v] or vsucc[v]) if down else (vsucc[v] or vpred[v])
                desired.append(sum(x[u] for u in nb) / len(nb) if nb else x[v])
            sep = [(vw[a] + vw[b]) / 2 + X_GAP for a, b in zip(row, row[1:])]
            for v, xv in zip(row, _isotonic(desired, [weight[v] for v in row], sep)):
                x[v] = xv
    return x


def frames(lay: Layout) -> dict:
    """The rectangle around each expanded block's visible members (nested blocks pad outwards)."""
    h = lay.hierarchy
    if h is None:
        return {}
    out = {}

    def rect(b):
        r = None
        blk = h.blocks[b]
        parts = [lay.pos[n] + lay.size[n] for n in blk.nodes if n in lay.pos]
        for c in blk.children:
            if c in lay.pos:
                parts.append(lay.pos[c] + lay.size[c])
            elif c in lay.expanded:
                cr = rect(c)
                if cr is not None:
                    parts.append(cr)
        for (px, py, pw, ph) in parts:
            r = (px, py, px + pw, py + ph) if r is None else (min(r[0], px), min(r[1], py),
                                                              max(r[2], px + pw), max(r[3], py + ph))
        if r is None:
            return None
        fr = (r[0] - FRAME_PAD, r[1] - FRAME_HEAD, r[2] - r[0] + 2 * FRAME_PAD,
              r[3] - r[1] + FRAME_HEAD + FRAME_PAD)
        if b:
            out[b] = fr
        return fr

    rect("")
    return out
