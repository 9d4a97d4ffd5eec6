"""QGraphicsView of the dependency graph (dg.graph), collapsed by module scope and laid out top to
bottom by graph_layout (on a worker when large).

Visible items are layer/op nodes and collapsed blocks; expanded blocks get a frame. Expanding or
collapsing lays out the visible part again (keeping the left-to-right order of what stays) and
keeps the block under the user's eye where it was. All edges are one path item.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsRectItem, QGraphicsScene,
                               QGraphicsView)

from .. import theme as themes
from ..jobs import worker
from ..jobs.graph_layout import NODE_H, NODE_W, Layout, layout as run_layout
from . import graph_overlays
from .graph_items import (BlockItem, EdgesItem, FrameItem, NodeItem, PaintColours, arrow_heads,
                          drop_scene, mark_fanout, route_path)
from .graph_colours import Colouring
from .graph_nav import HIDE_ABOVE, Navigation
from ..jobs.graph_groups import GroupStyle

BUILD_CHUNK = 600  # node items added per event-loop turn when a layout is big
SYNC_MAX = 800  # lay out at most this many visible items on the GUI thread (tens of ms); else a worker


def node_colour(d: dict, theme=None):
    """A node's fill by kind and op family, from ``theme`` (default: the current one)."""
    return (theme or themes.current()).node_colour(d)


def removed_colour(frac: float, theme=None):
    """0 (nothing removed) -> low end of the theme's scale (green), 0.5 -> amber, 1 -> red."""
    return (theme or themes.current()).scale_colour(frac)


