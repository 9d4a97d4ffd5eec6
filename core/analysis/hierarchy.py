"""The module hierarchy of a traced graph, and which part of it is visible (pure Python, no Qt).

The graph view folds by it and per-block latency (core.metrics.blocks) times its blocks, so both
name the same blocks.

The tracer records each node's module scope ("layer1.0.conv1"). Scopes form a tree of *blocks*;
a block is shown either expanded (its members drawn) or collapsed (one box standing for every
node under it). Scopes that are just one leaf module ("layer1.0.relu", called twice) are not
blocks: their nodes belong to the enclosing block, so a collapsed block never hides a lone layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ROOT = ""
MIN_BLOCK = 2  # a block with at most this many nodes shows them instead (conv + BN downsample)
MIN_LEAF_BLOCK = 3  # a scope without sub-scopes is a block only with this many nodes (e.g. attention)
AUTO_MAX_ITEMS = 48  # automatic opening: expand while at most this many items are visible
AUTO_MIN_BLOCKS = 4  # ... and while fewer than this many blocks are visible
DOMINANT = 0.5  # ... or while one folded block holds more than this share of all nodes
SMALL_GRAPH = 60  # graphs this small open fully expanded


@dataclass
class Block:
    id: str  # the scope path ("" for the model itself)
    parent: str | None
    children: list = field(default_factory=list)  # child block ids, in trace order
    nodes: list = field(default_factory=list)  # graph nodes directly inside, in trace order
    size: int = 0  # nodes under it, at any depth
    first: int = 0  # trace position of its first node (orders items)
    synthetic: bool = False  # not a module: the loose layers before / after the model's blocks

    @property
    def name(self) -> str:
        return self.id or "model"

    def short(self, parent_id: str | None = None) -> str:
        """The name relative to the parent block ("layer1.0" -> "0" under "layer1")."""
        p = self.parent if parent_id is None else parent_id
        if p and self.id.startswith(p + "."):
            return self.id[len(p) + 1:]
        return self.name


class Hierarchy:
    def __init__(self, g):
        self.order = {n: i for i, n in enumerate(g.nodes)}  # trace order
        scopes = {n: (d.get("scope") or "") for n, d in g.nodes(data=True)}
        counts: dict = {}
        for s in scopes.values():
            counts[s] = counts.get(s, 0) + 1
        prefixes = set()
        for s in counts:
            parts = s.split(".")
            for k in range(1, len(parts)):
                prefixes.add(".".join(parts[:k]))
        # scopes that are a block: have sub-scopes, or hold enough connected nodes of their own
        # (an attention module run as functional ops; not a ReLU module called three times)
        inner = {scopes[a] for a, b in g.edges() if scopes[a] == scopes[b]}
        is_block = {s for s in counts if s in prefixes or (counts[s] >= MIN_LEAF_BLOCK and s in inner)}
        is_block |= prefixes
        is_block.add(ROOT)
        self.blocks: dict[str, Block] = {}
        self.owner: dict = {}
        for n in g.nodes:
            s = scopes[n]
            while s not in is_block:
                s = s.rpartition(".")[0]
            self._block(s).nodes.append(n)
            self.owner[n] = s
        self._finish()
        for b in self._interleaved(g):
            if b in self.blocks:
                self._dissolve(b)
        self._stem_and_head()

    def _stem_and_head(self):
        """The model's own loose layers before its first block and after its last (ResNet's
        conv1/bn1/relu/maxpool, avgpool/fc) fold into a "stem" and a "head" block of their own."""
        root = self.blocks[ROOT]
        if not root.children:
            return
        first = min(self.blocks[c].first for c in root.children)
        last = max(self.order[n] for c in root.children for n in self.nodes_under(c))
        for name, run in (("stem", [n for n in root.nodes if self.order[n] < first]),
                          ("head", [n for n in root.nodes if self.order[n] > last])):
            if len(run) < MIN_LEAF_BLOCK or name in self.blocks:
                continue
            b = self.blocks[name] = Block(name, ROOT, [], run, len(run), self.order[run[0]])
            b.synthetic = True
            root.nodes = [n for n in root.nodes if n not in set(run)]
            root.children.append(name)
            for n in run:
                self.owner[n] = name
        root.children.sort(key=lambda c: self.blocks[c].first)

    def _block(self, s: str) -> Block:
        b = self.blocks.get(s)
        if b is None:
            parent = None if s == ROOT else s.rpartition(".")[0]
            b = self.blocks[s] = Block(s, parent)
            if parent is not None:
                self._block(parent)
        return b

    def _finish(self):
        # link children; dissolve blocks that would hide a single node or only wrap one child
        for b in self.blocks.values():
            b.children = []
        for s in sorted(self.blocks, key=len):
            b = self.blocks[s]
            if b.parent is not None:
                while b.parent not in self.blocks:
                    b.parent = b.parent.rpartition(".")[0]
                self.blocks[b.parent].children.append(s)
        for s in sorted(self.blocks, key=len, reverse=True):  # leaves first: sizes are known
            b = self.blocks[s]
            b.size = len(b.nodes) + sum(self.blocks[c].size for c in b.children)
            if s == ROOT:
                continue
            if b.size <= MIN_BLOCK or (not b.nodes and len(b.children) == 1):
                self._dissolve(s)
        for s in sorted(self.blocks, key=len, reverse=True):
            b = self.blocks[s]
            b.first = min([self.order[n] for n in b.nodes]
                          + [self.blocks[c].first for c in b.children] or [0])
        for b in self.blocks.values():
            b.children.sort(key=lambda c: self.blocks[c].first)

    def _interleaved(self, g, max_pairs: int = 64) -> list:
        """Blocks whose data leaves and comes back through a node outside them (a ModuleList
        that the parent's loop runs piece by piece, with the activation in between): folded,
        they would sit in a cycle with the parent's nodes, so they are not blocks. Innermost
        first."""
        bad = set()
        anc = {}

        def chain(n):
            a = anc.get(n)
            if a is None:
                a = anc[n] = frozenset(self.ancestors(n))
            return a
        for n in g.nodes:
            preds, succs = list(g.predecessors(n)), list(g.successors(n))
            if not preds or not succs or len(preds) * len(succs) > max_pairs:
                continue
            mine = chain(n)
            for p in preds:
                for q in succs:
                    bad |= (chain(p) & chain(q)) - mine
        bad.discard(ROOT)
        return sorted(bad, key=len, reverse=True)

    def _dissolve(self, s: str):
        b = self.blocks.pop(s)
        p = self.blocks[b.parent]
        p.children = [c for c in p.children if c != s] + b.children
        for c in b.children:
            self.blocks[c].parent = b.parent
        p.nodes.extend(b.nodes)
        p.nodes.sort(key=self.order.__getitem__)
        for n in b.nodes:
            self.owner[n] = b.parent

    # ------------------------------------------------------------------ queries
    def ancestors(self, node) -> list:
        """Blocks containing ``node``, innermost first (the root last)."""
        out, s = [], self.owner.get(node)
        while s is not None:
            out.append(s)
            s = self.blocks[s].parent
        return out

    def block_path(self, block: str) -> list:
        """The block and its ancestors, outermost first."""
        out, s = [], block
        while s is not None:
            out.append(s)
            s = self.blocks[s].parent
        return out[::-1]

    def nodes_under(self, block: str) -> list:
        b = self.blocks[block]
        out = list(b.nodes)
        for c in b.children:
            out.extend(self.nodes_under(c))
        return out

    def all_blocks(self) -> set:
        return set(self.blocks)

    def visible(self, expanded) -> tuple[list, dict]:
        """``(items, rep)``: the visible items (graph nodes and collapsed block ids) in trace order,
        and for every graph node the item that stands for it. The root is always expanded."""
        items, rep = [], {}
        stack = [ROOT]
        while stack:
            s = stack.pop()
            b = self.blocks[s]
            if s == ROOT or s in expanded:
                for n in b.nodes:
                    items.append(n)
                    rep[n] = n
                stack.extend(b.children)
            else:
                items.append(s)
                for n in self.nodes_under(s):
                    rep[n] = s
        items.sort(key=lambda it: self.blocks[it].first if isinstance(it, str) else self.order[it])
        return items, rep

    def auto_expanded(self) -> set:
        """The blocks to expand when a graph opens: everything for a small graph; else the
        largest block, again and again, while fewer than AUTO_MIN_BLOCKS blocks are visible or
        one holds most of the model, and at most AUTO_MAX_ITEMS items show (ResNet-50: layer1…4; a transformer: its N layers)."""
        if self.blocks[ROOT].size <= SMALL_GRAPH:
            return self.all_blocks() - {ROOT}
        expanded: set = set()
        closed = list(self.blocks[ROOT].children)
        n_items = len(self.blocks[ROOT].nodes) + len(closed)
        total = self.blocks[ROOT].size
        while closed:
            big = max(closed, key=lambda c: (self.blocks[c].size, -self.blocks[c].first))
            blk = self.blocks[big]
            if len(closed) >= AUTO_MIN_BLOCKS and blk.size <= DOMINANT * total:
                break
            grown = n_items - 1 + len(blk.nodes) + len(blk.children)
            if grown > AUTO_MAX_ITEMS:
                break
            expanded.add(big)
            closed = [c for c in closed if c != big] + blk.children
            n_items = grown
        return expanded


def aggregate_edges(g, rep: dict) -> dict:
    """One edge per pair of visible items that has at least one graph edge between what they
    stand for: ``{(a, b): count}``."""
    out: dict = {}
    for a, b in g.edges():
        ra, rb = rep[a], rep[b]
        if ra != rb:
            out[(ra, rb)] = out.get((ra, rb), 0) + 1
    return out