class GraphView(Navigation, Colouring, QGraphicsView):
    nodeSelected = Signal(int)  # -1 when the selection is cleared
    nodeHovered = Signal(int)
    blockSelected = Signal(str)  # a collapsed block picked
    layoutChanged = Signal()  # the visible part was laid out again and drawn
    built = Signal()  # every item of the current layout is in the scene

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.scene().selectionChanged.connect(self._on_selection)
        self.setRenderHints(QPainter.Antialiasing | QPainter.TextAntialiasing)
        self.setDragMode(QGraphicsView.ScrollHandDrag)  # drag the background to pan
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.SmartViewportUpdate)
        self.theme = themes.current()
        self.colours = PaintColours(self.theme)
        self.setBackgroundBrush(self.theme.qcolor("graph.background"))
        self.items_by_node: dict = {}
        self.blocks_by_id: dict = {}
        self.frames: dict = {}
        self._edge_items: list = []  # EdgesItems (a few thousand edges each), arrows as children
        self._overview = None
        self._node_layers: list = []  # (empty parent item, bounds of its ≤ BUILD_CHUNK nodes)
        self._hi_items: list = []  # one path of highlighted edges per group, in its colour
        self._hi_gids: list = []
        self._highlighted: set = set()
        self._primary = None
        self._matches: list = []
        self._match_i = -1
        self.graph = None
        self.hierarchy = None
        self.layout_: Layout | None = None
        self.groups = GroupStyle()
        self.colour_by_group = False
        self.overlay_kind: str | None = None  # None, "removed" or "sensitivity"
        self.overlay_values: dict = {}
        self._overlay_colour = None  # None: the theme's scale
        self._task = None
        self._generation = 0
        self._build_id = 0
        self._keep = None
        self.building = False
        self.minimap = graph_overlays.Minimap(self)
        self.crumbs = graph_overlays.Breadcrumb(self)
        self.legend = graph_overlays.Legend(self)

    def apply_theme(self, theme):
        """Recolour background, edges, nodes and the overlay (its values are kept)."""
        self.theme, self.colours = theme, PaintColours(theme)
        self.setBackgroundBrush(theme.qcolor("graph.background"))
        for it in self.items_by_node.values():
            it.base = theme.node_colour(it.data)
        for it in self.blocks_by_id.values():
            it.base = self.colours.block
        if self._overview is not None:
            self._style_items()
        self._recolour()
        self.legend.refresh()
        self.minimap.refresh()
        self.viewport().update()

    def _style_items(self):
        pen = QPen(self.theme.qcolor("graph.edge"), 1.2)
        pen.setCosmetic(True)
        self._edge_pen = pen
        for e in self._edge_items:
            e.setPen(pen)
            for arrows in e.childItems():
                arrows.setBrush(self.theme.qcolor("graph.edge"))
        for part in self._overview.childItems():
            part.setBrush(self.theme.qcolor("graph.overview"))

    # building -----------------------------------------------------------------------------
    def set_graph(self, graph, lay: Layout, wrap_to_view: bool = True):
        """Show ``graph`` as laid out in ``lay`` (its hierarchy and expanded blocks);
        ``wrap_to_view`` is accepted for older callers: the layout no longer wraps."""
        self.graph, self.hierarchy = graph, lay.hierarchy
        self.groups = GroupStyle()
        self.overlay_kind, self.overlay_values = None, {}
        self._highlighted, self._primary, self._hi_gids = set(), None, []
        self._matches, self._match_i = [], -1
        self._build(lay)

    def _build(self, lay: Layout):
        """Draw ``lay``: paths and frames at once; node items at once when few, else in chunks
        between events (the overview path stands in meanwhile), so the GUI never stalls."""
        self.layout_ = lay
        self._build_id += 1
        self._keep = self.selected_key()
        sc = self._fresh_scene()
        self.items_by_node, self.blocks_by_id, self.frames = {}, {}, {}
        h = lay.hierarchy
        for b, rect in lay.frames.items():
            fr = FrameItem(b, rect, self, h.blocks[b].short(self._visible_parent(b)))
            self.frames[b] = fr
            sc.addItem(fr)
        routes = [r[3] for r in lay.edges]
        self._edge_items = []
        pen = QPen(self.theme.qcolor("graph.edge"), 1.2)
        pen.setCosmetic(True)
        self._edge_pen = pen
        # the overview path: plain boxes for the nodes, far out and while a build runs; in
        # parts, one per chunk of nodes (_add_items), so a paint fills only the parts in view
        self._overview = QGraphicsRectItem()
        self._overview.setFlag(QGraphicsItem.ItemHasNoContents)
        self._overview.setZValue(-0.8)
        self._overview_all = QPainterPath()
        sc.addItem(self._overview)
        self._hi_items = []
        self._node_layers = []
        self._style_items()
        sc.setSceneRect(QRectF(-60, -60, lay.width + 120, lay.height + 120))
        entries = list(lay.pos.items())
        # a BSP index of 20k items costs a long first paint; a linear scan in C++ costs little
        sc.setItemIndexMethod(QGraphicsScene.NoIndex if len(entries) > HIDE_ABOVE
                              else QGraphicsScene.BspTreeIndex)
        steps = [(self._add_items, entries[i:i + BUILD_CHUNK]) for i in range(0, len(entries), BUILD_CHUNK)]
        steps += [(self._add_edges, routes[i:i + 2 * BUILD_CHUNK]) for i in range(0, len(routes), 2 * BUILD_CHUNK)]
        self.building = len(steps) > 2
        if not self.building:
            for fn, arg in steps:
                fn(arg)
            self._finish_build()
            return
        self._overview.setVisible(True)
        build_id = self._build_id
        QTimer.singleShot(0, self, lambda: self._run_steps(build_id, steps))

    def _fresh_scene(self) -> QGraphicsScene:
        """A new scene for a new layout; the old one goes in steps (drop_scene)."""
        old = self.scene()
        sc = QGraphicsScene(self)
        sc.selectionChanged.connect(self._on_selection)
        self.setScene(sc)
        drop_scene(old, [layer for layer, _b in self._node_layers])
        self._node_layers = []
        return sc

    def _run_steps(self, build_id, steps):
        if build_id != self._build_id:
            return  # a newer layout replaced this one
        fn, arg = steps.pop(0)
        fn(arg)
        if steps:
            QTimer.singleShot(0, self, lambda: self._run_steps(build_id, steps))
        else:
            self.building = False
            self._finish_build()

    def _add_edges(self, routes):
        edges = EdgesItem(route_path(routes), route_path(routes, straight=True))
        edges.setZValue(-1)
        edges.setPen(self._edge_pen)
        arrows = QGraphicsPathItem(arrow_heads(routes), edges)
        arrows.setBrush(self.theme.qcolor("graph.edge"))
        arrows.setPen(Qt.NoPen)
        self.scene().addItem(edges)
        self._edge_items.append(edges)

    def _add_items(self, entries):
        """One chunk of nodes under an empty, transparent parent item, and the collapsed blocks.
        The overview path stands in for the nodes until the build ends (a repaint between
        chunks would draw every node added so far); after it, only the layers near the view
        are opaque (_apply_lod): the scene skips a transparent layer's children in one test,
        so a paint or a zoom change touches a few hundred nodes, not all 20k."""
        sc, h = self.scene(), self.hierarchy
        layer = QGraphicsRectItem()
        layer.setFlag(QGraphicsItem.ItemHasNoContents)
        layer.setOpacity(0)
        sc.addItem(layer)
        bounds = QRectF()
        sc.blockSignals(True)
        for it, (x, y) in entries:
            if isinstance(it, str):
                item = BlockItem(it, self, h.blocks[it].short(self._visible_parent(it)))
                self.blocks_by_id[it] = item
            else:
                item = NodeItem(it, self.graph.nodes[it], self)
                self.items_by_node[it] = item
                item.setParentItem(layer)
                item.setPos(x, y)
                bounds = bounds.united(QRectF(x, y, NODE_W, NODE_H))
                continue
            item.setPos(x, y)
            sc.addItem(item)
        sc.blockSignals(False)
        for it, _xy in entries:
            if it in self.layout_.fanout:
                mark_fanout(self.blocks_by_id.get(it) or self.items_by_node.get(it), self.layout_, it)
        if bounds.isValid():
            self._node_layers.append((layer, bounds.adjusted(-3, -3, 3, 3)))
            part = QPainterPath()
            for it, (x, y) in entries:
                if not isinstance(it, str):
                    part.addRect(x, y, NODE_W, NODE_H)
            over = QGraphicsPathItem(part, self._overview)
            over.setPen(Qt.NoPen)
            over.setBrush(self.theme.qcolor("graph.overview"))
            self._overview_all.addPath(part)

    def _finish_build(self):
        sc = self.scene()
        self._apply_lod()
        self._update_blocks()
        self._recolour(fresh=True)
        self.highlight(self._highlighted, self._primary, gids=self._hi_gids, _keep_roles=True)
        keep = self._keep
        if keep is not None:
            it = self.items_by_node.get(keep) if not isinstance(keep, str) else self.blocks_by_id.get(keep)
            if it is not None:
                sc.blockSignals(True)
                it.setSelected(True)
                sc.blockSignals(False)
        self.crumbs.refresh()
        self.minimap.refresh()
        self.built.emit()

    def overview_path(self) -> QPainterPath:
        return self._overview_all if self._overview is not None else QPainterPath()

    def _visible_parent(self, block):
        p = self.hierarchy.blocks[block].parent
        return p if p else None

    # hierarchy ------------------------------------------------------------------------------
    @property
    def expanded(self) -> frozenset:
        return self.layout_.expanded if self.layout_ is not None else frozenset()

    def item_of(self, node):
        """The visible item (NodeItem or BlockItem) standing for graph ``node``."""
        if self.layout_ is None or node not in self.layout_.rep:
            return None
        r = self.layout_.rep[node]
        return self.blocks_by_id.get(r) if isinstance(r, str) else self.items_by_node.get(r)

    def expand(self, block):
        if self.hierarchy and block in self.hierarchy.blocks:
            self.set_expanded(self.expanded | set(self.hierarchy.block_path(block)) - {""}, anchor=block)

    def collapse(self, block):
        if self.hierarchy and block:
            inner = {b for b in self.expanded if b == block or b.startswith(block + ".")}
            self.set_expanded(self.expanded - inner, anchor=block)

    def expand_all(self):
        if self.hierarchy:
            self.set_expanded(self.hierarchy.all_blocks())

    def collapse_all(self):
        self.set_expanded(set())

    def auto_expand(self):
        if self.hierarchy:
            self.set_expanded(self.hierarchy.auto_expanded())

    def reveal(self, node):
        """Expand the blocks that hide ``node`` (laid out at once)."""
        if self.hierarchy is None or node in self.items_by_node or node not in self.hierarchy.owner:
            return
        self.set_expanded(self.expanded | set(self.hierarchy.ancestors(node)) - {""}, sync=True)

    def set_expanded(self, expanded, anchor=None, sync: bool | None = None):
        """Lay out with ``expanded`` open: on the GUI thread when small (or ``sync``), else on a
        worker (the old picture stays until the new one is ready)."""
        if self.graph is None:
            return
        expanded = frozenset(expanded)
        self._generation += 1
        gen, prev = self._generation, self.layout_
        kw = dict(hierarchy=self.hierarchy, expanded=expanded, previous=prev)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        n_visible = len(self.hierarchy.visible(expanded)[0])
        if sync or n_visible <= SYNC_MAX:
            self._apply_layout(run_layout(self.graph, **kw), gen, anchor)
            return
        self._task = task = worker.Task("layout", run_layout, self.graph, **kw)
        task.finished.connect(lambda lay: self._apply_layout(lay, gen, anchor))
        worker.start(task)

    def _apply_layout(self, lay, gen, anchor=None):
        if gen != self._generation:
            return  # a newer request superseded this one
        self._task = None
        old = self._anchor_point(anchor)
        self._build(lay)
        if old is not None:
            scene_pt, vp = old
            rect = lay.frames.get(anchor) or (lay.pos.get(anchor, (0, 0)) + (0, 0))
            new_pt = QPointF(rect[0] + rect[2] / 2, rect[1] + 30)
            delta = self.mapToScene(self.viewport().rect().center()) - self.mapToScene(vp)
            self.centerOn(new_pt + delta)
        self.layoutChanged.emit()

    def _anchor_point(self, anchor):
        it = self.blocks_by_id.get(anchor) if anchor is not None else None
        if it is None and anchor in self.frames:
            it = self.frames[anchor]
        if it is None:
            return None
        r = it.sceneBoundingRect()
        top = QPointF(r.center().x(), r.top() + 30)
        return top, self.mapFromScene(top)

    # highlighting ---------------------------------------------------------------------------
    def highlight(self, nodes, primary=None, roles: dict | None = None, gids=None, _keep_roles=False):
        """Outline ``nodes`` (a coupled group) and ``primary`` (the node the user picked); hidden
        nodes outline the block that holds them. ``roles`` ({node: "out"|"in"|"pass"}) styles
        producers, consumers and pass-through members apart; ``gids`` (the groups shown) draws
        each group's edges in its own colour, so input-side and output-side groups differ."""
        for it in list(self.items_by_node.values()) + list(self.blocks_by_id.values()):
            if it.highlight:
                it.highlight, it.role = 0, None
                it.update()
        self._highlighted = set(nodes) | ({primary} if primary is not None else set())
        self._primary = primary
        if not _keep_roles:
            self._roles = roles if roles is not None else self.groups.roles_for(self._highlighted)
        roles = getattr(self, "_roles", {}) or {}
        for n in self._highlighted:
            it = self.item_of(n)
            if it is None:
                continue
            if n == primary and it is self.items_by_node.get(n):
                it.highlight = 2
            elif it.highlight != 2:
                it.highlight = 1
                it.role = it.role or roles.get(n)
            it.update()
        self._hi_gids = list(gids or [])
        self._draw_group_edges()
        if not self.building:
            self._apply_lod()

    def _draw_group_edges(self):
        for it in self._hi_items:
            self.scene().removeItem(it)
        self._hi_items = []
        if self.layout_ is None or not self._highlighted:
            return
        rep = self.layout_.rep
        sets = [({rep.get(n) for n in self.groups.dg.groups[g].nodes}, self.group_colour(g))
                for g in self._hi_gids[:8] if self.groups.dg is not None]
        if not sets:
            sets = [({rep.get(n) for n in self._highlighted}, self.theme.qcolor("graph.group"))]
        for k, (vis, colour) in enumerate(sets):
            item = QGraphicsPathItem(route_path([r[3] for r in self.layout_.edges
                                                 if r[0] in vis and r[1] in vis]))
            pen = QPen(colour, 2.5 + 1.5 * (len(sets) - 1 - k))  # the first group drawn widest, under
            pen.setCosmetic(True)
            item.setPen(pen)
            item.setZValue(-0.5 + 0.01 * k)
            self.scene().addItem(item)
            self._hi_items.append(item)

    def highlighted(self) -> set:
        return {n for n, it in self.items_by_node.items() if it.highlight}
